/* queue_interactive: DeliveryMode=interactive (Sendmail's name).  A
 * message is relayed before its client gets the reply to its end of data;
 * it becomes an ordinary queued message only when that does not fully
 * succeed (queue.h says the contract with its owner, the SMTP session).
 * While its client waits, a message's outcomes stay in its log queue:
 * they are recorded (or only logged) once its owner says whether the
 * message became durable. */
#include <assert.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "queue_int.h"

static const char *const qi_name[QI_STATES] = {
    [QI_NONE] = "none",
    [QI_WAITING] = "waiting",
    [QI_COMMITTING] = "committing",
    [QI_ORPHANED] = "orphaned",
};
static const unsigned qi_may_enter[QI_STATES] = {
    [QI_NONE] = TO(QI_WAITING),
    [QI_WAITING] = TO(QI_NONE) | TO(QI_COMMITTING),
    [QI_COMMITTING] = TO(QI_NONE) | TO(QI_ORPHANED),
    [QI_ORPHANED] = 0,
};

/* The interactive state's changes, checked and traced; q->waiting counts
 * the messages in QI_WAITING (the InteractiveTimeout tick runs for them). */
void qi_enter(struct qmsg *m, enum qmsg_interactive to)
{
	static const struct state_table qi_states = {"interactive", qi_name, qi_may_enter,
	                                             QI_STATES};

	if (m->interactive == QI_WAITING)
		m->q->waiting--;
	if (to == QI_WAITING)
		m->q->waiting++;
	m->interactive = state_enter(&qi_states, m->interactive, to, "%s", m->env.id);
}

static unsigned logq_len(const struct qmsg *m)
{
	unsigned n = 0;

	for (const struct qjob *j = m->logq; j != NULL; j = j->next)
		n++;
	return n;
}

/* Logs the finished jobs of a message that leaves without a trace in the
 * spool (relayed before its reply, or never made durable) and frees it. */
void qi_leave(struct qmsg *m)
{
	struct qjob *j = m->logq, *next;

	m->logq = NULL;
	for (; j != NULL; j = next) {
		next = j->next;
		qjob_log(j);
	}
	if (m->fd >= 0) {
		close(m->fd); /* the dup: the file itself stays the owner's */
		m->q->fds--;
	}
	m->fd = -1;
	qmsg_free(m);
}

static void notify(struct qmsg *m, enum queue_interactive_event ev)
{
	assert(m->q->api_depth == 0);
	m->icb(m->iowner, ev);
}

void qi_ask_commit(struct qmsg *m)
{
	if (m->interactive == QI_WAITING)
		qi_enter(m, QI_COMMITTING);
	notify(m, QUEUE_INTERACTIVE_COMMIT);
}

/* Some recipient of a finished job got no 2xx. */
static bool logq_failed(const struct qmsg *m)
{
	for (const struct qjob *j = m->logq; j != NULL; j = j->next)
		for (size_t k = 0; k < j->n; k++)
			if (j->rcpts[k].code < 200 || j->rcpts[k].code >= 300)
				return true;
	return false;
}

void qi_progress(struct qmsg *m)
{
	bool all_done = m->jobs == logq_len(m);

	if (m->interactive == QI_WAITING && all_done && qmsg_all_delivered(m)) {
		/* relayed: the next hops have it; the client is told, then the
		 * deliveries are logged */
		qi_enter(m, QI_NONE);
		notify(m, QUEUE_INTERACTIVE_RELAYED);
		qi_leave(m);
	} else if (m->interactive == QI_WAITING && (all_done || logq_failed(m))) {
		/* the outcomes wait for queue_interactive_durable; jobs still at
		 * other next hops go on */
		qi_ask_commit(m);
	} else if (m->interactive == QI_ORPHANED && all_done) {
		qi_leave(m);
	}
}

static void tick_arm(struct queue *q)
{
	if (ring_op_busy(&q->op_itick))
		return;
	q->itick_ts.tv_sec = 1;
	q->itick_ts.tv_nsec = 0;
	ring_timeout(q->ctx.ring, &q->op_itick, &q->itick_ts);
}

/* Once a second while messages wait: InteractiveTimeout. */
void queue_interactive_tick(struct ring_op *op, int res, unsigned flags)
{
	struct queue *q = op->owner;
	time_t now = time(NULL);

	for (struct qmsg *m = q->msgs; m != NULL && q->waiting > 0; m = m->next)
		if (m->interactive == QI_WAITING && now >= m->ideadline)
			qi_ask_commit(m);
	if (q->waiting > 0)
		tick_arm(q);
}

struct qmsg *queue_add_interactive(struct queue *q, const struct spool_env *env, int fd,
                                   uint64_t file_size, queue_interactive_cb cb, void *owner)
{
	struct qmsg *m;
	int dfd;

	if (q->stopping || env->rcpt_count == 0)
		return NULL;
	if ((dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return NULL;
	q->api_depth++;
	m = qmsg_add(q, env, dfd, file_size);
	qi_enter(m, QI_WAITING);
	m->icb = cb;
	m->iowner = owner;
	m->ideadline = time(NULL) + (time_t)queue_cfg(q)->interactive_timeout_s;
	tick_arm(q);
	qmsg_start(m);
	q->api_depth--;
	return m;
}

void queue_interactive_commit(struct qmsg *m)
{
	if (m->interactive != QI_WAITING)
		return;
	qi_enter(m, QI_COMMITTING);
}

static void durable(struct qmsg *m, int err);

void queue_interactive_durable(struct qmsg *m, int err)
{
	struct queue *q = m->q;

	q->api_depth++;
	durable(m, err); /* (may free m) */
	q->api_depth--;
}

static void durable(struct qmsg *m, int err)
{
	assert(m->interactive == QI_COMMITTING);
	if (err < 0) {
		/* the client was told to try again: nothing is recorded */
		qi_enter(m, QI_ORPHANED);
		if (m->phase != QMSG_OPENING && m->jobs == logq_len(m))
			qi_leave(m); /* (while opening: msg_open_cb lets go of it) */
		return;
	}
	qi_enter(m, QI_NONE); /* an ordinary queued message from here on */
	if (m->logq != NULL)
		qmsg_record_outcomes(m);
	else if (m->jobs == 0 && m->phase == QMSG_ACTIVE)
		qmsg_attempt_over(m); /* its job was dropped (the queue is stopping) */
	/* (while opening: routed as any message once open; stopped: stays) */
}
