/* queue_conn: connections out.  A connection is opened for a job, then
 * pulls the next job of its destination when it is done with one (as
 * OpenSMTPD's sessions do), waits idle a little for more, and quits after
 * MaxMessagesPerConnection.  The SMTP dialogue itself is smtp_client's;
 * here are its callbacks, the idle pool, the next address after a
 * failed connect, and what a failure teaches the destination (TLS in
 * clear next time under "may", no kTLS after a KeyUpdate). */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "queue_int.h"
#include "safe.h"
#include "tls_policy.h"

#define IDLE_KEEP_S 2 /* how long an idle connection waits for the next message */

static const char *const qconn_state_name[QCONN_STATES] = {
    [QCONN_CONNECTING] = "connecting", [QCONN_SENDING] = "sending", [QCONN_IDLE] = "idle",
    [QCONN_QUITTING] = "quitting",     [QCONN_CLOSED] = "closed",
};

/* A failure or the end of the client may come in any state but the last. */
#define QCONN_ENDING (TO(QCONN_QUITTING) | TO(QCONN_CLOSED))
static const unsigned qconn_may_enter[QCONN_STATES] = {
    [QCONN_CONNECTING] = TO(QCONN_SENDING) | TO(QCONN_IDLE) | QCONN_ENDING,
    [QCONN_SENDING] = TO(QCONN_SENDING) | TO(QCONN_IDLE) | QCONN_ENDING,
    [QCONN_IDLE] = TO(QCONN_SENDING) | QCONN_ENDING,
    [QCONN_QUITTING] = QCONN_ENDING,
    [QCONN_CLOSED] = 0,
};

static void qconn_enter(struct qconn *cn, enum qconn_state to)
{
	static const struct state_table qconn_states = {"connection", qconn_state_name,
	                                                qconn_may_enter, QCONN_STATES};

	cn->state = state_enter(&qconn_states, cn->state, to, "%s#%u", cn->d->name, cn->seq);
}

/* The two counts of open (or opening) connections: the destination's
 * (its concurrency) and the queue's (queue_idle). */
static void qconn_count(struct qdest *d, int delta)
{
	d->active += delta;
	d->q->conns += delta;
	metrics_gauge_set(d->q->ctx.mw, MG_CONNS_OUT, d->q->conns);
}

static void conn_ready(void *owner, struct smtp_client *c);
static void conn_done(void *owner, struct smtp_client *c, struct smtp_tx *tx);
static void conn_failed(void *owner, struct smtp_client *c, enum smtp_fail why, const char *text);
static void conn_closed(void *owner, struct smtp_client *c);
static void idle_cb(struct ring_op *op, int res, unsigned flags);
static void idle_rm_cb(struct ring_op *op, int res, unsigned flags);

static const struct smtp_client_cb client_cb = {conn_ready, conn_done, conn_failed, conn_closed};

static void conn_free(struct qconn *cn)
{
	struct queue *q = cn->q;

	if (cn->prev_all)
		cn->prev_all->next_all = cn->next_all;
	else if (q->conn_all == cn)
		q->conn_all = cn->next_all;
	if (cn->next_all)
		cn->next_all->prev_all = cn->prev_all;
	runtime_put(cn->rt);
	free(cn);
}

/* A closed connection goes once neither idle timer op points at it. */
static void free_when_done(struct qconn *cn)
{
	if (!ring_op_busy(&cn->op_idle) && !ring_op_busy(&cn->op_idle_rm))
		conn_free(cn);
}

/* An egress source has one address family: the first address of d from
 * addr_idx on that it can reach, or d->naddr. */
static size_t reachable_from(const struct qdest *d, size_t addr_idx,
                             const struct shaping_source *so)
{
	while (so != NULL && addr_idx < d->naddr &&
	       d->addr[addr_idx].sa.ss_family != so->addr.ss_family)
		addr_idx++;
	return addr_idx;
}

void qconn_start(struct qdest *d, size_t addr_idx, struct qjob *job,
                 const struct qshaping_pick *pick)
{
	struct queue *q = d->q;
	const struct config *c = queue_cfg(q);
	struct smtp_client_params p;
	bool sts;
	struct qconn *cn = calloc(1, sizeof(*cn));
	const struct shaping_source *so = NULL;
	const struct dns_addr *a;

	if (cn == NULL)
		fatalx("out of memory");
	memset(&p, 0, sizeof(p));
	if (pick != NULL) {
		cn->shaped = true;
		cn->pick = *pick;
		if (pick->source >= 0)
			so = shaping_source(q->rt->shaping, (size_t)pick->source);
	}
	cn->q = q;
	cn->d = d;
	if ((addr_idx = reachable_from(d, addr_idx, so)) == d->naddr) {
		char text[SMTP_REPLY_MAX];

		snprintf(text, sizeof(text),
		         "451 4.4.0 egress source %s (%s) has no address of the family of %.200s's "
		         "addresses",
		         so->name, so->addr_text, d->hop.host);
		qshaping_conn_end(cn);
		free(cn);
		if (job != NULL)
			qjob_fail(job, 451, text);
		return;
	}
	a = &d->addr[addr_idx];
	if (so != NULL) {
		memcpy(&p.bind_addr, &so->addr, so->addrlen);
		p.bind_len = so->addrlen;
	}
	memcpy(&p.addr, &a->sa, a->len);
	p.addrlen = a->len;
	if (p.addr.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&p.addr)->sin6_port = htons(d->hop.port);
	else
		((struct sockaddr_in *)&p.addr)->sin_port = htons(d->hop.port);
	p.host = qdest_host_of(d, addr_idx);
	p.host_literal = d->hop.literal;
	p.helo = so != NULL && so->ehlo[0] != '\0' ? so->ehlo : c->hostname;
	p.tls_policy = qdest_conn_policy(d, addr_idx, &p.dane, &sts);
	cn->tls_policy = p.tls_policy;
	cn->sts = sts;
	p.no_ktls = d->tls.no_ktls;
	if (d->tls.clear_next && p.tls_policy == TLS_POLICY_MAY)
		p.tls_policy = TLS_POLICY_NONE;
	p.tls_ctx = sts ? q->rt->sts_ctx : q->rt->client_ctx;
	p.verify_auth = sts ? "mta-sts" : "pkix";
	if (d->sts_testing && p.tls_policy == TLS_POLICY_MAY && q->rt->sts_ctx != NULL) {
		/* MTA-STS testing: the peer is checked as enforce would, the
		 * result reported (TLSRPT), the delivery not held to it */
		p.tls_ctx = q->rt->sts_ctx;
		p.check_only = true;
		cn->sts_check = true;
	}
	p.smtps = d->hop.smtps;
	/* no resumption under DANE: a resumed session skips the certificate,
	 * and the one kept may come from a connection nobody authenticated */
	p.tls_session = p.tls_policy == TLS_POLICY_DANE ? NULL : d->tls.session;
	p.body_path = c->body_path;
	p.connect_timeout_s = cn->shaped && cn->pick.lim.connect_timeout_s != 0
	                          ? cn->pick.lim.connect_timeout_s
	                          : c->connect_timeout_s;
	p.timeout_s = c->command_timeout_s;
	p.caps = &q->ctx.srv->caps;
	cn->seq = ++q->conn_seq;
	cn->rt = runtime_hold(q->rt); /* p's strings point into it */
	cn->job = job;
	cn->addr_idx = addr_idx;
	cn->state = QCONN_CONNECTING;
	ring_op_init(&cn->op_idle, RING_TIMEOUT, idle_cb, cn);
	ring_op_init(&cn->op_idle_rm, RING_TIMEOUT_REMOVE, idle_rm_cb, cn);
	qconn_count(d, +1);
	q->stats.connections++;
	metrics_count(q->ctx.mw, MC_CONN_OUT, 1);
	cn->next_all = q->conn_all;
	if (q->conn_all)
		q->conn_all->prev_all = cn;
	q->conn_all = cn;
	log_trace("connection %s#%u opening", d->name, cn->seq);
	cn->c = smtp_client_connect(q->ctx.ring, &p, &client_cb, cn);
	if (cn->c == NULL) {
		char text[SMTP_REPLY_MAX];

		if (so != NULL)
			snprintf(text, sizeof(text),
			         "cannot open a socket from egress source %s (%s): %s", so->name,
			         so->addr_text, strerror(errno));
		else
			snprintf(text, sizeof(text), "cannot open a socket: %s", strerror(errno));
		qconn_count(d, -1);
		qshaping_conn_end(cn);
		conn_free(cn);
		if (job != NULL)
			qjob_fail(job, 0, text);
	}
}

/* RFC 8689 section 4.2.1: a REQUIRETLS message goes only to a peer
 * authenticated by DANE, or by its certificate (PKIX) when its name came
 * from the configuration or from a DNSSEC-validated MX lookup.  NULL when
 * cn is such a path, else why not. */
static const char *requiretls_refusal(const struct qconn *cn)
{
	const struct qdest *d = cn->d;
	const char *auth = smtp_client_auth(cn->c);

	if (strncmp(auth, "dane-", 5) == 0 || strcmp(auth, "mta-sts") == 0)
		return NULL;
	if (strcmp(auth, "pkix") == 0)
		return !d->hop.mx || (d->dane && d->mx_secure)
		           ? NULL
		           : "the next hop's certificate was verified, but its MX records were not "
		             "DNSSEC-validated";
	return smtp_client_tls(cn->c)[0] == '\0'
	           ? "the connection to the next hop is not encrypted"
	           : "the next hop was not authenticated (TLSPolicy dane or verify needed)";
}

void qconn_send(struct qconn *cn, struct qjob *j)
{
	struct delivery_facts *f = &j->facts;

	cn->job = j;
	snprintf(f->relay, sizeof(f->relay), "%s[%s]", cn->d->hop.host, smtp_client_peer(cn->c));
	snprintf(f->tls, sizeof(f->tls), "%s", smtp_client_tls(cn->c));
	snprintf(f->ktls_why, sizeof(f->ktls_why), "%s", smtp_client_ktls_why(cn->c));
	f->verified = smtp_client_tls_verified(cn->c);
	f->auth = smtp_client_auth(cn->c);
	j->tx.requiretls_refused = j->tx.requiretls ? requiretls_refusal(cn) : NULL;
	f->ktls_tx = smtp_client_ktls_tx(cn->c);
	f->resumed = smtp_client_resumed(cn->c);
	cn->d->q->stats.transactions++;
	qconn_enter(cn, QCONN_SENDING);
	cn->in_send = true;
	smtp_client_send(cn->c, &j->tx);
	cn->in_send = false;
}

/* ---- the idle pool ------------------------------------------------------- */

static void idle_arm(struct qconn *cn, long long ns)
{
	cn->idle_ts.tv_sec = ns / 1000000000LL;
	cn->idle_ts.tv_nsec = ns % 1000000000LL;
	ring_timeout(cn->d->q->ctx.ring, &cn->op_idle, &cn->idle_ts);
}

/* How long an idle connection waits for a next message (ns). */
static long long idle_keep_ns(const struct qconn *cn)
{
	return (cn->shaped && cn->pick.lim.idle_timeout_s != 0 ? cn->pick.lim.idle_timeout_s
	                                                       : IDLE_KEEP_S) *
	       1000000000LL;
}

static void go_idle(struct qconn *cn)
{
	struct qdest *d = cn->d;

	qconn_enter(cn, QCONN_IDLE);
	cn->next_idle = d->idle;
	d->idle = cn;
	clock_gettime(CLOCK_MONOTONIC, &cn->idle_since);
	/* One timer at most: one still pending from an earlier idle spell
	 * serves; when it fires, it waits on for what this spell has left. */
	if (ring_op_busy(&cn->op_idle))
		return;
	idle_arm(cn, idle_keep_ns(cn));
}

/* Out of the idle list (its state is the caller's to change). */
static void unidle(struct qconn *cn)
{
	struct qconn **p = &cn->d->idle;

	while (*p != NULL && *p != cn)
		p = &(*p)->next_idle;
	if (*p == cn)
		*p = cn->next_idle;
	cn->next_idle = NULL;
}

void qconn_unidle(struct qconn *cn)
{
	unidle(cn);
}

struct qconn *qconn_take_idle(struct qdest *d)
{
	struct qconn *cn = d->idle;

	if (cn != NULL)
		unidle(cn);
	return cn;
}

static void quit(struct qconn *cn)
{
	qconn_enter(cn, QCONN_QUITTING);
	smtp_client_quit(cn->c);
}

void qconn_quit_idle(struct qdest *d)
{
	struct qconn *cn;

	while ((cn = qconn_take_idle(d)) != NULL)
		quit(cn);
}

void qconn_stop_all(struct queue *q)
{
	/* Connections that have not begun to send a body end now (their
	 * recipients stay pending: a silent next hop must not hold the stop);
	 * those sending one, or waiting for the reply to its end, finish. */
	for (struct qconn *cn = q->conn_all; cn != NULL; cn = cn->next_all)
		if (cn->state == QCONN_CONNECTING || cn->state == QCONN_SENDING)
			smtp_client_stop(cn->c);
}

/* Gives the connection its next job, or keeps it idle briefly, or quits. */
static void conn_next(struct qconn *cn)
{
	struct qdest *d = cn->d;
	struct queue *q = d->q;
	unsigned most = queue_cfg(q)->max_messages_per_connection;

	if (cn->shaped && cn->pick.lim.max_deliveries != 0 && cn->pick.lim.max_deliveries < most)
		most = cn->pick.lim.max_deliveries;
	if (cn->messages >= most || q->stopping) {
		quit(cn);
		return;
	}
	if (d->head != NULL && (!cn->shaped || qshaping_message(cn))) {
		qconn_send(cn, qdest_pop(d));
		return;
	}
	go_idle(cn); /* shaping: its destination's timer gives it the job */
}

static void idle_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qconn *cn = op->owner;
	struct timespec now;
	long long left;

	if (cn->state == QCONN_CLOSED) {
		free_when_done(cn);
		return;
	}
	if (cn->state != QCONN_IDLE)
		return; /* it found work before the timer fired */
	/* the timer may be one from an earlier idle spell: this spell keeps
	 * its full IDLE_KEEP_S (else busy connections churn every 2 s) */
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = idle_keep_ns(cn) - ((long long)(now.tv_sec - cn->idle_since.tv_sec) * 1000000000LL +
	                           (now.tv_nsec - cn->idle_since.tv_nsec));
	if (left > 1000000 && !cn->d->q->stopping) {
		idle_arm(cn, left);
		return;
	}
	unidle(cn);
	quit(cn);
}

static void idle_rm_cb(struct ring_op *op, int res, unsigned flags)
{
	struct qconn *cn = op->owner;

	if (cn->state == QCONN_CLOSED)
		free_when_done(cn);
}

/* ---- smtp_client's callbacks ---------------------------------------------- */

static void conn_ready(void *owner, struct smtp_client *c)
{
	struct qconn *cn = owner;
	struct qjob *j = cn->job;

	assert(!cn->in_send);
	if (smtp_client_tls(c)[0] != '\0')
		metrics_tls(cn->q->ctx.mw, false, smtp_client_tls(c), smtp_client_ktls_tx(c), -1);
	/* a session: TLS as its policy asked (or, without one, clear text) */
	qdest_tlsrpt(cn->d, cn->addr_idx,
	             smtp_client_tls(c)[0] == '\0' ? TLSRPT_STARTTLS_NOT_SUPPORTED
	             : cn->sts_check && smtp_client_verify_result(c) != X509_V_OK
	                 ? tlsrpt_from_verify(smtp_client_verify_result(c), TLSRPT_STS)
	                 : TLSRPT_SUCCESS,
	             c);
	if (j != NULL)
		qconn_send(cn, j);
	else
		conn_next(cn);
}

static void conn_done(void *owner, struct smtp_client *c, struct smtp_tx *tx)
{
	struct qconn *cn = owner;
	struct qjob *j = cn->job;
	struct qdest *d = cn->d;
	SSL_SESSION *s;

	assert(!cn->in_send);
	cn->job = NULL;
	cn->messages++;
	d->q->stats.bytes += tx->body_bytes;
	qshaping_tx(cn, tx);
	metrics_count(d->q->ctx.mw, MC_RELAYED_BYTES, tx->body_bytes);
	if ((s = smtp_client_session(c)) != NULL) {
		SSL_SESSION_free(d->tls.session);
		d->tls.session = s;
	}
	qjob_finished(j);
	conn_next(cn);
}

static void conn_failed(void *owner, struct smtp_client *c, enum smtp_fail why, const char *text)
{
	struct qconn *cn = owner;
	struct qdest *d = cn->d;
	struct qjob *j = cn->job;
	char name[SAFE_LEN(sizeof(d->name))], why_text[SAFE_LEN(SMTP_REPLY_MAX)];

	assert(!cn->in_send);
	if (cn->state == QCONN_IDLE)
		unidle(cn);
	qconn_enter(cn, QCONN_QUITTING); /* closed follows */
	safe_log(name, sizeof(name), d->name);
	safe_log_text(why_text, sizeof(why_text), text);
	if (why == SMTP_FAIL_PROTO) {
		/* the peer's fault: its input stops here, nothing of it is trusted */
		log_info("%s: protocol error from %s: connection closed; recipients without a "
		         "final reply are deferred; reason=\"%s\"",
		         name, smtp_client_peer(c), why_text);
	}
	if (why == SMTP_FAIL_TLS)
		qdest_tlsrpt(d, cn->addr_idx,
		             smtp_client_starttls_missing(c)
		                 ? TLSRPT_STARTTLS_NOT_SUPPORTED
		                 : tlsrpt_from_verify(smtp_client_verify_result(c),
		                                      cn->tls_policy == TLS_POLICY_DANE
		                                          ? TLSRPT_TLSA
		                                      : cn->sts ? TLSRPT_STS
		                                                : TLSRPT_NO_POLICY),
		             c);
	if (why == SMTP_FAIL_TLS && cn->tls_policy == TLS_POLICY_MAY) {
		/* the seed's "TLS whenever possible": next time, in clear */
		d->tls.clear_next = true;
		log_info(
		    "%s: TLS with %s failed (%s): the next attempt goes in clear (TLSPolicy=may)",
		    name, smtp_client_peer(c), why_text);
	}
	if (why == SMTP_FAIL_TLS_KEYUPDATE) {
		/* OpenSSL 3.0 would change only its own key: the connection was
		 * closed; later ones to this destination keep TLS in user space */
		d->tls.no_ktls = true;
		log_info("%s: TLS KeyUpdate from %s on a kTLS connection: closed; the message is "
		         "retried and this destination goes without kTLS",
		         name, smtp_client_peer(c));
	}
	if (cn->shaped && j != NULL)
		qshaping_tx(cn, &j->tx); /* a 421 to RCPT, then the close */
	if (cn->shaped)
		qshaping_reply(cn, text); /* a refused greeting, a 421 and close */
	cn->job = NULL;
	if (j == NULL)
		return;
	if (why == SMTP_FAIL_CONNECT && cn->addr_idx + 1 < d->naddr && !d->q->stopping) {
		/* try the next address (next MX) with the same job */
		struct qshaping_pick pick;

		if (!cn->shaped)
			qconn_start(d, cn->addr_idx + 1, j, NULL);
		else if (qshaping_again(cn, &pick))
			qconn_start(d, cn->addr_idx + 1, j, &pick);
		else
			qjob_fail(j, 0, text);
		return;
	}
	if (j->facts.relay[0] == '\0')
		snprintf(j->facts.relay, sizeof(j->facts.relay), "%s[%s]", d->hop.host,
		         smtp_client_peer(c));
	qjob_fail(j, 0, text);
}

static void conn_closed(void *owner, struct smtp_client *c)
{
	struct qconn *cn = owner;
	struct qdest *d = cn->d;
	struct queue *q = d->q;

	assert(!cn->in_send);
	if (cn->state == QCONN_IDLE)
		unidle(cn);
	qconn_enter(cn, QCONN_CLOSED);
	cn->c = NULL;
	qshaping_conn_end(cn);
	if (ring_op_busy(&cn->op_idle)) {
		/* the idle timer still points at cn: fire it now; it frees cn */
		if (!ring_op_busy(&cn->op_idle_rm))
			ring_timeout_remove(q->ctx.ring, &cn->op_idle_rm, &cn->op_idle);
	} else {
		conn_free(cn);
	}
	qconn_count(d, -1);
	qdest_kick(d);
}
