/* bounce: a delivery status notification (RFC 3464) for the recipients of
 * a message that failed for good (state F), queued as a new message from
 * <> to its sender.  It reads the message's headers (the start of its
 * file), has dsn.c format the report, writes it through a spool_tx like
 * any received message, and hands it to the queue; then
 * qmsg_bounce_done marks the recipients B (or retries the bounce with
 * the next attempt). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsn.h"
#include "log.h"
#include "queue_int.h"
#include "safe.h"

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

	if (queued) {
		char to[SAFE_LEN(ADDR_LOG_MAX)];
		log_info("%s bounce id=%s to=<%s> status=queued", m->env.id, b->env.id,
		         safe_log(to, sizeof(to), m->env.sender));
		struct spool_loc loc;
		spool_tx_take(&b->tx, &loc);
		queue_add(m->q, &b->env, &loc);
	}
	free(b->body);
	free(b);
	qmsg_bounce_done(m, queued);
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
	snprintf(boundary, sizeof(boundary), "%s/%s", m->env.id, queue_cfg(q)->hostname);
	in.reporting_mta = queue_cfg(q)->hostname;
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
	b->tx.segment_ok = true; /* it goes to the queue: a segment will do */
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

void bounce_start(struct qmsg *m)
{
	struct bounce *b = calloc(1, sizeof(*b));

	if (b == NULL)
		fatalx("out of memory");
	b->m = m;
	b->env.arrival = time(NULL);
	b->env.final_crlf = true;
	/* RFC 8689 section 5: the report of a REQUIRETLS message (its headers
	 * only, as every report here) asks for REQUIRETLS too */
	b->env.requiretls = m->env.requiretls;
	b->env.sender = "";
	b->rcpt.addr = m->env.sender;
	b->rcpt.state = SPOOL_RCPT_PENDING;
	b->env.rcpts = &b->rcpt;
	b->env.rcpt_count = 1;
	b->env.client = "127.0.0.1";
	b->env.helo = queue_cfg(m->q)->hostname;
	b->env.tls = "";
	b->env.client_cert = "none";
	ring_op_init(&b->op_read, RING_READ, bounce_read_cb, b);
	ring_read(m->q->ctx.ring, &b->op_read, m->fd, b->hdr,
	          m->env.body_size < sizeof(b->hdr) ? (size_t)m->env.body_size : sizeof(b->hdr),
	          m->body_off);
}
