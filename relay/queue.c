/* queue: see queue.h. */
#include "queue.h"

#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dns.h"
#include "dsn.h"

#include "log.h"
#include "route.h"
#include "runtime.h"
#include "safe.h"
#include "smtp_client.h"
#include "spool.h"
#include "spool_msg.h"
#include "tls_policy.h"

#define IDLE_KEEP_S  2   /* how long an idle connection waits for the next message */
#define ADDR_LOG_MAX 256 /* octets of an address a log line shows (RFC 5321 path) */

struct dest;
struct conn;

/* What `krelay queue hold|delete` asked of a message the relay holds: done
 * once no attempt of it is under way (admin_apply). */
enum admin { ADMIN_NONE, ADMIN_HOLD, ADMIN_DELETE };

/* Where a message is in its life; one at a time, changed only by
 * qmsg_enter() (qmsg_may_enter[] lists what may follow what).  What is
 * not a phase: jobs (out at destinations), the state writer (busy while
 * outcomes are being made durable, in QMSG_ACTIVE), the interactive state
 * (its client waiting, below) and admin (an operator's request). */
enum qmsg_phase {
	QMSG_NEW,        /* made, not yet started */
	QMSG_OPENING,    /* its file being opened (or a NOP: open already) */
	QMSG_ACTIVE,     /* routed: jobs at destinations, outcomes recorded */
	QMSG_BOUNCING,   /* F recipients: a bounce being spooled */
	QMSG_RETRY_SAVE, /* attempts, next attempt, last error being written */
	QMSG_RETRY_WAIT, /* the retry timer is armed */
	QMSG_REMOVING,   /* every recipient final: its files being removed */
	QMSG_STOPPED,    /* the queue stopped: it stays in the spool */
	QMSG_PHASES
};

/* DeliveryMode=interactive: a message not yet durable whose client waits. */
enum qmsg_interactive {
	QI_NONE,
	QI_WAITING,    /* being relayed before the client's reply */
	QI_COMMITTING, /* the owner is making it durable; outcomes wait */
	QI_ORPHANED,   /* that failed: outcomes are only logged */
	QI_STATES
};

struct qmsg {
	struct queue *q;
	struct spool_env env;
	char **reply; /* last reply per recipient */
	unsigned attempts;
	int fd;
	unsigned jobs; /* jobs not finished in this attempt */
	enum qmsg_phase phase;
	bool dirty;         /* outcomes not yet written */
	bool bounce_failed; /* retried with the next attempt */
	bool has_state;     /* queue/ID.env may exist (written, or found at start) */
	int admin;          /* enum admin: `krelay queue hold|delete` asked for it */
	uint64_t file_size; /* of queue/ID, or SPOOL_SIZE_UNKNOWN */
	struct ring_op op_timer_rm;
	char (*dsn)[16];   /* enhanced status per recipient, for bounces */
	struct qjob *logq; /* finished jobs whose results await durability */
	struct qjob *logq_writing;
	struct ring_op op_open, op_timer;
	struct __kernel_timespec ts;
	struct spool_state_writer st; /* queue/ID.env */
	struct spool_remover rm;      /* the message's removal */
	/* DeliveryMode=interactive: not yet durable, its client waiting */
	enum qmsg_interactive interactive;
	queue_held_cb hold_cb;
	void *hold_owner;
	time_t hold_deadline;
	struct qmsg *prev, *next;
};

struct qjob {
	struct qmsg *m;
	struct dest *d;
	size_t *idx; /* recipients (indexes into m->env.rcpts) */
	size_t n;
	struct smtp_tx tx;
	struct smtp_tx_rcpt *rcpts;
	char relay[DNS_NAME_MAX + 80], tls[128], ktls[96];
	bool verified, resumed, ktls_tx;
	struct qjob *next;
};

struct dest {
	struct queue *q;
	char name[DNS_NAME_MAX + 16];
	struct route_hop hop;
	struct qjob *head, *tail;
	unsigned active; /* connections open or opening */
	struct conn *idle;
	SSL_SESSION *session;
	bool clear_next; /* policy "may": last handshake failed, next try in clear */
	bool no_ktls;    /* the peer sent a KeyUpdate on a kTLS connection */
	struct dns_addr addr[DNS_ADDR_MAX];
	size_t naddr;
	bool resolving, resolved;
	time_t resolved_at;
	char resolve_error[160];
	size_t mx_left; /* MX hosts whose addresses are still being looked up */
	struct dns_mx mx[DNS_MX_MAX];
	size_t nmx, mx_next;
	struct dest *next;
};

struct conn {
	struct dest *d;
	struct conn *prev_all, *next_all; /* q->conn_all */
	struct runtime *rt;               /* the configuration it was opened with */
	struct smtp_client *c;
	struct qjob *job;
	size_t addr_idx;
	unsigned messages;
	bool idle, quitting;
	struct ring_op op_idle, op_idle_rm;
	struct __kernel_timespec idle_ts;
	struct timespec idle_since; /* CLOCK_MONOTONIC, when it last went idle */
	struct conn *next_idle;
};

struct queue {
	struct queue_ctx ctx;
	struct runtime *rt; /* the configuration new connections take */
	unsigned rt_gen;    /* srv->generation it was taken at */
	struct dns *dns;
	bool stopping;
	unsigned dns_pending; /* queries whose callback has not run yet */
	/* calls of a held message's owner under way (queue_add_held,
	 * queue_held_commit, queue_held_durable): held_notify() asserts that
	 * none is, so no owner is ever called back from inside its own call */
	unsigned api_depth;
	/* DeliveryMode=queueonly: durable messages waiting for a queue run */
	char (*parked)[SPOOL_ID_LEN + 1];
	size_t nparked, parked_cap;
	struct qmsg *msgs;
	struct conn *conn_all; /* every connection out, for queue_stop */
	struct dest *dests;
	unsigned conns;
	struct queue_stats stats;
	unsigned held; /* messages in QI_WAITING */
	struct ring_op op_hold_tick;
	struct __kernel_timespec hold_ts;
};

static void schedule(struct qmsg *m);
static void held_result(struct qmsg *m);
static void results_go(struct qmsg *m);
static void dest_kick(struct dest *d);
static void job_done(struct qjob *j);
static void msg_attempt_over(struct qmsg *m);
static void st_write_start(struct qmsg *m);
struct smtp_tx_rcpt;
static void dsn_of(const struct smtp_tx_rcpt *r, char *out, size_t len);

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

/* ---- messages ------------------------------------------------------------ */

static const struct config *cfg(const struct queue *q)
{
	return &q->rt->cfg;
}

#define TO(p) (1u << (p))
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
static const unsigned qmsg_may_enter[QMSG_PHASES] = {
    [QMSG_NEW] = TO(QMSG_OPENING),
    [QMSG_OPENING] = TO(QMSG_ACTIVE) | TO(QMSG_STOPPED),
    [QMSG_ACTIVE] = TO(QMSG_BOUNCING) | TO(QMSG_RETRY_SAVE) | TO(QMSG_REMOVING) | TO(QMSG_STOPPED),
    [QMSG_BOUNCING] = TO(QMSG_ACTIVE),
    [QMSG_RETRY_SAVE] = TO(QMSG_RETRY_WAIT),
    [QMSG_RETRY_WAIT] = TO(QMSG_OPENING) | TO(QMSG_STOPPED),
    [QMSG_REMOVING] = 0,
    [QMSG_STOPPED] = 0,
};

/* Every change of phase: checked (a transition not in the table is a bug,
 * stopped at once) and traced at LogLevel 10 and up. */
static void qmsg_enter(struct qmsg *m, enum qmsg_phase to)
{
	if (!(qmsg_may_enter[m->phase] & TO(to))) {
		log_warnx("queue: %s: no transition from %s to %s", m->env.id,
		          qmsg_phase_name[m->phase], qmsg_phase_name[to]);
		log_flush();
		assert(!"queue message phase transition");
	}
	log_trace("message %s %s -> %s", m->env.id, qmsg_phase_name[m->phase], qmsg_phase_name[to]);
	m->phase = to;
}

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

/* The interactive state's changes, checked and traced; q->held counts
 * the messages in QI_WAITING (the InteractiveTimeout tick runs for them). */
static void qi_enter(struct qmsg *m, enum qmsg_interactive to)
{
	if (!(qi_may_enter[m->interactive] & TO(to))) {
		log_warnx("queue: %s: no interactive transition from %s to %s", m->env.id,
		          qi_name[m->interactive], qi_name[to]);
		log_flush();
		assert(!"queue interactive transition");
	}
	log_trace("message %s interactive %s -> %s", m->env.id, qi_name[m->interactive],
	          qi_name[to]);
	if (m->interactive == QI_WAITING)
		m->q->held--;
	if (to == QI_WAITING)
		m->q->held++;
	m->interactive = to;
}

/* Outcomes are being made durable: by the state writer, or by the removal
 * (whose end logs them). */
static bool qmsg_recording(const struct qmsg *m)
{
	return m->st.busy || m->phase == QMSG_REMOVING;
}

static void msg_open_cb(struct ring_op *op, int res, unsigned flags);
static void msg_timer_cb(struct ring_op *op, int res, unsigned flags);

static void timer_rm_cb(struct ring_op *op, int res, unsigned flags)
{
	/* the timer itself completes with -ECANCELED and starts the attempt */
}
static void state_written(void *owner, int res);
static void msg_removed(void *owner, int res);

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
	spool_state_init(&m->st, q->ctx.spool, state_written, m);
	spool_remover_init(&m->rm, q->ctx.spool, msg_removed, m);
	m->next = q->msgs;
	if (q->msgs)
		q->msgs->prev = m;
	q->msgs = m;
	return m;
}

static void msg_free(struct qmsg *m)
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
	spool_state_free(&m->st);
	spool_env_free(&m->env);
	free(m);
}

static void msg_start(struct qmsg *m)
{
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
	ring_openat(m->q->ctx.ring, &m->op_open, m->q->ctx.spool->queue_dfd, m->env.id,
	            O_RDWR | O_CLOEXEC, 0);
}

static struct qmsg *msg_add(struct queue *q, const struct spool_env *env, int fd,
                            uint64_t file_size)
{
	struct qmsg *m = msg_new(q);

	env_copy(&m->env, env);
	m->fd = fd;
	m->file_size = fd >= 0 ? file_size : SPOOL_SIZE_UNKNOWN;
	return m;
}

void queue_add(struct queue *q, const struct spool_env *env, int fd, uint64_t file_size)
{
	msg_start(msg_add(q, env, fd, file_size));
}

int queue_recover(struct queue *q, const char *id)
{
	char err[256];
	struct qmsg *m = msg_new(q);

	if (spool_state_load(q->ctx.spool->queue_dfd, id, &m->env, err, sizeof(err)) < 0) {
		log_warnx("queue: %s: %s: left alone", id, err);
		msg_free(m);
		return -1;
	}
	m->attempts = m->env.attempts;
	m->has_state = true; /* it may have one: removed with the message */
	msg_start(m);
	return 0;
}

static void hold_ask_commit(struct qmsg *m);

static void held_leave(struct qmsg *m);

static void msg_open_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qmsg *m = op->owner;

	if (op->kind == RING_NOP)
		res = m->fd; /* the file was open already */
	m->fd = -1;
	if (m->q->stopping) {
		if (res >= 0)
			close(res);
		/* stays in the spool (a held one is put there); freed with the queue */
		qmsg_enter(m, QMSG_STOPPED);
		if (m->interactive == QI_WAITING)
			hold_ask_commit(m);
		return;
	}
	if (m->interactive == QI_ORPHANED) {
		/* its client left and its commit failed before it was routed */
		if (res >= 0)
			close(res);
		held_leave(m);
		return;
	}
	if (res < 0) {
		log_warnx("queue: %s: open: %s: message dropped from memory", m->env.id,
		          strerror(-res));
		msg_free(m);
		return;
	}
	m->fd = res;
	schedule(m);
}

static unsigned backoff_s(const struct queue *q, unsigned attempts)
{
	uint64_t d = cfg(q)->retry_min_s;

	for (unsigned i = 1; i < attempts && d < cfg(q)->retry_max_s; i++)
		d *= 2;
	return d > cfg(q)->retry_max_s ? cfg(q)->retry_max_s : (unsigned)d;
}

static void admin_apply(struct qmsg *m);

static void msg_timer_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qmsg *m = op->owner;

	if (m->q->stopping) {
		qmsg_enter(m, QMSG_STOPPED);
		return;
	}
	if (m->admin != ADMIN_NONE) {
		admin_apply(m);
		return;
	}
	msg_start(m);
}

/* ---- durable per-recipient state ---------------------------------------- */

/* queue/ID.env is written (and the directory fsync after it done): the
 * outcomes it holds are logged now. */
static void state_written(void *owner, int res)
{
	struct qmsg *m = owner;
	struct qjob *j = m->logq_writing, *next;

	if (res < 0)
		log_warnx("queue: %s: state directory fsync: %s", m->env.id, strerror(-res));
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
		job_done(j); /* logs, now that the outcome is durable */
	}
	if (m->dirty)
		st_write_start(m);
	else if (m->jobs == 0)
		msg_attempt_over(m);
}

/* Writes queue/ID.env with every recipient's state. */
static void st_write_start(struct qmsg *m)
{
	m->dirty = false;
	m->has_state = true;
	m->logq_writing = m->logq;
	m->logq = NULL;
	spool_state_write(&m->st, &m->env);
}

/* ---- the end of an attempt ------------------------------------------------ */

static void msg_close(struct qmsg *m);

static bool all_final(const struct qmsg *m)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING ||
		    m->env.rcpts[i].state == SPOOL_RCPT_FAILED)
			return false;
	return true;
}

/* ---- bounces ---------------------------------------------------------------
 * Recipients that failed for good are F on disk until their bounce is queued
 * durably; then B.  A crash in between sends the bounce again (never none). */

struct bounce {
	struct qmsg *m;
	struct spool_tx tx;
	struct spool_env env;
	struct spool_rcpt rcpt;
	char *body;
	size_t len, off;
	char hdr[16384];
	struct ring_op op_read;
};

static void bounce_spool_cb(void *owner, enum spool_event ev, int err);

static void bounce_done(struct bounce *b, bool queued)
{
	struct qmsg *m = b->m;

	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_FAILED && queued)
			m->env.rcpts[i].state = SPOOL_RCPT_BOUNCED;
	if (queued) {
		char to[SAFE_LEN(ADDR_LOG_MAX)];
		log_info("%s bounce id=%s to=<%s> status=queued", m->env.id, b->env.id,
		         safe_log(to, sizeof(to), m->env.sender));
		queue_add(m->q, &b->env, b->tx.fd, b->tx.file_size);
		b->tx.fd = -1;
	}
	free(b->body);
	free(b);
	qmsg_enter(m, QMSG_ACTIVE);
	if (queued) {
		m->dirty = true;
		st_write_start(m); /* F -> B made durable, then the attempt ends */
	} else {
		m->bounce_failed = true; /* retried with the next attempt */
		msg_attempt_over(m);
	}
}

static void bounce_read_cb(struct ring_op *op, int res, unsigned flags)
{
	struct bounce *b = op->owner;
	struct qmsg *m = b->m;
	struct queue *q = m->q;
	struct dsn_rcpt r[64];
	struct dsn_info in;
	char boundary[64];
	size_t n = 0;

	memset(&in, 0, sizeof(in));
	for (size_t i = 0; i < m->env.rcpt_count && n < 64; i++) {
		if (m->env.rcpts[i].state != SPOOL_RCPT_FAILED)
			continue;
		r[n].addr = m->env.rcpts[i].addr;
		r[n].diagnostic = m->reply && m->reply[i] ? m->reply[i] : "failed";
		r[n].status = m->dsn && m->dsn[i][0] ? m->dsn[i] : "5.0.0";
		r[n].remote_mta = NULL;
		n++;
	}
	snprintf(boundary, sizeof(boundary), "%s/%s", m->env.id, cfg(q)->hostname);
	in.reporting_mta = cfg(q)->hostname;
	in.queue_id = m->env.id;
	in.sender = m->env.sender;
	in.arrival = m->env.arrival;
	in.now = time(NULL);
	in.rcpts = r;
	in.nrcpt = n;
	in.headers = b->hdr;
	in.headers_len = res > 0 ? dsn_header_len(b->hdr, (size_t)res) : 0;
	in.boundary = boundary;
	b->len = dsn_format(&in, NULL, 0);
	b->body = malloc(b->len + 1);
	if (b->body == NULL)
		fatalx("out of memory");
	dsn_format(&in, b->body, b->len + 1);
	spool_new_id(q->ctx.spool, b->env.id);
	spool_tx_begin(&b->tx, q->ctx.spool, b->env.id, bounce_spool_cb, b);
}

static void bounce_spool_cb(void *owner, enum spool_event ev, int err)
{
	struct bounce *b = owner;

	if (ev == SPOOL_OPENED && err < 0) {
		log_warnx("queue: %s: bounce: %s", b->m->env.id, strerror(-err));
		bounce_done(b, false);
		return;
	}
	if (ev == SPOOL_COMMITTED) {
		if (err < 0)
			log_warnx("queue: %s: bounce: %s", b->m->env.id, strerror(-err));
		bounce_done(b, err == 0);
		return;
	}
	if (ev == SPOOL_ABORTED) {
		bounce_done(b, false);
		return;
	}
	/* OPENED or WRITABLE: append what fits, then commit */
	while (b->off < b->len) {
		size_t k = b->len - b->off < SPOOL_BUF_SIZE ? b->len - b->off : SPOOL_BUF_SIZE;
		if (!spool_tx_append(&b->tx, b->body + b->off, k))
			return; /* SPOOL_WRITABLE comes back here */
		b->off += k;
	}
	b->env.body_size = b->len;
	spool_tx_commit(&b->tx, &b->env);
}

/* Queues one bounce for every F recipient of m (whose sender is not <>). */
static void bounce_start(struct qmsg *m)
{
	struct bounce *b = calloc(1, sizeof(*b));

	if (b == NULL)
		fatalx("out of memory");
	b->m = m;
	qmsg_enter(m, QMSG_BOUNCING);
	b->env.arrival = time(NULL);
	b->env.final_crlf = true;
	b->env.sender = "";
	b->rcpt.addr = m->env.sender;
	b->rcpt.state = SPOOL_RCPT_PENDING;
	b->env.rcpts = &b->rcpt;
	b->env.rcpt_count = 1;
	b->env.client = "127.0.0.1";
	b->env.helo = cfg(m->q)->hostname;
	b->env.tls = "";
	b->env.client_cert = "none";
	ring_op_init(&b->op_read, RING_READ, bounce_read_cb, b);
	ring_read(m->q->ctx.ring, &b->op_read, m->fd, b->hdr, sizeof(b->hdr), 0);
}

/* True when failed recipients still need their bounce (started here). */
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
		st_write_start(m);
		return true;
	}
	if (m->fd < 0)
		return false; /* next attempt reopens the file */
	bounce_start(m);
	return true;
}

/* Removes a finished message (spool_msg.h says in which order); its file
 * goes with it.  msg_removed follows. */
static void msg_unlink(struct qmsg *m)
{
	int fd = m->fd;

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
		job_done(j); /* logs, now that the outcome is durable */
	}
	assert(m->jobs == 0);
	msg_free(m);
}

static void msg_close(struct qmsg *m)
{
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
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
		any = true;
	}
	return any;
}

static void msg_attempt_over(struct qmsg *m)
{
	struct queue *q = m->q;
	time_t now = time(NULL);
	unsigned delay;

	if (qmsg_recording(m) || m->phase == QMSG_BOUNCING)
		return; /* comes back here when that is done */
	assert(m->phase == QMSG_ACTIVE);
	if (!q->stopping && bounces_pending(m))
		return;
	m->bounce_failed = false;
	if (all_final(m)) {
		/* Every recipient has its outcome on disk: the message goes
		 * (its file to the pool while it is open). */
		qmsg_enter(m, QMSG_REMOVING);
		msg_unlink(m);
		return;
	}
	if (now - m->env.arrival >= (time_t)cfg(q)->queue_lifetime_s && !q->stopping && expire(m)) {
		/* F made durable first; then the bounce (the file is still open) */
		m->dirty = true;
		st_write_start(m);
		return;
	}
	msg_close(m);
	if (q->stopping) {
		qmsg_enter(m, QMSG_STOPPED); /* stays in the spool; freed with the queue */
		return;
	}
	if (m->admin != ADMIN_NONE) {
		admin_apply(m); /* between attempts: held or deleted now */
		return;
	}
	m->attempts++;
	delay = backoff_s(q, m->attempts);
	/* `krelay queue list` shows attempts, the next one and the last error */
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
	st_write_start(m);
}

/* ---- scheduling ----------------------------------------------------------- */

static struct dest *dest_get(struct queue *q, const struct route_hop *hop)
{
	char name[sizeof(((struct dest *)0)->name)];
	struct dest *d;

	route_hop_text(hop, name, sizeof(name));
	for (d = q->dests; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		fatalx("out of memory");
	d->q = q;
	d->hop = *hop;
	memcpy(d->name, name, sizeof(d->name));
	d->next = q->dests;
	q->dests = d;
	return d;
}

static const char *rcpt_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : "";
}

/* The destination recipient i of m goes to, by the current configuration. */
static struct dest *route_rcpt(struct qmsg *m, size_t i)
{
	struct queue *q = m->q;
	struct route_hop hop;

	route_lookup(q->rt->transports, q->rt->has_smarthost ? &q->rt->smarthost : NULL,
	             rcpt_domain(m->env.rcpts[i].addr), &hop);
	return dest_get(q, &hop);
}

/* One job per destination for the recipients i with dest_of[i] set (it is
 * cleared), each appended to its destination's queue. */
static void add_jobs(struct qmsg *m, struct dest **dest_of)
{
	size_t n = m->env.rcpt_count;

	for (size_t i = 0; i < n; i++) {
		struct dest *d = dest_of[i];
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
		j->tx.size = m->env.body_size;
		j->tx.dot_lines = m->env.dot_lines;
		j->tx.final_crlf = m->env.final_crlf;
		j->tx.eight_bit = m->env.eight_bit || m->env.body_type == 8;
		j->tx.smtputf8 = m->env.smtputf8;
		m->jobs++;
		if (d->tail)
			d->tail->next = j;
		else
			d->head = j;
		d->tail = j;
	}
}

static void kick_all(struct queue *q)
{
	for (struct dest *d = q->dests; d != NULL; d = d->next)
		if (d->head != NULL)
			dest_kick(d);
}

static void follow_reload(struct queue *q);

static void schedule(struct qmsg *m)
{
	struct queue *q = m->q;
	size_t n = m->env.rcpt_count;
	struct dest **dest_of = calloc(n, sizeof(*dest_of));

	if (dest_of == NULL)
		fatalx("out of memory");
	follow_reload(q);
	for (size_t i = 0; i < n; i++)
		if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING)
			dest_of[i] = route_rcpt(m, i);
	add_jobs(m, dest_of);
	free(dest_of);
	qmsg_enter(m, QMSG_ACTIVE);
	if (m->jobs == 0) {
		msg_attempt_over(m);
		return;
	}
	kick_all(q);
}

static bool all_delivered(const struct qmsg *m)
{
	for (size_t i = 0; i < m->env.rcpt_count; i++)
		if (m->env.rcpts[i].state != SPOOL_RCPT_DELIVERED)
			return false;
	return true;
}

/* Every recipient was delivered: the message leaves the spool (made durable
 * by the directory fsync) before the deliveries are logged. */
static void remove_start(struct qmsg *m)
{
	m->dirty = false;
	m->logq_writing = m->logq;
	m->logq = NULL;
	qmsg_enter(m, QMSG_REMOVING);
	msg_unlink(m); /* then the jobs are logged */
}

/* Makes the outcomes waiting in m->logq durable, then logs them. */
static void results_go(struct qmsg *m)
{
	if (qmsg_recording(m) || m->logq == NULL)
		return;
	if (m->dirty && m->jobs == 1 && all_delivered(m)) {
		remove_start(m); /* the common case: one durable unlink, no state file */
	} else if (m->dirty) {
		st_write_start(m);
	} else {
		/* nothing final to record: log at once */
		m->logq_writing = m->logq;
		m->logq = NULL;
		state_written(m, 0);
	}
}

/* ---- DeliveryMode=interactive -------------------------------------------- */

static unsigned logq_len(const struct qmsg *m)
{
	unsigned n = 0;

	for (const struct qjob *j = m->logq; j != NULL; j = j->next)
		n++;
	return n;
}

/* Logs the finished jobs of a message that leaves without a trace in the
 * spool (relayed before its reply, or never made durable) and frees it. */
static void held_leave(struct qmsg *m)
{
	struct qjob *j = m->logq, *next;

	m->logq = NULL;
	for (; j != NULL; j = next) {
		next = j->next;
		job_done(j);
	}
	if (m->fd >= 0)
		close(m->fd); /* the dup: the file itself stays the owner's */
	m->fd = -1;
	msg_free(m);
}

static void held_notify(struct qmsg *m, enum queue_held_event ev)
{
	assert(m->q->api_depth == 0);
	m->hold_cb(m->hold_owner, ev);
}

static void hold_ask_commit(struct qmsg *m)
{
	if (m->interactive == QI_WAITING)
		qi_enter(m, QI_COMMITTING);
	held_notify(m, QUEUE_HELD_COMMIT);
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

/* A job of a message not yet durable finished. */
static void held_result(struct qmsg *m)
{
	bool all_done = m->jobs == logq_len(m);

	if (m->interactive == QI_WAITING && all_done && all_delivered(m)) {
		/* relayed: the next hops have it; the client is told, then the
		 * deliveries are logged */
		qi_enter(m, QI_NONE);
		held_notify(m, QUEUE_HELD_RELAYED);
		held_leave(m);
	} else if (m->interactive == QI_WAITING && (all_done || logq_failed(m))) {
		/* the outcomes wait for queue_held_durable; jobs still at
		 * other next hops go on */
		hold_ask_commit(m);
	} else if (m->interactive == QI_ORPHANED && all_done) {
		held_leave(m);
	}
}

static void hold_tick_cb(struct ring_op *op, int res, unsigned flags);

static void hold_tick_arm(struct queue *q)
{
	if (ring_op_busy(&q->op_hold_tick))
		return;
	q->hold_ts.tv_sec = 1;
	q->hold_ts.tv_nsec = 0;
	ring_timeout(q->ctx.ring, &q->op_hold_tick, &q->hold_ts);
}

/* Once a second while messages are held: InteractiveTimeout. */
static void hold_tick_cb(struct ring_op *op, int res, unsigned flags)
{
	struct queue *q = op->owner;
	time_t now = time(NULL);

	for (struct qmsg *m = q->msgs; m != NULL && q->held > 0; m = m->next)
		if (m->interactive == QI_WAITING && now >= m->hold_deadline)
			hold_ask_commit(m);
	if (q->held > 0)
		hold_tick_arm(q);
}

struct qmsg *queue_add_held(struct queue *q, const struct spool_env *env, int fd,
                            uint64_t file_size, queue_held_cb cb, void *owner)
{
	struct qmsg *m;
	int dfd;

	if (q->stopping || env->rcpt_count == 0)
		return NULL;
	if ((dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return NULL;
	q->api_depth++;
	m = msg_add(q, env, dfd, file_size);
	qi_enter(m, QI_WAITING);
	m->hold_cb = cb;
	m->hold_owner = owner;
	m->hold_deadline = time(NULL) + (time_t)cfg(q)->interactive_timeout_s;
	hold_tick_arm(q);
	msg_start(m);
	q->api_depth--;
	return m;
}

void queue_held_commit(struct qmsg *m)
{
	if (m->interactive != QI_WAITING)
		return;
	qi_enter(m, QI_COMMITTING);
}

static void held_durable(struct qmsg *m, int err);

void queue_held_durable(struct qmsg *m, int err)
{
	struct queue *q = m->q;

	q->api_depth++;
	held_durable(m, err); /* (may free m) */
	q->api_depth--;
}

static void held_durable(struct qmsg *m, int err)
{
	assert(m->interactive == QI_COMMITTING);
	if (err < 0) {
		/* the client was told to try again: nothing is recorded */
		qi_enter(m, QI_ORPHANED);
		if (m->phase != QMSG_OPENING && m->jobs == logq_len(m))
			held_leave(m); /* (while opening: msg_open_cb lets go of it) */
		return;
	}
	qi_enter(m, QI_NONE); /* an ordinary queued message from here on */
	if (m->logq != NULL)
		results_go(m);
	else if (m->jobs == 0 && m->phase == QMSG_ACTIVE)
		msg_attempt_over(m); /* its job was dropped (the queue is stopping) */
	/* (while opening: routed as any message once open; stopped: stays) */
}

/* Records a job's outcome in the message; durability, then logging, follow. */
static void job_result(struct qjob *j)
{
	struct qmsg *m = j->m;

	for (size_t k = 0; k < j->n; k++) {
		struct smtp_tx_rcpt *r = &j->rcpts[k];
		size_t i = j->idx[k];
		if (r->code >= 200 && r->code < 300)
			m->env.rcpts[i].state = SPOOL_RCPT_DELIVERED;
		else if (r->code >= 500)
			m->env.rcpts[i].state = SPOOL_RCPT_FAILED;
		free(m->reply[i]);
		m->reply[i] = xstrdup(r->reply[0] ? r->reply : "no reply");
		dsn_of(r, m->dsn[i], sizeof(m->dsn[i]));
		if (r->code >= 200)
			m->dirty = true;
	}
	j->next = m->logq;
	m->logq = j;
	if (m->interactive != QI_NONE)
		held_result(m);
	else
		results_go(m);
}

/* Seconds since the message arrived (Postfix's delay=). */
static double delay_s(const struct qmsg *m)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (double)(now.tv_sec - m->env.arrival) + (double)now.tv_nsec / 1e9;
}

/* The enhanced status code of a reply ("250 2.1.5 Ok" -> "2.1.5"), else
 * one made from the class. */
static void dsn_of(const struct smtp_tx_rcpt *r, char *out, size_t len)
{
	const char *t = r->reply;
	int a, b, c, n = 0;

	if (strlen(t) > 4 && sscanf(t + 4, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 && n > 0 &&
	    (t[4 + n] == ' ' || t[4 + n] == '\0') && a == r->code / 100) {
		snprintf(out, len, "%d.%d.%d", a, b, c);
		return;
	}
	snprintf(out, len, "%d.0.0", r->code >= 200 && r->code < 300 ? 2 : r->code >= 500 ? 5 : 4);
}

/* Logs a finished job, one line per recipient, and frees it. */
static void job_done(struct qjob *j)
{
	struct qmsg *m = j->m;
	struct queue *q = m->q;
	char to[SAFE_LEN(ADDR_LOG_MAX)], relay[SAFE_LEN(sizeof(j->relay))];
	char reply[SAFE_LEN(SMTP_REPLY_MAX)];

	for (size_t k = 0; k < j->n; k++) {
		struct smtp_tx_rcpt *r = &j->rcpts[k];
		const char *status = r->code >= 200 && r->code < 300 ? "sent"
		                     : r->code >= 500                ? "bounced"
		                                                     : "deferred";
		if (status[0] == 's')
			q->stats.delivered++;
		else if (status[0] == 'b')
			q->stats.failed++;
		else
			q->stats.deferred++;
		char dsn[16];
		dsn_of(r, dsn, sizeof(dsn));
		log_info(
		    "%s delivery to=<%s> relay=%s delay=%.2f dsn=%s status=%s tls=\"%s\" "
		    "verified=%s resumed=%s ktls_tx=%s%s%s%s body_path=%s bytes=%llu reply=\"%s\"",
		    m->env.id, safe_log(to, sizeof(to), r->addr),
		    safe_log(relay, sizeof(relay), j->relay[0] ? j->relay : j->d->name), delay_s(m),
		    dsn, status, j->tls, j->verified ? "yes" : "no", j->resumed ? "yes" : "no",
		    j->ktls_tx ? "on" : "off", j->ktls_tx ? "" : " ktls_why=\"",
		    j->ktls_tx ? "" : j->ktls, j->ktls_tx ? "" : "\"",
		    j->tx.body_path && j->tx.body_path[0] ? j->tx.body_path : "none",
		    (unsigned long long)j->tx.body_bytes,
		    safe_log_text(reply, sizeof(reply), r->reply[0] ? r->reply : "no reply"));
	}
	m->jobs--;
	free(j->idx);
	free(j->rcpts);
	free(j);
}

/* ---- connections -------------------------------------------------------------- */

static void conn_ready(void *owner, struct smtp_client *c);
static void conn_done(void *owner, struct smtp_client *c, struct smtp_tx *tx);
static void conn_failed(void *owner, struct smtp_client *c, enum smtp_fail why, const char *text);
static void conn_closed(void *owner, struct smtp_client *c);
static void idle_cb(struct ring_op *op, int res, unsigned flags);

static void conn_free(struct conn *cn)
{
	struct queue *q = cn->d->q;

	if (cn->prev_all)
		cn->prev_all->next_all = cn->next_all;
	else if (q->conn_all == cn)
		q->conn_all = cn->next_all;
	if (cn->next_all)
		cn->next_all->prev_all = cn->prev_all;
	runtime_put(cn->rt);
	free(cn);
}

static void idle_free_cb(struct ring_op *op, int res, unsigned flags)
{
	struct conn *cn = op->owner;

	if (!ring_op_busy(&cn->op_idle) && !ring_op_busy(&cn->op_idle_rm))
		conn_free(cn);
}

static const struct smtp_client_cb client_cb = {conn_ready, conn_done, conn_failed, conn_closed};

static struct qjob *dest_pop(struct dest *d)
{
	struct qjob *j = d->head;

	if (j != NULL) {
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		j->next = NULL;
	}
	return j;
}

/* TLSPolicyTable entry for the next hop's name, else TLSPolicy. */
static int dest_policy(const struct dest *d)
{
	return tls_policy_lookup(d->q->rt->tls_policies, d->hop.host, cfg(d->q)->tls_policy);
}

static void conn_start(struct dest *d, size_t addr_idx, struct qjob *job)
{
	struct queue *q = d->q;
	struct smtp_client_params p;
	struct conn *cn = calloc(1, sizeof(*cn));
	const struct dns_addr *a = &d->addr[addr_idx];

	if (cn == NULL)
		fatalx("out of memory");
	memset(&p, 0, sizeof(p));
	memcpy(&p.addr, &a->sa, a->len);
	p.addrlen = a->len;
	if (p.addr.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&p.addr)->sin6_port = htons(d->hop.port);
	else
		((struct sockaddr_in *)&p.addr)->sin_port = htons(d->hop.port);
	p.host = d->hop.mx && d->nmx > 0 ? d->mx[0].host : d->hop.host;
	p.host_literal = d->hop.literal;
	p.helo = cfg(q)->hostname;
	p.tls_policy = dest_policy(d);
	p.no_ktls = d->no_ktls;
	if (d->clear_next && p.tls_policy == TLS_POLICY_MAY)
		p.tls_policy = TLS_POLICY_NONE;
	p.tls_ctx = q->rt->client_ctx;
	p.tls_session = d->session;
	p.body_path = cfg(q)->body_path;
	p.connect_timeout_s = cfg(q)->connect_timeout_s;
	p.timeout_s = cfg(q)->command_timeout_s;
	p.caps = &q->ctx.srv->caps;
	cn->d = d;
	cn->rt = runtime_hold(q->rt); /* p's strings point into it */
	cn->job = job;
	cn->addr_idx = addr_idx;
	ring_op_init(&cn->op_idle, RING_TIMEOUT, idle_cb, cn);
	ring_op_init(&cn->op_idle_rm, RING_TIMEOUT_REMOVE, idle_free_cb, cn);
	d->active++;
	q->conns++;
	q->stats.connections++;
	cn->next_all = q->conn_all;
	if (q->conn_all)
		q->conn_all->prev_all = cn;
	q->conn_all = cn;
	cn->c = smtp_client_connect(q->ctx.ring, &p, &client_cb, cn);
	if (cn->c == NULL) {
		d->active--;
		q->conns--;
		conn_free(cn);
		if (job != NULL) {
			for (size_t k = 0; k < job->n; k++)
				snprintf(job->rcpts[k].reply, SMTP_REPLY_MAX,
				         "cannot open a socket");
			job_result(job);
		}
	}
}

static void conn_send(struct conn *cn, struct qjob *j)
{
	cn->job = j;
	snprintf(j->relay, sizeof(j->relay), "%s[%s]", cn->d->hop.host, smtp_client_peer(cn->c));
	snprintf(j->tls, sizeof(j->tls), "%s", smtp_client_tls(cn->c));
	snprintf(j->ktls, sizeof(j->ktls), "%s", smtp_client_ktls_why(cn->c));
	j->verified = smtp_client_tls_verified(cn->c);
	j->ktls_tx = smtp_client_ktls_tx(cn->c);
	j->resumed = smtp_client_resumed(cn->c);
	cn->d->q->stats.transactions++;
	smtp_client_send(cn->c, &j->tx);
}

static void idle_arm(struct conn *cn, long long ns)
{
	cn->idle_ts.tv_sec = ns / 1000000000LL;
	cn->idle_ts.tv_nsec = ns % 1000000000LL;
	ring_timeout(cn->d->q->ctx.ring, &cn->op_idle, &cn->idle_ts);
}

static void conn_go_idle(struct conn *cn)
{
	struct dest *d = cn->d;

	cn->idle = true;
	cn->next_idle = d->idle;
	d->idle = cn;
	clock_gettime(CLOCK_MONOTONIC, &cn->idle_since);
	/* One timer at most: one still pending from an earlier idle spell
	 * serves; when it fires, it waits on for what this spell has left. */
	if (ring_op_busy(&cn->op_idle))
		return;
	idle_arm(cn, IDLE_KEEP_S * 1000000000LL);
}

static void conn_unidle(struct conn *cn)
{
	struct conn **p = &cn->d->idle;

	while (*p != NULL && *p != cn)
		p = &(*p)->next_idle;
	if (*p == cn)
		*p = cn->next_idle;
	cn->idle = false;
	cn->next_idle = NULL;
}

/* Gives the connection its next job, or keeps it idle briefly, or quits. */
static void conn_next(struct conn *cn)
{
	struct dest *d = cn->d;
	struct queue *q = d->q;
	struct qjob *j;

	if (cn->messages >= cfg(q)->max_messages_per_connection || q->stopping) {
		cn->quitting = true;
		smtp_client_quit(cn->c);
		return;
	}
	j = dest_pop(d);
	if (j != NULL) {
		conn_send(cn, j);
		return;
	}
	conn_go_idle(cn);
}

static void idle_cb(struct ring_op *op, int res, unsigned flags)
{
	struct conn *cn = op->owner;
	struct timespec now;
	long long left;

	if (!cn->idle || cn->quitting)
		return; /* it found work before the timer fired */
	/* the timer may be one from an earlier idle spell: this spell keeps
	 * its full IDLE_KEEP_S (else busy connections churn every 2 s) */
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = IDLE_KEEP_S * 1000000000LL -
	       ((long long)(now.tv_sec - cn->idle_since.tv_sec) * 1000000000LL +
	        (now.tv_nsec - cn->idle_since.tv_nsec));
	if (left > 1000000 && !cn->d->q->stopping) {
		idle_arm(cn, left);
		return;
	}
	conn_unidle(cn);
	cn->quitting = true;
	smtp_client_quit(cn->c);
}

static void conn_ready(void *owner, struct smtp_client *c)
{
	struct conn *cn = owner;
	struct qjob *j = cn->job;

	if (j != NULL)
		conn_send(cn, j);
	else
		conn_next(cn);
}

static void conn_done(void *owner, struct smtp_client *c, struct smtp_tx *tx)
{
	struct conn *cn = owner;
	struct qjob *j = cn->job;
	struct dest *d = cn->d;
	SSL_SESSION *s;

	cn->job = NULL;
	cn->messages++;
	d->q->stats.bytes += tx->body_bytes;
	if ((s = smtp_client_session(c)) != NULL) {
		SSL_SESSION_free(d->session);
		d->session = s;
	}
	job_result(j);
	conn_next(cn);
}

static void conn_failed(void *owner, struct smtp_client *c, enum smtp_fail why, const char *text)
{
	struct conn *cn = owner;
	struct dest *d = cn->d;
	struct qjob *j = cn->job;
	char name[SAFE_LEN(sizeof(d->name))], why_text[SAFE_LEN(SMTP_REPLY_MAX)];

	if (cn->idle)
		conn_unidle(cn);
	safe_log(name, sizeof(name), d->name);
	safe_log_text(why_text, sizeof(why_text), text);
	if (why == SMTP_FAIL_PROTO) {
		/* the peer's fault: its input stops here, nothing of it is trusted */
		log_info("%s: protocol error from %s: connection closed; recipients without a "
		         "final reply are deferred; reason=\"%s\"",
		         name, smtp_client_peer(c), why_text);
	}
	if (why == SMTP_FAIL_TLS && dest_policy(d) == TLS_POLICY_MAY) {
		/* the seed's "TLS whenever possible": next time, in clear */
		d->clear_next = true;
		log_info(
		    "%s: TLS with %s failed (%s): the next attempt goes in clear (TLSPolicy=may)",
		    name, smtp_client_peer(c), why_text);
	}
	if (why == SMTP_FAIL_TLS_KEYUPDATE) {
		/* OpenSSL 3.0 would change only its own key: the connection was
		 * closed; later ones to this destination keep TLS in user space */
		d->no_ktls = true;
		log_info("%s: TLS KeyUpdate from %s on a kTLS connection: closed; the message is "
		         "retried and this destination goes without kTLS",
		         name, smtp_client_peer(c));
	}
	cn->job = NULL;
	if (j == NULL)
		return;
	if (why == SMTP_FAIL_CONNECT && cn->addr_idx + 1 < d->naddr && !d->q->stopping) {
		/* try the next address (next MX) with the same job */
		d->active--;
		d->q->conns--;
		conn_start(d, cn->addr_idx + 1, j);
		d->active++; /* conn_closed of this one gives it back */
		d->q->conns++;
		return;
	}
	for (size_t k = 0; k < j->n; k++) {
		if (j->rcpts[k].code != 0)
			continue;
		snprintf(j->rcpts[k].reply, SMTP_REPLY_MAX, "%s", text);
	}
	if (j->relay[0] == '\0')
		snprintf(j->relay, sizeof(j->relay), "%s[%s]", d->hop.host, smtp_client_peer(c));
	job_result(j);
}

static void conn_closed(void *owner, struct smtp_client *c)
{
	struct conn *cn = owner;
	struct dest *d = cn->d;
	struct queue *q = d->q;

	if (cn->idle)
		conn_unidle(cn);
	if (ring_op_busy(&cn->op_idle)) {
		/* the idle timer still points at cn: fire it now; it frees cn */
		cn->c = NULL;
		cn->quitting = true;
		cn->idle = false;
		cn->op_idle.cb = idle_free_cb;
		if (!ring_op_busy(&cn->op_idle_rm))
			ring_timeout_remove(q->ctx.ring, &cn->op_idle_rm, &cn->op_idle);
	} else {
		conn_free(cn);
	}
	d->active--;
	q->conns--;
	dest_kick(d);
}

/* ---- next-hop addresses ---------------------------------------------------- */

static void resolved(struct dest *d, const char *error)
{
	d->resolving = false;
	d->resolved = error == NULL;
	d->resolved_at = time(NULL);
	snprintf(d->resolve_error, sizeof(d->resolve_error), "%s", error ? error : "");
	dest_kick(d);
}

static void mx_addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n);

/* Looks up the next MX host's addresses; the list grows in MX order. */
static void mx_next_host(struct dest *d)
{
	if (d->q->stopping) {
		d->resolving = false;
		return;
	}
	if (d->mx_next >= d->nmx) {
		resolved(d, d->naddr > 0 ? NULL : "no address for any MX host");
		return;
	}
	d->q->dns_pending++;
	dns_query_addr(d->q->dns, d->mx[d->mx_next++].host, mx_addr_cb, d);
}

static void add_addrs(struct dest *d, const struct dns_addr *a, size_t n)
{
	for (size_t i = 0; i < n && d->naddr < DNS_ADDR_MAX; i++)
		d->addr[d->naddr++] = a[i];
}

static void mx_addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct dest *d = arg;

	d->q->dns_pending--;
	if (st == DNS_OK)
		add_addrs(d, a, n);
	mx_next_host(d);
}

static void host_addr_cb(void *arg, enum dns_status st, const struct dns_addr *a, size_t n)
{
	struct dest *d = arg;

	d->q->dns_pending--;
	if (d->q->stopping) {
		d->resolving = false;
		return;
	}
	if (st == DNS_OK) {
		add_addrs(d, a, n);
		resolved(d, NULL);
	} else {
		resolved(d, st == DNS_TEMPFAIL ? "DNS lookup failed temporarily"
		                               : "host not found (no A/AAAA record)");
		if (st != DNS_TEMPFAIL)
			d->resolve_error[0] = '5'; /* permanent: marks a 5xx below */
	}
}

static unsigned rnd(void *ctx, unsigned bound)
{
	return bound ? (unsigned)random() % bound : 0;
}

static void mx_cb(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
	struct dest *d = arg;
	int k;

	d->q->dns_pending--;
	if (d->q->stopping) {
		d->resolving = false;
		return;
	}
	if (st == DNS_NODATA || (st == DNS_OK && n == 0)) {
		/* RFC 5321 5.1: no MX, the domain itself is the host */
		d->q->dns_pending++;
		dns_query_addr(d->q->dns, d->hop.host, host_addr_cb, d);
		return;
	}
	if (st == DNS_NXDOMAIN) {
		resolved(d, "5domain does not exist");
		return;
	}
	if (st != DNS_OK) {
		resolved(d, "DNS MX lookup failed temporarily");
		return;
	}
	memcpy(d->mx, mx, (n < DNS_MX_MAX ? n : DNS_MX_MAX) * sizeof(*mx));
	k = route_order_mx(d->mx, n < DNS_MX_MAX ? n : DNS_MX_MAX, rnd, NULL);
	if (k < 0) {
		resolved(d, "5null MX: the domain accepts no mail (RFC 7505)");
		return;
	}
	d->nmx = (size_t)k;
	d->mx_next = 0;
	mx_next_host(d);
}

static void resolve(struct dest *d)
{
	struct sockaddr_in *s4;
	struct sockaddr_in6 *s6;

	d->naddr = d->nmx = 0;
	d->resolving = true;
	if (d->hop.literal) {
		struct dns_addr a;
		memset(&a, 0, sizeof(a));
		s4 = (struct sockaddr_in *)&a.sa;
		s6 = (struct sockaddr_in6 *)&a.sa;
		if (inet_pton(AF_INET, d->hop.host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			a.len = sizeof(*s4);
		} else if (inet_pton(AF_INET6, d->hop.host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			a.len = sizeof(*s6);
		}
		add_addrs(d, &a, a.len ? 1 : 0);
		resolved(d, a.len ? NULL : "5bad address literal");
	} else if (d->hop.mx) {
		d->q->dns_pending++;
		dns_query_mx(d->q->dns, d->hop.host, mx_cb, d);
	} else {
		d->q->dns_pending++;
		dns_query_addr(d->q->dns, d->hop.host, host_addr_cb, d);
	}
}

/* Fails every queued job of d with the resolver's verdict. */
static void dest_fail_all(struct dest *d)
{
	struct qjob *j;
	bool perm = d->resolve_error[0] == '5';
	const char *why = perm ? d->resolve_error + 1 : d->resolve_error;

	while ((j = dest_pop(d)) != NULL) {
		for (size_t k = 0; k < j->n; k++) {
			j->rcpts[k].code = perm ? 550 : 0;
			snprintf(j->rcpts[k].reply, SMTP_REPLY_MAX, "%s %s: %s",
			         perm ? "550 5.1.2" : "451 4.4.3", d->hop.host, why);
		}
		job_result(j);
	}
}

/* DestinationConcurrency is for the whole relay: each worker opens its
 * share of it, at least one connection (so max(limit, Workers) in all). */
static unsigned dest_limit(const struct queue *q)
{
	unsigned n = q->ctx.srv->workers, c = cfg(q)->destination_concurrency;
	unsigned share = c / n + (q->ctx.worker_index < c % n);

	return share > 0 ? share : 1;
}

static void dest_kick(struct dest *d)
{
	struct queue *q = d->q;

	if (d->head == NULL || d->resolving)
		return;
	if (!d->resolved || time(NULL) - d->resolved_at > 300) {
		if (d->resolved_at != 0 && !d->resolved && time(NULL) - d->resolved_at < 1) {
			dest_fail_all(d); /* the lookup just failed: no point asking again */
			return;
		}
		resolve(d);
		return;
	}
	while (d->head != NULL && d->idle != NULL) {
		struct conn *cn = d->idle;
		conn_unidle(cn);
		conn_send(cn, dest_pop(d));
	}
	while (d->head != NULL && d->active < dest_limit(q))
		conn_start(d, 0, dest_pop(d));
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
	ring_op_init(&q->op_hold_tick, RING_TIMEOUT, hold_tick_cb, q);
	q->rt_gen = atomic_load(&ctx->srv->generation);
	q->rt = runtime_get(ctx->srv);
	c = &q->rt->cfg;
	if (dns_init(&q->dns, ctx->ring, c->dns_server, err, errlen) < 0)
		goto fail;
	return q;
fail:
	runtime_put(q->rt);
	free(q);
	return NULL;
}

/* The connections d keeps open for reuse say QUIT. */
static void dest_quit_idle(struct dest *d)
{
	while (d->idle != NULL) {
		struct conn *cn = d->idle;
		conn_unidle(cn);
		cn->quitting = true;
		smtp_client_quit(cn->c);
	}
}

/* After a reload (SIGHUP): new connections out take the new configuration
 * (SmartHost, TransportTable, TLSPolicy, TLSPolicyTable, client
 * certificate...).  Connections under way finish their message with the
 * one they were opened with; idle ones, opened with the old, are closed;
 * TLS sessions kept for resumption and the "next time in clear" memory go;
 * jobs still waiting for a connection are routed again. */
static void follow_reload(struct queue *q)
{
	unsigned gen = atomic_load(&q->ctx.srv->generation);
	struct runtime *old = q->rt;
	struct qjob *waiting = NULL, *j;

	if (gen == q->rt_gen || q->stopping)
		return;
	q->rt_gen = gen;
	q->rt = runtime_get(q->ctx.srv);
	for (struct dest *d = q->dests; d != NULL; d = d->next) {
		dest_quit_idle(d);
		SSL_SESSION_free(d->session);
		d->session = NULL;
		d->clear_next = false;
		while ((j = dest_pop(d)) != NULL) {
			j->next = waiting;
			waiting = j;
		}
	}
	for (; waiting != NULL; waiting = j) {
		struct qmsg *m = waiting->m;
		struct dest **dest_of = calloc(m->env.rcpt_count, sizeof(*dest_of));

		j = waiting->next;
		if (dest_of == NULL)
			fatalx("out of memory");
		for (size_t k = 0; k < waiting->n; k++)
			dest_of[waiting->idx[k]] = route_rcpt(m, waiting->idx[k]);
		m->jobs--;
		free(waiting->idx);
		free(waiting->rcpts);
		free(waiting);
		add_jobs(m, dest_of);
		free(dest_of);
	}
	runtime_put(old);
	log_info("queue: worker %u: new connections out use the reloaded configuration",
	         q->ctx.worker_index);
	kick_all(q);
}

void queue_stop(struct queue *q)
{
	q->stopping = true;
	for (struct dest *d = q->dests; d != NULL; d = d->next)
		dest_quit_idle(d);
	/* Connections that have not begun to send a body end now (their
	 * recipients stay pending: a silent next hop must not hold the stop);
	 * those sending one, or waiting for the reply to its end, finish. */
	for (struct conn *cn = q->conn_all; cn != NULL; cn = cn->next_all)
		if (cn->c != NULL && !cn->quitting && !cn->idle)
			smtp_client_stop(cn->c);
	/* Jobs not yet on a connection stay in the spool for the next start. */
	for (struct dest *d = q->dests; d != NULL; d = d->next) {
		struct qjob *j;
		while ((j = dest_pop(d)) != NULL) {
			j->m->jobs--;
			free(j->idx);
			free(j->rcpts);
			free(j);
		}
	}
	for (struct qmsg *m = q->msgs, *next; m != NULL; m = next) {
		next = m->next;
		if (m->interactive == QI_WAITING && m->jobs == 0 && m->phase != QMSG_OPENING)
			hold_ask_commit(m); /* into the spool, for the next start */
		if (m->jobs == 0 && !qmsg_recording(m) && m->phase != QMSG_OPENING &&
		    m->phase != QMSG_BOUNCING && m->fd >= 0) {
			close(m->fd);
			m->fd = -1;
		}
	}
	dns_free(q->dns); /* outstanding queries come back cancelled */
	q->dns = NULL;
}

bool queue_idle(const struct queue *q)
{
	if (q->conns > 0 || q->dns_pending > 0)
		return false;
	if (ring_op_busy(&q->op_hold_tick))
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
		if (q->msgs->fd >= 0)
			close(q->msgs->fd);
		msg_free(q->msgs);
	}
	while (q->dests != NULL) {
		struct dest *d = q->dests;
		q->dests = d->next;
		SSL_SESSION_free(d->session);
		free(d);
	}
	dns_free(q->dns); /* NULL after queue_stop */
	runtime_put(q->rt);
	free(q);
}

const struct queue_stats *queue_stats(const struct queue *q)
{
	return &q->stats;
}

/* QueueDirectory/SUB/NAME, for the rare operator paths below (plain calls). */
static void sub_path(struct queue *q, char *buf, size_t len, const char *sub, const char *name)
{
	snprintf(buf, len, "%s/%s/%s", cfg(q)->queue_directory, sub, name);
}

/* Moves queue/ID (and its state file, first) to hold/, or deletes it (the
 * message first, then its state), in the order spool_recover relies on. */
static void admin_files(struct queue *q, const char *id, int what)
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
	snprintf(a, sizeof(a), "%s/hold", cfg(q)->queue_directory);
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
	snprintf(a, sizeof(a), "%s/hold", cfg(q)->queue_directory);
	if ((dfd = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	fsync(q->ctx.spool->queue_dfd);
	log_info("%s: held (krelay queue hold)", id);
}

static void admin_done(struct queue *q, const char *id, int what)
{
	char path[4096], name[SPOOL_ID_LEN + 8];

	snprintf(name, sizeof(name), "%s.%s", what == ADMIN_HOLD ? "hold" : "delete", id);
	sub_path(q, path, sizeof(path), "request", name);
	unlink(path);
}

/* No attempt of m is under way: what the operator asked is done, and the
 * queue lets go of it. */
static void admin_apply(struct qmsg *m)
{
	struct queue *q = m->q;
	int what = m->admin;
	char id[SPOOL_ID_LEN + 1];

	memcpy(id, m->env.id, sizeof(id));
	msg_close(m);
	msg_free(m);
	admin_files(q, id, what);
	admin_done(q, id, what);
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

	snprintf(path, sizeof(path), "%s/request", cfg(q)->queue_directory);
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
		const char *dot = strchr(names[i], '.');
		int what = strncmp(names[i], "hold.", 5) == 0     ? ADMIN_HOLD
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

	follow_reload(q);
	queue_requests(q);
	dir = cfg(q)->queue_directory;
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
