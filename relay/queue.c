/* queue: the queue object and a message's life (see queue.h, queue_int.h).
 *
 * An attempt: open the file (qmsg_start), route each pending recipient to
 * a destination and put one job per destination in its FIFO (qmsg_route,
 * qmsg_assign); each job's outcome comes back through qjob_finished, is
 * made durable (ID.env, or the removal when every recipient is done) and
 * only then logged; when no job is out, qmsg_attempt_over decides: bounce
 * the failed, remove the finished, expire the old, or wait and retry. */
#include "queue_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "safe.h"

static char *xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (p == NULL)
		fatalx("out of memory");
	return p;
}

static void env_copy(struct spool_env *dst, const struct spool_env *src)
{
	*dst = *src;
	dst->sender = xstrdup(src->sender);
	dst->client = xstrdup(src->client);
	dst->helo = xstrdup(src->helo);
	dst->tls = xstrdup(src->tls);
	dst->client_cert = xstrdup(src->client_cert);
	dst->last_error = src->last_error ? xstrdup(src->last_error) : NULL;
	dst->rcpts = calloc(src->rcpt_count, sizeof(*dst->rcpts));
	if (dst->rcpts == NULL)
		fatalx("out of memory");
	for (size_t i = 0; i < src->rcpt_count; i++) {
		dst->rcpts[i].addr = xstrdup(src->rcpts[i].addr);
		dst->rcpts[i].state = src->rcpts[i].state;
	}
}

const struct config *queue_cfg(const struct queue *q)
{
	return &q->rt->cfg;
}

/* ---- a message's phase ---------------------------------------------------- */

static const char *const qmsg_phase_name[QMSG_PHASES] = {
    [QMSG_NEW] = "new",
    [QMSG_OPENING] = "opening",
    [QMSG_ACTIVE] = "active",
    [QMSG_BOUNCING] = "bouncing",
    [QMSG_RETRY_SAVE] = "retry-save",
    [QMSG_RETRY_WAIT] = "retry-wait",
    [QMSG_REMOVING] = "removing",
    [QMSG_STOPPED] = "stopped",
};

/* What may follow what; anything else is a bug.  REMOVING and STOPPED end
 * (the message is freed after the one, with the queue after the other);
 * an operator's hold or delete, or a failed open, frees it between. */
static const unsigned qmsg_may_enter[QMSG_PHASES] = {
    [QMSG_NEW] = TO(QMSG_OPENING) | TO(QMSG_RETRY_WAIT),
    [QMSG_OPENING] = TO(QMSG_ACTIVE) | TO(QMSG_RETRY_WAIT) | TO(QMSG_STOPPED),
    [QMSG_ACTIVE] = TO(QMSG_BOUNCING) | TO(QMSG_RETRY_SAVE) | TO(QMSG_REMOVING) | TO(QMSG_STOPPED),
    [QMSG_BOUNCING] = TO(QMSG_ACTIVE),
    [QMSG_RETRY_SAVE] = TO(QMSG_RETRY_WAIT),
    [QMSG_RETRY_WAIT] = TO(QMSG_OPENING) | TO(QMSG_STOPPED),
    [QMSG_REMOVING] = 0,
    [QMSG_STOPPED] = 0,
};

static const struct state_table qmsg_states = {"message", qmsg_phase_name, qmsg_may_enter,
                                               QMSG_PHASES};

void qmsg_enter(struct qmsg *m, enum qmsg_phase to)
{
	m->phase = state_enter(&qmsg_states, m->phase, to, "%s", m->env.id);
}

bool qmsg_recording(const struct qmsg *m)
{
	return m->st.busy || m->migrating || m->phase == QMSG_REMOVING;
}

/* ---- making, starting, freeing -------------------------------------------- */

static void msg_open_cb(struct ring_op *op, int res, unsigned flags);
static void migrate_written(struct qmsg *m, int res);
static void msg_timer_cb(struct ring_op *op, int res, unsigned flags);
static void state_written(void *owner, int res);
static void msg_removed(void *owner, int res);
static void migrate_read_cb(struct ring_op *op, int res, unsigned flags);

static void timer_rm_cb(struct ring_op *op, int res, unsigned flags)
{
	/* the timer itself completes with -ECANCELED and starts the attempt */
}

static struct qmsg *msg_new(struct queue *q)
{
	struct qmsg *m = calloc(1, sizeof(*m));

	if (m == NULL)
		fatalx("out of memory");
	m->q = q;
	m->fd = -1;
	m->file_size = SPOOL_SIZE_UNKNOWN;
	ring_op_init(&m->op_open, RING_OPEN, msg_open_cb, m);
	ring_op_init(&m->op_timer, RING_TIMEOUT, msg_timer_cb, m);
	ring_op_init(&m->op_timer_rm, RING_TIMEOUT_REMOVE, timer_rm_cb, m);
	ring_op_init(&m->op_mread, RING_READ, migrate_read_cb, m);
	spool_state_init(&m->st, q->ctx.spool, state_written, m);
	spool_remover_init(&m->rm, q->ctx.spool, msg_removed, m);
	m->next = q->msgs;
	if (q->msgs)
		q->msgs->prev = m;
	q->msgs = m;
	return m;
}

void qmsg_free(struct qmsg *m)
{
	struct queue *q = m->q;

	if (m->prev)
		m->prev->next = m->next;
	else
		q->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	for (size_t i = 0; m->reply && i < m->env.rcpt_count; i++)
		free(m->reply[i]);
	free(m->reply);
	free(m->dsn);
	free(m->mbuf);
	spool_state_free(&m->st);
	spool_env_free(&m->env);
	free(m);
}

/* Waits a few seconds before opening (spread by its ID's last digit). */
static void open_later(struct qmsg *m)
{
	m->ts.tv_sec = 1 + (unsigned char)m->env.id[SPOOL_ID_LEN - 1] % 4;
	m->ts.tv_nsec = 0;
	if (m->phase != QMSG_RETRY_WAIT)
		qmsg_enter(m, QMSG_RETRY_WAIT);
	ring_timeout(m->q->ctx.ring, &m->op_timer, &m->ts);
}

void qmsg_start(struct qmsg *m)
{
	if (m->fd < 0 && m->q->fds >= m->q->fds_max) {
		/* Each message under way holds its file open: a queue bigger
		 * than the descriptors allow (thousands taken in at start)
		 * goes in turns rather than failing its opens. */
		open_later(m);
		return;
	}
	m->reply = calloc(m->env.rcpt_count, sizeof(*m->reply));
	if (m->dsn == NULL)
		m->dsn = calloc(m->env.rcpt_count, sizeof(*m->dsn));
	if (m->reply == NULL || m->dsn == NULL)
		fatalx("out of memory");
	qmsg_enter(m, QMSG_OPENING);
	if (m->fd >= 0) {
		/* still open from its reception: on to msg_open_cb next turn */
		m->op_open.kind = RING_NOP;
		ring_nop(m->q->ctx.ring, &m->op_open);
		return;
	}
	/* open the spool file once per attempt, through the ring (read-write:
	 * once delivered, the file may be reused for a new message) */
	m->op_open.kind = RING_OPEN;
	m->file_size = SPOOL_SIZE_UNKNOWN;
	/* counted from now, not from its completion: thousands started in
	 * one turn (a queue taken in at start) would otherwise all be
	 * opened before the first one counts */
	m->q->fds++;
	ring_openat(m->q->ctx.ring, &m->op_open, m->q->ctx.spool->queue_dfd, m->env.id,
	            O_RDWR | O_CLOEXEC, 0);
}

struct qmsg *qmsg_add(struct queue *q, const struct spool_env *env, int fd, uint64_t file_size)
{
	struct qmsg *m = msg_new(q);

	env_copy(&m->env, env);
	m->fd = fd;
	m->file_size = fd >= 0 ? file_size : SPOOL_SIZE_UNKNOWN;
	if (fd >= 0)
		q->fds++;
	return m;
}

struct qmsg *qmsg_add_loc(struct queue *q, const struct spool_env *env, const struct spool_loc *loc)
{
	struct qmsg *m = qmsg_add(q, env, loc->fd, loc->file_size);

	m->body_off = loc->body_off;
	if (loc->seg != NULL) {
		q->fds--; /* the segment's, not one of its own */
		m->in_seg = true;
		m->fd_seg = m->seg_app.seg = loc->seg;
	}
	return m;
}

void queue_add(struct queue *q, const struct spool_env *env, const struct spool_loc *loc)
{
	qmsg_start(qmsg_add_loc(q, env, loc));
}

int queue_recover(struct queue *q, const char *id)
{
	char err[256];
	struct qmsg *m = msg_new(q);

	if (spool_state_load(q->ctx.spool->queue_dfd, id, &m->env, err, sizeof(err)) < 0) {
		log_warnx("queue: %s: %s: left alone", id, err);
		qmsg_free(m);
		return -1;
	}
	m->attempts = m->env.attempts;
	m->has_state = true; /* it may have one: removed with the message */
	qmsg_start(m);
	return 0;
}

static void schedule(struct qmsg *m);

static void msg_open_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qmsg *m = op->owner;

	if (op->kind == RING_NOP)
		res = m->fd; /* the file was open already */
	else
		m->fd = res >= 0 ? res : -1;
	if (op->kind != RING_NOP && res < 0)
		m->q->fds--; /* counted when it was asked for */
	if (m->q->stopping) {
		qmsg_close_fd(m);
		/* stays in the spool (an interactive one is put there); freed
		 * with the queue */
		qmsg_enter(m, QMSG_STOPPED);
		if (m->interactive == QI_WAITING)
			qi_ask_commit(m);
		return;
	}
	if (m->interactive == QI_ORPHANED) {
		/* its client left and its commit failed before it was routed */
		qmsg_close_fd(m);
		qi_leave(m);
		return;
	}
	if (res == -EMFILE || res == -ENFILE) {
		/* Out of descriptors (a big queue taken in at once, each
		 * message with its file open): the message waits a few seconds
		 * and tries again; logged once a second, not per message. */
		time_t now = time(NULL);
		if (now != m->q->nofile_logged) {
			m->q->nofile_logged = now;
			log_warnx(
			    "queue: %s: open: %s: tried again in a few seconds (as are others "
			    "meanwhile)",
			    m->env.id, strerror(-res));
		}
		free(m->reply);
		m->reply = NULL;
		open_later(m);
		return;
	}
	if (res < 0) {
		log_warnx("queue: %s: open: %s: message dropped from memory", m->env.id,
		          strerror(-res));
		qmsg_free(m);
		return;
	}
	schedule(m);
}

static void msg_timer_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qmsg *m = op->owner;

	if (m->q->stopping) {
		qmsg_enter(m, QMSG_STOPPED);
		return;
	}
	if (m->admin != ADMIN_NONE) {
		queue_admin_apply(m);
		return;
	}
	qmsg_start(m);
}

/* ---- routing and assignment ----------------------------------------------- */

static const char *rcpt_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

/* The destination recipient i of m goes to, by the current configuration. */
static struct qdest *route_rcpt(struct qmsg *m, size_t i)
{
	struct queue *q = m->q;
	struct route_hop hop;

	route_lookup(q->rt->transports, q->rt->has_smarthost ? &q->rt->smarthost : NULL,
	             rcpt_domain(m->env.rcpts[i].addr), &hop);
	return qdest_get(q, &hop);
}

/* Routing (Postfix's resolve): the destination of each pending recipient
 * (dest_of[i], NULL for the others). */
static void qmsg_route(struct qmsg *m, struct qdest **dest_of)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING)
			dest_of[i] = route_rcpt(m, i);
}

/* Assignment (Postfix's assign): one job per destination for the
 * recipients i with dest_of[i] set (it is cleared), each appended to its
 * destination's FIFO. */
static void qmsg_assign(struct qmsg *m, struct qdest **dest_of)
{
	size_t n = m->env.rcpt_count;

	for (size_t i = 0; i < n; i++) {
		struct qdest *d = dest_of[i];
		struct qjob *j;
		size_t k = 0;

		if (d == NULL)
			continue;
		j = calloc(1, sizeof(*j));
		if (j == NULL || (j->idx = calloc(n, sizeof(*j->idx))) == NULL ||
		    (j->rcpts = calloc(n, sizeof(*j->rcpts))) == NULL)
			fatalx("out of memory");
		for (size_t r = i; r < n; r++) {
			if (dest_of[r] != d)
				continue;
			j->idx[k] = r;
			j->rcpts[k].addr = m->env.rcpts[r].addr;
			k++;
			dest_of[r] = NULL;
		}
		j->m = m;
		j->d = d;
		j->n = k;
		j->tx.sender = m->env.sender;
		j->tx.rcpts = j->rcpts;
		j->tx.nrcpt = k;
		j->tx.fd = m->fd;
		j->tx.body_off = m->body_off;
		j->tx.size = m->env.body_size;
		j->tx.dot_lines = m->env.dot_lines;
		j->tx.final_crlf = m->env.final_crlf;
		j->tx.eight_bit = m->env.eight_bit || m->env.body_type == 8;
		j->tx.smtputf8 = m->env.smtputf8;
		j->tx.requiretls = m->env.requiretls;
		m->jobs++;
		d->jobs++;
		qdest_push(d, j);
	}
}

static struct qdest **dest_of_new(const struct qmsg *m)
{
	struct qdest **dest_of =
	    calloc(m->env.rcpt_count ? m->env.rcpt_count : 1, sizeof(*dest_of));

	if (dest_of == NULL)
		fatalx("out of memory");
	return dest_of;
}

static void schedule(struct qmsg *m)
{
	struct queue *q = m->q;
	struct qdest **dest_of = dest_of_new(m);

	queue_follow_reload(q);
	qdest_sweep(q, time(NULL));
	qmsg_route(m, dest_of);
	qmsg_assign(m, dest_of);
	free(dest_of);
	qmsg_enter(m, QMSG_ACTIVE);
	if (m->jobs == 0) {
		qmsg_attempt_over(m);
		return;
	}
	qdest_kick_all(q);
}

void qmsg_reroute(struct qjob *j)
{
	struct qmsg *m = j->m;
	struct qdest **dest_of = dest_of_new(m);

	for (size_t k = 0; k < j->n; k++)
		dest_of[j->idx[k]] = route_rcpt(m, j->idx[k]);
	qjob_drop(j);
	qmsg_assign(m, dest_of);
	free(dest_of);
}

/* ---- outcomes: durable, then logged --------------------------------------- */

/* queue/ID.env is written (and the directory fsync after it done): the
 * outcomes it holds are logged now. */
static void state_written(void *owner, int res)
{
	struct qmsg *m = owner;
	struct qjob *j = m->logq_writing, *next;

	if (res < 0)
		log_warnx("queue: %s: state directory fsync: %s", m->env.id, strerror(-res));
	if (m->migrating) {
		migrate_written(m, res);
		return;
	}
	if (m->phase == QMSG_RETRY_SAVE) {
		/* the attempt is over: no outcome can come in meanwhile */
		assert(m->logq_writing == NULL && !m->dirty && m->jobs == 0);
		qmsg_enter(m, QMSG_RETRY_WAIT);
		ring_timeout(m->q->ctx.ring, &m->op_timer, &m->ts);
		return;
	}
	m->logq_writing = NULL;
	for (; j != NULL; j = next) {
		next = j->next;
		qjob_log(j); /* logs, now that the outcome is durable */
	}
	if (m->dirty)
		qmsg_record_outcomes(m);
	else if (m->jobs == 0)
		qmsg_attempt_over(m);
}

/* ---- out of a segment: written to queue/ID ---------------------------------- */

/* A message still in its segment is written to queue/ID, with every
 * recipient's state in its envelope, before anything but its removal is
 * recorded: retries, hold, bounces and `krelay queue` work on queue/ files.
 * Its body is read back from the segment (through the ring), the file is
 * written as a state file is (tmp/, fdatasync, rename, directory fsync),
 * and then the segment gets its SEG_DONE; only once that is durable is
 * the message out of the segment (a restart that found the segment record
 * without it would take the message in again, after queue/ID might have
 * been delivered and removed).  state_written follows, as for a state
 * file. */
static void migrate(struct qmsg *m)
{
	m->migrating = true;
	free(m->mbuf);
	m->mbuf = malloc(m->env.body_size + 1);
	if (m->mbuf == NULL)
		fatalx("out of memory");
	ring_read(m->q->ctx.ring, &m->op_mread, m->fd, m->mbuf, m->env.body_size, m->body_off);
}

static void migrate_fail(struct qmsg *m, int res)
{
	log_warnx("queue: %s: writing queue/%s from its segment: %s (it stays in the segment)",
	          m->env.id, m->env.id, strerror(-res));
	m->migrating = false;
	m->migrate_failed = true;
	state_written(m, res);
}

static void migrate_read_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qmsg *m = op->owner;
	size_t env_len, len;
	char *buf;

	if (res < 0 || (uint64_t)res != m->env.body_size) {
		migrate_fail(m, res < 0 ? res : -EIO);
		return;
	}
	/* the envelope as it is now (outcomes that came in meanwhile are
	 * recorded early: durable sooner than they are logged, which is safe) */
	env_len = spool_env_format(&m->env, NULL, 0);
	len = m->env.body_size + env_len + SPOOL_TRAILER_LEN;
	buf = realloc(m->mbuf, len + 1);
	if (buf == NULL)
		fatalx("out of memory");
	m->mbuf = NULL;
	spool_env_format(&m->env, buf + m->env.body_size, env_len + 1);
	spool_trailer_format(buf + m->env.body_size + env_len, m->env.body_size, (uint32_t)env_len);
	spool_state_write_file(&m->st, m->env.id, buf, len);
}

static void migrate_done(struct seg_append *a, int res)
{
	struct qmsg *m = (struct qmsg *)(void *)((char *)a - offsetof(struct qmsg, seg_app));

	if (res < 0)
		log_warnx(
		    "queue: %s: its segment's record of leaving: %s (a restart may take it in "
		    "twice)",
		    m->env.id, strerror(-res));
	m->in_seg = false;
	m->migrating = false;
	state_written(m, 0);
}

static void migrate_written(struct qmsg *m, int res)
{
	if (res < 0 || m->st.res < 0) {
		migrate_fail(m, res < 0 ? res : m->st.res);
		return;
	}
	spool_seg_done(&m->seg_app, m->env.id, migrate_done);
}

/* Writes queue/ID.env with every recipient's state (queue/ID itself for a
 * message still in a segment). */
static void write_state(struct qmsg *m)
{
	if (m->in_seg) {
		m->dirty = false;
		m->logq_writing = m->logq;
		m->logq = NULL;
		migrate(m);
		return;
	}
	m->dirty = false;
	m->has_state = true;
	m->logq_writing = m->logq;
	m->logq = NULL;
	spool_state_write(&m->st, &m->env);
}

bool qmsg_all_delivered(const struct qmsg *m)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state != SPOOL_RCPT_DELIVERED)
			return false;
	return true;
}

static bool all_final(const struct qmsg *m)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING ||
		    m->env.rcpts[i].state == SPOOL_RCPT_FAILED)
			return false;
	return true;
}

/* Removes a finished message (spool_msg.h says in which order); its file
 * goes with it.  msg_removed follows. */
static void seg_removed(struct seg_append *a, int res)
{
	struct qmsg *m = (struct qmsg *)(void *)((char *)a - offsetof(struct qmsg, seg_app));

	m->in_seg = false;
	if (m->admin == ADMIN_DELETE)
		queue_admin_deleted(m);
	msg_removed(m, res);
}

static void msg_remove(struct qmsg *m)
{
	int fd = m->fd;

	qmsg_enter(m, QMSG_REMOVING);
	if (m->in_seg) {
		/* still in its segment: one SEG_DONE record, made durable with
		 * whatever else the segment's next fdatasync covers */
		qmsg_close_fd(m);
		spool_seg_done(&m->seg_app, m->env.id, seg_removed);
		return;
	}
	if (m->fd_seg != NULL) {
		qmsg_close_fd(m); /* a segment's: not a file to pool */
		fd = -1;
	}
	if (fd >= 0)
		m->q->fds--; /* the remover's now */
	m->fd = -1;
	spool_msg_remove(&m->rm, m->env.id, fd, m->file_size, m->has_state);
}

/* The message is out of the spool: what its last jobs did is logged. */
static void msg_removed(void *owner, int res)
{
	struct qmsg *m = owner;
	struct qjob *j = m->logq_writing, *next;

	if (res < 0)
		log_warnx("queue: %s: state directory fsync: %s", m->env.id, strerror(-res));
	m->logq_writing = NULL;
	for (; j != NULL; j = next) {
		next = j->next;
		qjob_log(j); /* logs, now that the outcome is durable */
	}
	assert(m->jobs == 0);
	qmsg_free(m);
}

void qmsg_record_outcomes(struct qmsg *m)
{
	if (qmsg_recording(m) || m->logq == NULL)
		return;
	if (m->in_seg) {
		/* in a segment, outcomes wait for the attempt's last job: then
		 * the message leaves with one SEG_DONE when every recipient was
		 * delivered, else it is written to queue/ID (write_state) */
		unsigned done = 0;
		for (struct qjob *j = m->logq; j != NULL; j = j->next)
			done++;
		if (done < m->jobs)
			return;
		if (qmsg_all_delivered(m)) {
			m->dirty = false;
			m->logq_writing = m->logq;
			m->logq = NULL;
			msg_remove(m);
		} else {
			/* deferrals too are logged once queue/ID holds the message */
			write_state(m);
		}
		return;
	}
	if (m->dirty && m->jobs == 1 && qmsg_all_delivered(m)) {
		/* the common case: every recipient delivered by one job; the
		 * message leaves the spool (one durable unlink, no state file)
		 * before the deliveries are logged */
		m->dirty = false;
		m->logq_writing = m->logq;
		m->logq = NULL;
		msg_remove(m);
	} else if (m->dirty) {
		write_state(m);
	} else {
		/* nothing final to record: log at once */
		m->logq_writing = m->logq;
		m->logq = NULL;
		state_written(m, 0);
	}
}

/* ---- the end of an attempt ------------------------------------------------ */

/* Recipients that failed for good are F on disk until their bounce is
 * queued durably; then B.  A crash in between sends the bounce again
 * (never none).  True when that is under way (started here). */
static bool bounces_pending(struct qmsg *m)
{
	bool any = false;

	for (size_t i = 0; i < m->env.rcpt_count; i++)
		any |= m->env.rcpts[i].state == SPOOL_RCPT_FAILED;
	if (!any || m->bounce_failed)
		return false;
	if (m->env.sender[0] == '\0') {
		/* never a bounce for the null sender: nobody to tell */
		for (size_t i = 0; i < m->env.rcpt_count; i++)
			if (m->env.rcpts[i].state == SPOOL_RCPT_FAILED)
				m->env.rcpts[i].state = SPOOL_RCPT_BOUNCED;
		m->dirty = true;
		write_state(m);
		return true;
	}
	if (m->fd < 0)
		return false; /* next attempt reopens the file */
	qmsg_enter(m, QMSG_BOUNCING);
	bounce_start(m);
	return true;
}

void qmsg_bounce_done(struct qmsg *m, bool queued)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_FAILED && queued)
			m->env.rcpts[i].state = SPOOL_RCPT_BOUNCED;
	qmsg_enter(m, QMSG_ACTIVE);
	if (queued) {
		m->dirty = true;
		write_state(m); /* F -> B made durable, then the attempt ends */
	} else {
		m->bounce_failed = true; /* retried with the next attempt */
		qmsg_attempt_over(m);
	}
}

void qmsg_close_fd(struct qmsg *m)
{
	if (m->fd_seg != NULL) {
		spool_seg_unref(m->fd_seg);
	} else if (m->fd >= 0) {
		close(m->fd);
		m->q->fds--;
	}
	m->fd = -1;
	/* (a next attempt opens queue/ID and reads it from 0) */
	m->fd_seg = NULL;
	m->body_off = 0;
}

static void msg_close(struct qmsg *m)
{
	if (m->in_seg)
		return; /* its segment's fd stays: it is read from there */
	qmsg_close_fd(m);
}

/* Pending recipients of a message past QueueLifetime fail; true if any did. */
static bool expire(struct qmsg *m)
{
	char to[SAFE_LEN(ADDR_LOG_MAX)], reply[SAFE_LEN(SMTP_REPLY_MAX)];
	bool any = false;

	for (size_t i = 0; i < m->env.rcpt_count; i++) {
		if (m->env.rcpts[i].state != SPOOL_RCPT_PENDING)
			continue;
		m->env.rcpts[i].state = SPOOL_RCPT_FAILED;
		snprintf(m->dsn[i], sizeof(m->dsn[i]), "4.4.7");
		log_info("%s delivery to=<%s> status=expired dsn=4.4.7 (in the queue longer than "
		         "QueueLifetime) reply=\"%s\"",
		         m->env.id, safe_log(to, sizeof(to), m->env.rcpts[i].addr),
		         safe_log_text(reply, sizeof(reply),
		                       m->reply && m->reply[i] ? m->reply[i] : "none"));
		m->q->stats.failed++;
		metrics_count(m->q->ctx.mw, MC_RCPT_BOUNCED, 1);
		any = true;
	}
	return any;
}

/* The retry: attempts, the next one and the last error are saved (`krelay
 * queue list` shows them), then the timer is armed. */
static void retry_later(struct qmsg *m, time_t now)
{
	const struct config *c = queue_cfg(m->q);
	unsigned delay;

	m->attempts++;
	delay = qpolicy_backoff_s(c->retry_min_s, c->retry_max_s, m->attempts);
	m->env.attempts = m->attempts;
	m->env.next_attempt = (int64_t)now + delay;
	free(m->env.last_error);
	m->env.last_error = NULL;
	for (size_t i = 0; m->reply && i < m->env.rcpt_count; i++) {
		if (m->reply[i] != NULL && m->env.last_error == NULL &&
		    m->env.rcpts[i].state == SPOOL_RCPT_PENDING)
			m->env.last_error = xstrdup(m->reply[i]);
		free(m->reply[i]);
		m->reply[i] = NULL;
	}
	free(m->reply);
	m->reply = NULL;
	m->ts.tv_sec = delay;
	m->ts.tv_nsec = 0;
	qmsg_enter(m, QMSG_RETRY_SAVE);
	write_state(m);
}

void qmsg_attempt_over(struct qmsg *m)
{
	struct queue *q = m->q;
	time_t now = time(NULL);

	if (qmsg_recording(m) || m->phase == QMSG_BOUNCING)
		return; /* comes back here when that is done */
	assert(m->phase == QMSG_ACTIVE && m->jobs == 0);
	if (!q->stopping && bounces_pending(m))
		return;
	m->bounce_failed = false;
	if (all_final(m)) {
		/* Every recipient has its outcome on disk: the message goes
		 * (its file to the pool while it is open). */
		msg_remove(m);
		return;
	}
	if (!q->stopping && qpolicy_expired(now, m->env.arrival, queue_cfg(q)->queue_lifetime_s) &&
	    expire(m)) {
		/* F made durable first; then the bounce (the file is still open) */
		m->dirty = true;
		write_state(m);
		return;
	}
	if (!q->stopping && m->in_seg && m->admin == ADMIN_DELETE) {
		msg_remove(m); /* out of its segment; seg_removed logs it */
		return;
	}
	if (!q->stopping && m->in_seg && m->admin == ADMIN_HOLD && !m->migrate_failed) {
		write_state(m); /* a hold moves queue/ID: written there first */
		return;
	}
	msg_close(m);
	if (q->stopping) {
		qmsg_enter(m, QMSG_STOPPED); /* stays in the spool; freed with the queue */
		return;
	}
	if (m->admin != ADMIN_NONE) {
		queue_admin_apply(m); /* between attempts: held or deleted now */
		return;
	}
	retry_later(m, now);
}

/* ---- jobs --------------------------------------------------------------------- */

static void qjob_free(struct qjob *j)
{
	j->d->jobs--;
	free(j->idx);
	free(j->rcpts);
	free(j);
}

void qjob_drop(struct qjob *j)
{
	j->m->jobs--;
	qjob_free(j);
}

void qjob_finished(struct qjob *j)
{
	struct qmsg *m = j->m;

	for (size_t k = 0; k < j->n; k++) {
		struct smtp_tx_rcpt *r = &j->rcpts[k];
		size_t i = j->idx[k];
		enum spool_rcpt_state st = qpolicy_outcome(r->code);

		if (st != SPOOL_RCPT_PENDING)
			m->env.rcpts[i].state = st;
		free(m->reply[i]);
		m->reply[i] = xstrdup(r->reply[0] ? r->reply : "no reply");
		qpolicy_dsn(r->code, r->reply, m->dsn[i], sizeof(m->dsn[i]));
		if (qpolicy_final(r->code))
			m->dirty = true;
	}
	j->next = m->logq;
	m->logq = j;
	if (m->interactive != QI_NONE)
		qi_progress(m);
	else
		qmsg_record_outcomes(m);
}

void qjob_fail(struct qjob *j, int code, const char *text)
{
	for (size_t k = 0; k < j->n; k++) {
		if (j->rcpts[k].code != 0)
			continue;
		j->rcpts[k].code = code;
		snprintf(j->rcpts[k].reply, SMTP_REPLY_MAX, "%s", text);
	}
	qjob_finished(j);
}

/* Seconds since the message arrived (Postfix's delay=). */
static double delay_s(const struct qmsg *m)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (double)(now.tv_sec - m->env.arrival) + (double)now.tv_nsec / 1e9;
}

void qjob_log(struct qjob *j)
{
	struct qmsg *m = j->m;
	struct queue *q = m->q;
	const struct delivery_facts *f = &j->facts;
	char to[SAFE_LEN(ADDR_LOG_MAX)], relay[SAFE_LEN(sizeof(f->relay))];
	char reply[SAFE_LEN(SMTP_REPLY_MAX)], dsn[16];
	bool relayed = false;

	for (size_t k = 0; k < j->n; k++) {
		struct smtp_tx_rcpt *r = &j->rcpts[k];
		const char *status = qpolicy_status(r->code);

		if (status[0] == 's') {
			q->stats.delivered++;
			metrics_count(q->ctx.mw, MC_RCPT_RELAYED, 1);
			relayed = true;
		} else if (status[0] == 'b') {
			q->stats.failed++;
			metrics_count(q->ctx.mw, MC_RCPT_BOUNCED, 1);
		} else {
			q->stats.deferred++;
			metrics_count(q->ctx.mw, MC_RCPT_DEFERRED, 1);
		}
		qpolicy_dsn(r->code, r->reply, dsn, sizeof(dsn));
		log_info("%s delivery to=<%s> relay=%s delay=%.2f dsn=%s status=%s tls=\"%s\" "
		         "verified=%s auth=%s resumed=%s ktls_tx=%s%s%s%s body_path=%s bytes=%llu "
		         "reply=\"%s\"",
		         m->env.id, safe_log(to, sizeof(to), r->addr),
		         safe_log(relay, sizeof(relay), f->relay[0] ? f->relay : j->d->name),
		         delay_s(m), dsn, status, f->tls, f->verified ? "yes" : "no",
		         f->auth ? f->auth : "none", f->resumed ? "yes" : "no",
		         f->ktls_tx ? "on" : "off", f->ktls_tx ? "" : " ktls_why=\"",
		         f->ktls_tx ? "" : f->ktls_why, f->ktls_tx ? "" : "\"",
		         j->tx.body_path && j->tx.body_path[0] ? j->tx.body_path : "none",
		         (unsigned long long)j->tx.body_bytes,
		         safe_log_text(reply, sizeof(reply), r->reply[0] ? r->reply : "no reply"));
	}
	/* the next hop took the message (its transaction, once per job) */
	if (relayed)
		metrics_count(q->ctx.mw, MC_RELAYED_MESSAGES, 1);
	m->jobs--;
	qjob_free(j);
}

/* ---- the queue ------------------------------------------------------------ */

struct queue *queue_new(const struct queue_ctx *ctx, char *err, size_t errlen)
{
	struct queue *q = calloc(1, sizeof(*q));
	const struct config *c;

	if (q == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	q->ctx = *ctx;
	ring_op_init(&q->op_itick, RING_TIMEOUT, queue_interactive_tick, q);
	q->rt_gen = atomic_load(&ctx->srv->generation);
	q->rt = runtime_get(ctx->srv);
	c = &q->rt->cfg;
	{
		/* half the descriptors, shared by the workers, for the files of
		 * messages under way; the rest for connections and the spool */
		struct rlimit rl;
		unsigned w = ctx->srv->workers ? ctx->srv->workers : 1;
		q->fds_max = 64;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur / 2 / w > q->fds_max)
			q->fds_max = (unsigned)(rl.rlim_cur / 2 / w);
	}
	if (dns_init(&q->dns, ctx->ring, c->dns_server, err, errlen) < 0)
		goto fail;
	if (c->has_throttle_store) {
		/* the node's name in the store: its host and process */
		char node[128];

		snprintf(node, sizeof(node), "%s:%d", c->hostname, (int)getpid());
		q->store = tredis_new(ctx->ring, &c->throttle_store, ctx->srv->throttle, node,
		                      ctx->worker_index);
	}
	return q;
fail:
	runtime_put(q->rt);
	free(q);
	return NULL;
}

/* After a reload (SIGHUP): new connections out take the new configuration
 * (SmartHost, TransportTable, TLSPolicy, TLSPolicyTable, client
 * certificate...).  Connections under way finish their message with the
 * one they were opened with; idle ones, opened with the old, are closed;
 * TLS sessions kept for resumption and the "next time in clear" memory go;
 * jobs still waiting for a connection are routed again. */
void queue_follow_reload(struct queue *q)
{
	unsigned gen = atomic_load(&q->ctx.srv->generation);
	struct runtime *old = q->rt;
	struct qjob *waiting = NULL, *j;

	if (gen == q->rt_gen || q->stopping)
		return;
	q->rt_gen = gen;
	q->rt = runtime_get(q->ctx.srv);
	for (struct qdest *d = q->dests; d != NULL; d = d->next) {
		qconn_quit_idle(d);
		while ((j = qdest_pop(d)) != NULL) {
			j->next = waiting;
			waiting = j;
		}
	}
	qdest_forget_tls(q);
	for (; waiting != NULL; waiting = j) {
		j = waiting->next;
		qmsg_reroute(waiting);
	}
	runtime_put(old);
	log_info("queue: worker %u: new connections out use the reloaded configuration",
	         q->ctx.worker_index);
	qdest_kick_all(q);
}

void queue_reloaded(struct queue *q)
{
	queue_follow_reload(q);
}

void queue_stop(struct queue *q)
{
	struct qjob *j;

	q->stopping = true;
	for (struct qdest *d = q->dests; d != NULL; d = d->next)
		qconn_quit_idle(d);
	qconn_stop_all(q);
	/* Jobs not yet on a connection stay in the spool for the next start. */
	for (struct qdest *d = q->dests; d != NULL; d = d->next)
		while ((j = qdest_pop(d)) != NULL)
			qjob_drop(j);
	for (struct qmsg *m = q->msgs, *next; m != NULL; m = next) {
		next = m->next;
		if (m->interactive == QI_WAITING && m->jobs == 0 && m->phase != QMSG_OPENING)
			qi_ask_commit(m); /* into the spool, for the next start */
		if (m->jobs == 0 && !qmsg_recording(m) && m->phase != QMSG_OPENING &&
		    m->phase != QMSG_BOUNCING && m->fd >= 0)
			qmsg_close_fd(m);
	}
	dns_free(q->dns); /* outstanding queries come back cancelled */
	q->dns = NULL;
	dns_free(q->dnssec);
	q->dnssec = NULL;
	sts_free(q->sts); /* outstanding requests come back without a policy */
	q->sts = NULL;
	tredis_stop(q->store);
}

bool queue_idle(const struct queue *q)
{
	if (q->conns > 0 || q->dns_pending > 0)
		return false;
	if (ring_op_busy(&q->op_itick) || !tredis_idle(q->store))
		return false;
	for (const struct qmsg *m = q->msgs; m != NULL; m = m->next)
		if (m->jobs > 0 || qmsg_recording(m) || m->phase == QMSG_OPENING ||
		    m->phase == QMSG_BOUNCING || m->interactive != QI_NONE)
			return false;
	return true;
}

void queue_free(struct queue *q)
{
	free(q->parked);
	while (q->msgs != NULL) {
		qmsg_close_fd(q->msgs);
		qmsg_free(q->msgs);
	}
	qdest_free_all(q);
	dns_free(q->dns); /* NULL after queue_stop */
	dns_free(q->dnssec);
	sts_free(q->sts);
	tredis_free(q->store);
	runtime_put(q->rt);
	free(q);
}

const struct queue_stats *queue_stats(const struct queue *q)
{
	return &q->stats;
}
