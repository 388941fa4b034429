/* queue_admin: what the operator asks of a running relay, through
 * QueueDirectory and a signal (`krelay queue ...`, queue_cli.c): a queue
 * run (flush, SIGUSR1) takes in released and parked messages and fires
 * every retry timer; hold and delete (SIGUSR2) are carried out between
 * attempts, never under one.  DeliveryMode=queueonly parks messages here
 * until a queue run. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "queue_int.h"

/* QueueDirectory/SUB/NAME, for the rare operator paths below (plain calls). */
static void sub_path(struct queue *q, char *buf, size_t len, const char *sub, const char *name)
{
	snprintf(buf, len, "%s/%s/%s", queue_cfg(q)->queue_directory, sub, name);
}

/* m's jobs still waiting at destinations (for a connection, a lookup, or
 * shaping's leave, which may be long) end now, their recipients pending,
 * so that the attempt ends and the operator's request is carried out
 * without waiting for them; jobs on a connection finish first. */
static void unqueue(struct queue *q, struct qmsg *m, enum qmsg_admin what)
{
	struct qjob *out = NULL, *j;

	for (struct qdest *d = q->dests; d != NULL; d = d->next) {
		struct qjob *keep = NULL, **tail = &keep;

		while ((j = qdest_pop(d)) != NULL) {
			if (j->m == m) {
				j->next = out;
				out = j;
			} else {
				*tail = j;
				tail = &j->next;
			}
		}
		for (j = keep; j != NULL; j = keep) {
			keep = j->next;
			qdest_push(d, j);
		}
	}
	for (; out != NULL; out = j) {
		j = out->next;
		qjob_fail(out, 0,
		          what == ADMIN_HOLD
		              ? "not sent: held by krelay queue hold while it waited"
		              : "not sent: deleted by krelay queue delete while it waited");
	}
}

/* Moves queue/ID (and its state file, first) to hold/, or deletes it (the
 * message first, then its state), in the order spool_recover relies on. */
static void admin_files(struct queue *q, const char *id, enum qmsg_admin what)
{
	char a[4096], b[4096], env[SPOOL_ID_LEN + 8];
	int dfd;

	snprintf(env, sizeof(env), "%s.env", id);
	if (what == ADMIN_DELETE) {
		sub_path(q, a, sizeof(a), "queue", id);
		if (unlink(a) == 0)
			fsync(q->ctx.spool->queue_dfd);
		sub_path(q, a, sizeof(a), "queue", env);
		unlink(a);
		log_info("%s: deleted (krelay queue delete)", id);
		return;
	}
	snprintf(a, sizeof(a), "%s/hold", queue_cfg(q)->queue_directory);
	mkdir(a, 0700);
	sub_path(q, a, sizeof(a), "queue", env);
	sub_path(q, b, sizeof(b), "hold", env);
	rename(a, b);
	sub_path(q, a, sizeof(a), "queue", id);
	sub_path(q, b, sizeof(b), "hold", id);
	if (rename(a, b) < 0) {
		log_warnx("queue: %s: hold: %s", id, strerror(errno));
		return;
	}
	snprintf(a, sizeof(a), "%s/hold", queue_cfg(q)->queue_directory);
	if ((dfd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	fsync(q->ctx.spool->queue_dfd);
	log_info("%s: held (krelay queue hold)", id);
}

static void admin_done(struct queue *q, const char *id, enum qmsg_admin what)
{
	char path[4096], name[SPOOL_ID_LEN + 8];

	snprintf(name, sizeof(name), "%s.%s", what == ADMIN_HOLD ? "hold" : "delete", id);
	sub_path(q, path, sizeof(path), "request", name);
	unlink(path);
}

void queue_admin_deleted(struct qmsg *m)
{
	log_info("%s: deleted (krelay queue delete)", m->env.id);
	admin_done(m->q, m->env.id, ADMIN_DELETE);
}

void queue_admin_apply(struct qmsg *m)
{
	struct queue *q = m->q;
	enum qmsg_admin what = m->admin;
	char id[SPOOL_ID_LEN + 1];

	memcpy(id, m->env.id, sizeof(id));
	qmsg_close_fd(m);
	qmsg_free(m);
	admin_files(q, id, what);
	admin_done(q, id, what);
}

/* request/take.ID: a message the Sendmail queue runner (sm_queue.c) or
 * `krelay queue import-sendmail` put into queue/ while the relay ran.  Its
 * ID is theirs (never one a session makes, see spool_new_id), so unlike a
 * stranger in queue/ it cannot be a session's message not yet handed
 * over; one this worker already holds (taken in at start) is not taken
 * twice. */
static void take_request(struct queue *q, const char *id)
{
	char path[4096], name[SPOOL_ID_LEN + 8];
	bool known = false;

	if (!spool_id_valid(id) || spool_id_owner(id, q->ctx.srv->workers) != q->ctx.worker_index)
		return;
	for (struct qmsg *m = q->msgs; m != NULL && !known; m = m->next)
		known = strcmp(m->env.id, id) == 0;
	for (size_t i = 0; i < q->nparked && !known; i++)
		known = strcmp(q->parked[i], id) == 0;
	if (!known && faccessat(q->ctx.spool->queue_dfd, id, F_OK, 0) == 0) {
		if (queue_cfg(q)->queue_only)
			queue_park(q, id); /* DeliveryMode=queueonly: at the next queue run */
		else
			queue_recover(q, id);
	}
	snprintf(name, sizeof(name), "take.%s", id);
	sub_path(q, path, sizeof(path), "request", name);
	unlink(path);
}

/* `krelay queue hold|delete ID` while the relay runs: request/hold.ID or
 * request/delete.ID.  A message this worker holds is held or deleted by
 * the queue itself once no attempt of it is under way (moving its files
 * from outside while a delivery goes on would leave the state it writes
 * behind, and send its recipients again on release); one it does not hold
 * is moved or deleted at once. */
void queue_requests(struct queue *q)
{
	char **names = NULL;
	size_t n = 0;
	char path[4096];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/request", queue_cfg(q)->queue_directory);
	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		void *p = realloc(names, (n + 1) * sizeof(*names));
		if (p == NULL)
			break;
		names = p;
		if ((names[n] = strdup(de->d_name)) != NULL)
			n++;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(names[i], "take.", 5) == 0) {
			take_request(q, names[i] + 5);
			free(names[i]);
			continue;
		}
		const char *dot = strchr(names[i], '.');
		enum qmsg_admin what = strncmp(names[i], "hold.", 5) == 0     ? ADMIN_HOLD
		                       : strncmp(names[i], "delete.", 7) == 0 ? ADMIN_DELETE
		                                                              : ADMIN_NONE;
		struct qmsg *m = q->msgs;

		if (what == ADMIN_NONE || dot == NULL || !spool_id_valid(dot + 1) ||
		    spool_id_owner(dot + 1, q->ctx.srv->workers) != q->ctx.worker_index) {
			free(names[i]);
			continue;
		}
		while (m != NULL && strcmp(m->env.id, dot + 1) != 0)
			m = m->next;
		if (m == NULL) {
			admin_files(q, dot + 1, what); /* not held here: at once */
			admin_done(q, dot + 1, what);
		} else if (m->interactive == QI_NONE && m->admin == ADMIN_NONE) {
			m->admin = what;
			if (m->phase == QMSG_RETRY_WAIT && !ring_op_busy(&m->op_timer_rm))
				ring_timeout_remove(q->ctx.ring, &m->op_timer_rm, &m->op_timer);
			if (m->phase == QMSG_ACTIVE)
				unqueue(q, m, what);
		}
		free(names[i]);
	}
	free(names);
}

void queue_park(struct queue *q, const char *id)
{
	if (q->nparked == q->parked_cap) {
		size_t cap = q->parked_cap ? 2 * q->parked_cap : 64;
		void *p = realloc(q->parked, cap * sizeof(*q->parked));
		if (p == NULL)
			fatalx("out of memory");
		q->parked = p;
		q->parked_cap = cap;
	}
	memcpy(q->parked[q->nparked++], id, SPOOL_ID_LEN + 1);
}

/* SIGUSR1 (`krelay queue flush`, `release`): every retry timer fires now,
 * and messages `krelay queue release` put back are taken in.  Only those:
 * a queue/ID this worker does not hold may be a message a session has just
 * renamed there and not yet handed over (taking it in too would deliver it
 * twice, and read its file after the first copy gave it to a new message),
 * so the queue never scans queue/ for strangers; release/ID says which. */
void queue_flush(struct queue *q)
{
	const char *dir;
	char **ids, path[4096];
	size_t n;

	queue_follow_reload(q);
	queue_requests(q);
	dir = queue_cfg(q)->queue_directory;
	for (struct qmsg *m = q->msgs; m != NULL; m = m->next)
		if (m->phase == QMSG_RETRY_WAIT && !ring_op_busy(&m->op_timer_rm))
			ring_timeout_remove(q->ctx.ring, &m->op_timer_rm, &m->op_timer);
	for (size_t i = 0; i < q->nparked; i++)
		queue_recover(q, q->parked[i]);
	q->nparked = 0;
	if (spool_list_in(dir, "release", &ids, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		bool known = spool_id_owner(ids[i], q->ctx.srv->workers) != q->ctx.worker_index;
		for (struct qmsg *m = q->msgs; m != NULL && !known; m = m->next)
			known = strcmp(m->env.id, ids[i]) == 0;
		if (!known && faccessat(q->ctx.spool->queue_dfd, ids[i], F_OK, 0) == 0)
			queue_recover(q, ids[i]);
		if (spool_id_owner(ids[i], q->ctx.srv->workers) == q->ctx.worker_index) {
			snprintf(path, sizeof(path), "%s/release/%s", dir, ids[i]);
			unlink(path);
		}
		free(ids[i]);
	}
	free(ids);
}
