/* smtp_client: see smtp_client.h.
 *
 * Pipelining keeps two cursors (Postfix's habit): `sent` counts commands of
 * the transaction written, `answered` counts replies read; with PIPELINING
 * everything up to the body is written at once.
 *
 * The peer owes one reply per command (and one greeting): `owed` counts
 * them.  Input that came before a command was written cannot answer it, so
 * a reply beyond what was owed when its input arrived, or any byte while
 * nothing is owed, is out of turn: the connection is closed and what has no
 * final reply yet is deferred.  Every reply is bounded: REPLY_LINE_MAX
 * octets a line, REPLY_LINES_MAX lines. */
#include "smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dane.h"
#include "log.h"
#include "state.h"
#include "xprt.h"

#define IN_BUF          (16u << 10)
#define OUT_MAX         (256u << 10)
#define STUFF_READ      (64u << 10)
#define REPLY_LINES_MAX 100  /* lines of one reply (an EHLO reply has ~20) */
#define REPLY_LINE_MAX  2048 /* octets of a reply line (RFC 5321 allows 512) */
#define REPLY_SHOW      100  /* octets of a bad reply quoted in the error */
#define REPLY_ELLIPSIS  " / ... / "

enum cstate {
	C_CONNECT,
	C_BANNER,
	C_EHLO,
	C_HELO,
	C_STARTTLS,
	C_HANDSHAKE,
	C_READY,
	C_ENVELOPE, /* MAIL and RCPTs: replies being read */
	C_DATA,     /* waiting for 354 */
	C_BODY,     /* body being sent */
	C_END,      /* waiting for the reply to the end of data */
	C_RSET,
	C_QUIT,
	C_CLOSING,
	C_STATES
};

static const char *const cstate_name[C_STATES] = {
    [C_CONNECT] = "connect", [C_BANNER] = "banner",     [C_EHLO] = "ehlo",
    [C_HELO] = "helo",       [C_STARTTLS] = "starttls", [C_HANDSHAKE] = "handshake",
    [C_READY] = "ready",     [C_ENVELOPE] = "envelope", [C_DATA] = "data",
    [C_BODY] = "body",       [C_END] = "end",           [C_RSET] = "rset",
    [C_QUIT] = "quit",       [C_CLOSING] = "closing",
};

/* Whether a reply may come in a state, so a read is armed: not during the
 * handshake (OpenSSL reads), while the body goes out, nor once closing. */
static const bool cstate_reads[C_STATES] = {
    [C_CONNECT] = true,  [C_BANNER] = true, [C_EHLO] = true,     [C_HELO] = true,
    [C_STARTTLS] = true, [C_READY] = true,  [C_ENVELOPE] = true, [C_DATA] = true,
    [C_END] = true,      [C_RSET] = true,   [C_QUIT] = true,
};

/* What may follow what (any state but the last may fail to C_CLOSING). */
#define C_FAIL TO(C_CLOSING)
static const unsigned cstate_may_enter[C_STATES] = {
    [C_CONNECT] = TO(C_CONNECT) | TO(C_BANNER) | TO(C_HANDSHAKE) | C_FAIL, /* smtps */
    [C_BANNER] = TO(C_EHLO) | C_FAIL,
    [C_EHLO] = TO(C_HELO) | TO(C_STARTTLS) | TO(C_READY) | C_FAIL,
    [C_HELO] = TO(C_STARTTLS) | TO(C_READY) | C_FAIL,
    [C_STARTTLS] = TO(C_HANDSHAKE) | C_FAIL,
    [C_HANDSHAKE] = TO(C_EHLO) | TO(C_BANNER) | C_FAIL, /* STARTTLS | smtps */
    [C_READY] = TO(C_READY) | TO(C_ENVELOPE) | TO(C_QUIT) | C_FAIL,
    [C_ENVELOPE] = TO(C_DATA) | TO(C_BODY) | TO(C_END) | TO(C_RSET) | C_FAIL,
    [C_DATA] = TO(C_BODY) | TO(C_READY) | C_FAIL,
    [C_BODY] = TO(C_BODY) | TO(C_END) | C_FAIL,
    [C_END] = TO(C_RSET) | TO(C_READY) | C_FAIL,
    [C_RSET] = TO(C_READY) | C_FAIL,
    [C_QUIT] = C_FAIL,
    [C_CLOSING] = 0,
};

/* What the completion of the write in flight leads to.  A reply can be
 * read before our send's completion is: what it asked for waits for it. */
enum after_write {
	AW_READ,  /* read (or, after QUIT, close) */
	AW_TLS,   /* the 220 to STARTTLS came: the handshake */
	AW_BODY,  /* the 354 came, or "BDAT n LAST" is out: the body */
	AW_STUFF, /* the next chunk of a dot-stuffed body */
	AW_END,   /* the body's file is out: the end of data */
};

enum ext {
	EXT_PIPELINING = 1,
	EXT_CHUNKING = 2,
	EXT_STARTTLS = 4,
	EXT_8BITMIME = 8,
	EXT_SMTPUTF8 = 16,
	EXT_SIZE = 32,
	EXT_REQUIRETLS = 64
};

struct smtp_client {
	struct ring *ring;
	struct xprt x;
	struct smtp_client_params p;
	struct smtp_client_cb cb;
	void *owner;
	enum cstate state;
	unsigned ext;
	uint64_t size_max;
	/* independent facts, not states: TLS is on; HELO was tried after a
	 * refused EHLO; failed was reported; MAIL got 2xx; stop asked for */
	bool tls, tried_helo, failed, mail_ok;
	bool stop_req; /* smtp_client_stop: failed is reported once all is closed */
	size_t owed;   /* replies the peer owes for what we wrote */
	enum after_write after_write;
	bool body_pipelined; /* this transaction's "BDAT n LAST" and body went out
	                      * behind its RCPTs (a mode, not a step) */
	char peer[INET6_ADDRSTRLEN + 8];
	char tls_desc[128];
	bool verified, resumed;
	const char *auth;   /* smtp_client_auth */
	long verify_result; /* at a handshake's failure */
	bool starttls_missing;
	char local[48];

	/* the reply being read: text is its lines joined by " / " */
	int code;
	char text[SMTP_REPLY_MAX];
	char last[SMTP_REPLY_MAX]; /* its latest line */
	size_t first_len;          /* octets of the first line in text */
	bool cut;                  /* lines left out of text: it fills in at the end */
	unsigned lines;
	char error[SMTP_REPLY_MAX]; /* why the input was refused */

	/* the transaction */
	struct smtp_tx *tx;
	bool tx_final;         /* the final reply is in tx: a failure leaves it */
	size_t sent, answered; /* envelope commands written / answered (MAIL = 0) */
	size_t accepted;
	/* stuffing path */
	struct ring_op op_read;
	char *sbuf;
	uint64_t soff;
	bool at_bol;

	struct ring_op op_refused; /* a transaction refused before MAIL, reported */
	struct ring_op op_connect, op_connect_to;
	int connect_res, connect_to_res;
	struct __kernel_timespec connect_ts;
};

static void client_event(void *owner, enum xprt_event ev, int err);

/* Frees c once the connection is closed and no operation of its own is out. */
static void unconfirmed_not_done(struct smtp_client *c);

static void maybe_free(struct smtp_client *c)
{
	if (!c->x.closed || ring_op_busy(&c->op_read) || ring_op_busy(&c->op_connect) ||
	    ring_op_busy(&c->op_connect_to) || ring_op_busy(&c->op_refused))
		return;
	if (c->stop_req && !c->failed) {
		/* (from the ring: the close smtp_client_stop started is done) */
		c->failed = true;
		unconfirmed_not_done(c);
		c->cb.failed(c->owner, c, SMTP_FAIL_IO, "not sent: krelay was stopping");
	}
	free(c->sbuf);
	SSL_SESSION_free(c->p.tls_session);
	c->cb.closed(c->owner, c);
	free(c); /* c is gone */
}

static const struct state_table cstates = {"client", cstate_name, cstate_may_enter, C_STATES};

static void enter(struct smtp_client *c, enum cstate st)
{
	c->state = state_enter(&cstates, c->state, st, "%s", c->peer);
}

/* A 250 to RCPT is no delivery: without the final reply those recipients
 * are not done (a 5xx or 4xx to RCPT stands). */
static void unconfirmed_not_done(struct smtp_client *c)
{
	if (c->tx == NULL || c->tx_final)
		return;
	for (size_t i = 0; i < c->tx->nrcpt; i++) {
		if (c->tx->rcpts[i].code / 100 == 2) {
			c->tx->rcpts[i].code = 0;
			c->tx->rcpts[i].reply[0] = '\0';
		}
	}
}

static void fail(struct smtp_client *c, enum smtp_fail why, const char *text)
{
	if (c->failed || c->state == C_CLOSING)
		return;
	c->failed = true;
	c->after_write = AW_READ;
	unconfirmed_not_done(c);
	enter(c, C_CLOSING);
	c->cb.failed(c->owner, c, why, text);
	xprt_close(&c->x);
}

static void cmd(struct smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cmd(struct smtp_client *c, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = xprt_vline(&c->x, fmt, ap);
	va_end(ap);
	if (ret < 0)
		fail(c, SMTP_FAIL_PROTO, "output buffer full");
	else
		c->owed++; /* every command gets one reply */
}

/* ---- connecting ---------------------------------------------------------- */

static void start_tls(struct smtp_client *c);

static void connect_done(struct smtp_client *c)
{
	int res = c->connect_res;

	if (c->state == C_CLOSING) {
		maybe_free(c);
		return;
	}

	if (res < 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect to %s: %s", c->peer,
		         res == -ECANCELED && c->connect_to_res == -ETIME ? "timed out"
		                                                          : strerror(-res));
		fail(c, SMTP_FAIL_CONNECT, why);
		return;
	}
	if (c->p.smtps) {
		start_tls(c); /* implicit TLS: the greeting comes over it */
		return;
	}
	enter(c, C_BANNER);
	xprt_read(&c->x);
}

static void connect_cb(struct ring_op *op, int res, unsigned flags)
{
	struct smtp_client *c = op->owner;

	c->connect_res = res;
	if (!ring_op_busy(&c->op_connect_to))
		connect_done(c);
}

static void connect_to_cb(struct ring_op *op, int res, unsigned flags)
{
	struct smtp_client *c = op->owner;

	c->connect_to_res = res;
	if (!ring_op_busy(&c->op_connect))
		connect_done(c);
}

static void peer_text(struct smtp_client *c)
{
	char a[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (c->p.addr.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->p.addr;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		port = ntohs(s6->sin6_port);
		snprintf(c->peer, sizeof(c->peer), "[%s]:%u", a, port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&c->p.addr;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		port = ntohs(s4->sin_port);
		snprintf(c->peer, sizeof(c->peer), "%s:%u", a, port);
	}
}

static void read_cb(struct ring_op *op, int res, unsigned flags);
static void refused_cb(struct ring_op *op, int res, unsigned flags);

struct smtp_client *smtp_client_connect(struct ring *ring, const struct smtp_client_params *p,
                                        const struct smtp_client_cb *cb, void *owner)
{
	struct smtp_client *c = calloc(1, sizeof(*c));
	int one = 1, fd;

	if (c == NULL)
		return NULL;
	c->ring = ring;
	c->p = *p;
	/* the session may be replaced at the destination before our handshake */
	if (p->tls_session != NULL)
		SSL_SESSION_up_ref(p->tls_session);
	c->cb = *cb;
	c->owner = owner;
	peer_text(c);
	fd = socket(p->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && p->bind_len > 0) {
		/* an egress source; the port is picked at connect, per peer (many
		 * connections from one address to different peers) */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&p->bind_addr, p->bind_len) < 0) {
			int e = errno;

			close(fd);
			fd = -1;
			errno = e;
		}
	}
	if (fd < 0 || xprt_init(&c->x, ring, fd, p->caps, IN_BUF, OUT_MAX, client_event, c) < 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		SSL_SESSION_free(c->p.tls_session);
		free(c);
		errno = e;
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	xprt_set_timeout(&c->x, p->timeout_s);
	ring_op_init(&c->op_connect, RING_CONNECT, connect_cb, c);
	ring_op_init(&c->op_connect_to, RING_LINK_TIMEOUT, connect_to_cb, c);
	ring_op_init(&c->op_read, RING_READ, read_cb, c);
	ring_op_init(&c->op_refused, RING_NOP, refused_cb, c);
	enter(c, C_CONNECT);
	c->owed = 1; /* the greeting */
	ring_connect(ring, &c->op_connect, fd, (struct sockaddr *)&c->p.addr, p->addrlen, true);
	c->connect_ts.tv_sec = p->connect_timeout_s;
	ring_link_timeout(ring, &c->op_connect_to, &c->connect_ts);
	return c;
}

/* ---- replies ------------------------------------------------------------- */

/* Records why the input was refused, quoting up to REPLY_SHOW octets of the
 * offending line (made safe where it is written out). */
static int bad_input(struct smtp_client *c, const char *why, const char *line, size_t len)
{
	const char *nl = memchr(line, '\n', len);

	if (nl != NULL)
		len = (size_t)(nl - line);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	snprintf(c->error, sizeof(c->error), "%s: %.*s%s", why,
	         (int)(len > REPLY_SHOW ? REPLY_SHOW : len), line, len > REPLY_SHOW ? "..." : "");
	return -1;
}

/* "ddd", "ddd text" or "ddd-text" with a code of 2xx to 5xx. */
static bool reply_line_ok(const char *s, size_t len)
{
	return len >= 3 && s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' &&
	       s[2] >= '0' && s[2] <= '9' && (len == 3 || s[3] == ' ' || s[3] == '-');
}

/* Adds a line to the reply's text.  The first line and the latest one are
 * always kept (the last one of a 250 usually carries the peer's queue id);
 * lines between give way when the whole does not fit. */
static void text_add(struct smtp_client *c, const char *line, size_t len)
{
	size_t have = strlen(c->text);

	if (len > SMTP_REPLY_MAX - 1)
		len = SMTP_REPLY_MAX - 1;
	if (c->lines == 0) {
		snprintf(c->text, sizeof(c->text), "%.*s", (int)len, line);
		c->first_len = strlen(c->text);
		c->cut = false;
		return;
	}
	snprintf(c->last, sizeof(c->last), "%.*s", (int)len, line);
	if (!c->cut && have + 3 + len < sizeof(c->text))
		snprintf(c->text + have, sizeof(c->text) - have, " / %.*s", (int)len, line);
	else
		c->cut = true;
}

/* The reply is whole: when lines were left out, the text becomes the first
 * line, "...", and the last line (each cut short if need be). */
static void text_end(struct smtp_client *c)
{
	size_t cap = sizeof(c->text), sep = strlen(REPLY_ELLIPSIS);
	size_t tail = strlen(c->last), head;

	if (!c->cut)
		return;
	if (tail > cap / 2)
		tail = cap / 2;
	head = cap - 1 - sep - tail;
	if (head > c->first_len)
		head = c->first_len;
	snprintf(c->text + head, cap - head, "%s%.*s", REPLY_ELLIPSIS, (int)tail, c->last);
}

static void ehlo_keyword(struct smtp_client *c, const char *e, size_t el)
{
	if (el >= 10 && strncasecmp(e, "PIPELINING", 10) == 0)
		c->ext |= EXT_PIPELINING;
	else if (el >= 8 && strncasecmp(e, "CHUNKING", 8) == 0)
		c->ext |= EXT_CHUNKING;
	else if (el >= 8 && strncasecmp(e, "STARTTLS", 8) == 0)
		c->ext |= EXT_STARTTLS;
	else if (el >= 8 && strncasecmp(e, "8BITMIME", 8) == 0)
		c->ext |= EXT_8BITMIME;
	else if (el >= 8 && strncasecmp(e, "SMTPUTF8", 8) == 0)
		c->ext |= EXT_SMTPUTF8;
	else if (el == 10 && strncasecmp(e, "REQUIRETLS", 10) == 0)
		c->ext |= EXT_REQUIRETLS;
	else if (el >= 4 && strncasecmp(e, "SIZE", 4) == 0) {
		c->ext |= EXT_SIZE;
		c->size_max = el > 5 ? strtoull(e + 5, NULL, 10) : 0;
	}
}

/* Reads one whole reply from the input; returns 1 when one is ready, 0 when
 * more input is needed, -1 on a protocol error (c->error says which). */
static int read_reply(struct smtp_client *c)
{
	struct xprt *x = &c->x;

	for (;;) {
		size_t look = x->in_len < REPLY_LINE_MAX + 2 ? x->in_len : REPLY_LINE_MAX + 2;
		char *nl = memchr(x->in, '\n', look);
		size_t len;
		int code;
		bool last;

		if (nl == NULL) {
			if (x->in_len > REPLY_LINE_MAX + 1 || x->in_len >= x->in_cap)
				return bad_input(c, "reply line too long", x->in, x->in_len);
			return 0;
		}
		len = (size_t)(nl - x->in);
		if (len > 0 && x->in[len - 1] == '\r')
			len--;
		if (!reply_line_ok(x->in, len))
			return bad_input(c, "malformed reply", x->in, len);
		code = (x->in[0] - '0') * 100 + (x->in[1] - '0') * 10 + (x->in[2] - '0');
		if (c->lines > 0 && code != c->code)
			return bad_input(c, "reply lines with different codes", x->in, len);
		c->code = code;
		last = len == 3 || x->in[3] == ' ';
		text_add(c, x->in, len);
		if (c->state == C_EHLO && len > 4)
			ehlo_keyword(c, x->in + 4, len - 4);
		xprt_consume(x, (size_t)(nl - x->in) + 1);
		if (++c->lines > REPLY_LINES_MAX) {
			snprintf(c->error, sizeof(c->error), "reply of more than %u lines",
			         REPLY_LINES_MAX);
			return -1;
		}
		if (last) {
			c->lines = 0;
			text_end(c);
			return 1;
		}
	}
}

/* ---- the session ----------------------------------------------------------- */

static void ehlo(struct smtp_client *c)
{
	c->ext = 0;
	c->size_max = 0;
	enter(c, C_EHLO);
	cmd(c, "EHLO %s", c->p.helo);
	xprt_flush(&c->x);
}

/* RFC 7672 with OpenSSL's own DANE: the TLSA base domain is the host's
 * name (reference name for DANE-TA; names and dates are not checked for
 * DANE-EE, section 3.1.1); the handshake fails unless a record matches. */
static int dane_setup(struct smtp_client *c, SSL *ssl)
{
	const struct dane_tlsa_set *s = c->p.dane;
	int usable = 0;

	if (s == NULL || SSL_dane_enable(ssl, c->p.host) <= 0) {
		fail(c, SMTP_FAIL_TLS, "DANE: cannot enable DANE verification");
		return -1;
	}
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (size_t i = 0; i < s->n; i++)
		if (SSL_dane_tlsa_add(ssl, s->rec[i].usage, s->rec[i].selector, s->rec[i].mtype,
		                      s->rec[i].data, s->rec[i].len) > 0)
			usable++;
	if (usable == 0) {
		fail(c, SMTP_FAIL_TLS, "DANE: OpenSSL took none of the TLSA records");
		return -1;
	}
	SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	return 0;
}

static void start_tls(struct smtp_client *c)
{
	SSL *ssl = SSL_new(c->p.tls_ctx);

	if (ssl == NULL) {
		fail(c, SMTP_FAIL_TLS, "SSL_new failed");
		return;
	}
	if (!c->p.host_literal)
		SSL_set_tlsext_host_name(ssl, c->p.host);
	if (c->p.tls_policy == TLS_POLICY_DANE && dane_setup(c, ssl) < 0) {
		SSL_free(ssl);
		return;
	}
	if (c->p.tls_policy == TLS_POLICY_VERIFY || c->p.check_only) {
		if (c->p.tls_policy == TLS_POLICY_VERIFY)
			SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		if (c->p.host_literal)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->p.host);
		else
			SSL_set1_host(ssl, c->p.host);
	}
	if (c->p.tls_session != NULL)
		SSL_set_session(ssl, c->p.tls_session);
	if (c->p.no_ktls)
		SSL_clear_options(ssl, SSL_OP_ENABLE_KTLS);
	enter(c, C_HANDSHAKE);
	xprt_start_tls(&c->x, ssl, false);
}

static void ready(struct smtp_client *c)
{
	enter(c, C_READY);
	c->cb.ready(c->owner, c);
}

static void after_ehlo(struct smtp_client *c)
{
	bool want = c->p.tls_policy != TLS_POLICY_NONE && c->p.tls_ctx != NULL;

	if (!c->tls && want && (c->ext & EXT_STARTTLS)) {
		enter(c, C_STARTTLS);
		cmd(c, "STARTTLS");
		xprt_flush(&c->x);
		return;
	}
	if (!c->tls &&
	    (c->p.tls_policy == TLS_POLICY_ENCRYPT || c->p.tls_policy == TLS_POLICY_VERIFY ||
	     c->p.tls_policy == TLS_POLICY_DANE)) {
		c->starttls_missing = true;
		fail(c, SMTP_FAIL_TLS, "TLS is required and the server does not offer STARTTLS");
		return;
	}
	ready(c);
}

static void tx_finish(struct smtp_client *c)
{
	struct smtp_tx *tx = c->tx;

	c->tx = NULL;
	enter(c, C_READY);
	c->cb.done(c->owner, c, tx);
}

/* Gives every accepted recipient the same final reply. */
static void answer_accepted(struct smtp_client *c)
{
	for (size_t i = 0; i < c->tx->nrcpt; i++) {
		struct smtp_tx_rcpt *r = &c->tx->rcpts[i];
		if (r->code >= 200 && r->code < 300) {
			r->code = c->code;
			snprintf(r->reply, sizeof(r->reply), "%s", c->text);
		}
	}
}

static void answer_all(struct smtp_tx *tx, int code, const char *text)
{
	for (size_t i = 0; i < tx->nrcpt; i++) {
		tx->rcpts[i].code = code;
		snprintf(tx->rcpts[i].reply, sizeof(tx->rcpts[i].reply), "%s", text);
	}
}

static bool use_splice(const struct smtp_client *c);

/* With PIPELINING and CHUNKING, a small body goes out with the envelope, in
 * the same write: "MAIL, RCPT..., BDAT n LAST, body" (RFC 3030 section 4.2
 * lets BDAT be pipelined; with no recipient accepted, the server reads the
 * chunk and refuses it).  One round trip per message instead of two. */
static bool pipeline_body(struct smtp_client *c)
{
	struct smtp_tx *tx = c->tx;
	char line[48];
	int n;

	if ((c->ext & (EXT_PIPELINING | EXT_CHUNKING)) != (EXT_PIPELINING | EXT_CHUNKING) ||
	    tx->size == 0)
		return false;
	n = snprintf(line, sizeof(line), "BDAT %llu LAST\r\n", (unsigned long long)tx->size);
	if (!xprt_file_joins_output(&c->x, tx->size + (uint64_t)n, use_splice(c)) ||
	    xprt_write(&c->x, line, (size_t)n) < 0)
		return false;
	c->owed++;
	if (xprt_send_file(&c->x, tx->fd, tx->body_off, tx->size, use_splice(c)) < 0) {
		fail(c, SMTP_FAIL_IO, "cannot send the body");
		return true;
	}
	tx->body_path = c->x.body_path;
	c->body_pipelined = true;
	return true;
}

static void send_envelope_next(struct smtp_client *c)
{
	struct smtp_tx *tx = c->tx;
	size_t total = 1 + tx->nrcpt;

	while (c->sent < total) {
		if (c->sent == 0) {
			char params[96] = "";
			if (c->ext & EXT_SIZE)
				snprintf(params, sizeof(params), " SIZE=%llu",
				         (unsigned long long)tx->size);
			if (tx->eight_bit && (c->ext & EXT_8BITMIME))
				strcat(params, " BODY=8BITMIME");
			if (tx->smtputf8)
				strcat(params, " SMTPUTF8");
			if (tx->requiretls)
				strcat(params, " REQUIRETLS");
			cmd(c, "MAIL FROM:<%s>%s", tx->sender, params);
		} else {
			cmd(c, "RCPT TO:<%s>", tx->rcpts[c->sent - 1].addr);
		}
		c->sent++;
		if (!(c->ext & EXT_PIPELINING))
			break;
	}
	if (c->sent == total && c->answered == 0 && pipeline_body(c))
		return;
	xprt_flush(&c->x);
}

void smtp_client_send(struct smtp_client *c, struct smtp_tx *tx)
{
	char why[SMTP_REPLY_MAX];

	c->tx = tx;
	tx->body_path = "";
	tx->body_bytes = 0;
	for (size_t i = 0; i < tx->nrcpt; i++)
		tx->rcpts[i].code = 0;
	if ((c->ext & EXT_SIZE) && c->size_max > 0 && tx->size > c->size_max) {
		snprintf(why, sizeof(why),
		         "552 5.3.4 message of %llu bytes exceeds the server's limit of %llu",
		         (unsigned long long)tx->size, (unsigned long long)c->size_max);
		answer_all(tx, 552, why);
		ring_nop(c->ring, &c->op_refused); /* done comes from the ring */
		return;
	}
	if (tx->smtputf8 && !(c->ext & EXT_SMTPUTF8)) {
		answer_all(tx, 553,
		           "553 5.6.7 the message needs SMTPUTF8 and the server does not offer it");
		ring_nop(c->ring, &c->op_refused);
		return;
	}
	if (tx->requiretls && (tx->requiretls_refused != NULL || !(c->ext & EXT_REQUIRETLS))) {
		/* RFC 8689 section 4.2.1: not over this connection, and
		 * section 5: returned to its sender */
		snprintf(why, sizeof(why), "550 5.7.30 REQUIRETLS support required: %s",
		         tx->requiretls_refused != NULL ? tx->requiretls_refused
		                                        : "the server does not offer REQUIRETLS");
		answer_all(tx, 550, why);
		ring_nop(c->ring, &c->op_refused);
		return;
	}
	c->sent = c->answered = c->accepted = 0;
	c->body_pipelined = false;
	c->tx_final = false;
	enter(c, C_ENVELOPE);
	send_envelope_next(c);
}

/* A transaction smtp_client_send refused before a word was said (SIZE,
 * SMTPUTF8): its answers are in, reported now, from the ring. */
static void refused_cb(struct ring_op *op, int res, unsigned flags)
{
	struct smtp_client *c = op->owner;
	struct smtp_tx *tx = c->tx;

	if (c->state == C_CLOSING || tx == NULL) {
		maybe_free(c); /* (failed reported it, with the answers in) */
		return;
	}
	if (c->state == C_READY) {
		tx_finish(c);
		return;
	}
	c->tx = NULL; /* QUIT was said meanwhile: done all the same */
	c->cb.done(c->owner, c, tx);
}

static bool use_splice(const struct smtp_client *c)
{
	return c->p.body_path != BODY_PATH_COPY;
}

static void stuff_next(struct smtp_client *c);

static void send_body(struct smtp_client *c)
{
	struct smtp_tx *tx = c->tx;
	int ret;

	enter(c, C_BODY);
	if (!(c->ext & EXT_CHUNKING) && tx->dot_lines) {
		/* A line starts with '.': DATA needs stuffing, which copies. */
		tx->body_path = "stuffing";
		c->soff = 0;
		c->at_bol = true;
		stuff_next(c);
		return;
	}
	if (tx->size == 0) {
		/* nothing to send: "BDAT 0 LAST" is complete; DATA needs its dot */
		tx->body_path = "none";
		enter(c, C_END);
		if (!(c->ext & EXT_CHUNKING))
			cmd(c, ".");
		xprt_flush(&c->x);
		xprt_read(&c->x);
		return;
	}
	tx->body_path = "sending";
	ret = xprt_send_file(&c->x, tx->fd, tx->body_off, tx->size, use_splice(c));
	if (ret < 0) {
		fail(c, SMTP_FAIL_IO, strerror(-ret));
		return;
	}
	tx->body_path = c->x.body_path;
	c->after_write = AW_END;
}

/* Copies the next chunk with dot stuffing into the output buffer. */
static void stuff_next(struct smtp_client *c)
{
	size_t n;

	if (c->soff >= c->tx->size) {
		free(c->sbuf);
		c->sbuf = NULL;
		enter(c, C_END); /* (before cmd: a full buffer fails to C_CLOSING) */
		cmd(c, "%s.", c->tx->final_crlf || c->tx->size == 0 ? "" : "\r\n");
		if (c->state == C_CLOSING)
			return;
		c->tx->body_bytes = c->tx->size;
		xprt_flush(&c->x);
		return;
	}
	if (c->sbuf == NULL && (c->sbuf = malloc(STUFF_READ)) == NULL) {
		fail(c, SMTP_FAIL_IO, "out of memory");
		return;
	}
	c->after_write = AW_STUFF; /* the chunk's write brings the next */
	n = c->tx->size - c->soff < STUFF_READ ? (size_t)(c->tx->size - c->soff) : STUFF_READ;
	ring_read(c->ring, &c->op_read, c->tx->fd, c->sbuf, n, c->tx->body_off + c->soff);
}

static void read_cb(struct ring_op *op, int res, unsigned flags)
{
	struct smtp_client *c = op->owner;
	char out[2 * STUFF_READ];
	size_t o = 0;

	if (c->state == C_CLOSING) {
		maybe_free(c);
		return;
	}
	if (res <= 0) {
		fail(c, SMTP_FAIL_IO, res == 0 ? "spool file ended early" : strerror(-res));
		return;
	}
	for (int i = 0; i < res; i++) {
		char ch = c->sbuf[i];
		if (c->at_bol && ch == '.')
			out[o++] = '.';
		out[o++] = ch;
		c->at_bol = ch == '\n';
	}
	c->soff += (uint64_t)res;
	if (xprt_write(&c->x, out, o) < 0) {
		fail(c, SMTP_FAIL_IO, "output buffer full");
		return;
	}
	xprt_flush(&c->x); /* WRITTEN brings the next chunk */
}

static void envelope_reply(struct smtp_client *c)
{
	struct smtp_tx *tx = c->tx;

	if (c->answered == 0) {
		c->mail_ok = c->code / 100 == 2;
		if (!c->mail_ok)
			answer_all(tx, c->code, c->text); /* RCPT replies still come: ignored */
	} else if (c->mail_ok) {
		struct smtp_tx_rcpt *r = &tx->rcpts[c->answered - 1];
		r->code = c->code;
		snprintf(r->reply, sizeof(r->reply), "%s", c->text);
		if (c->code / 100 == 2)
			c->accepted++;
	}
	c->answered++;
	if (c->answered < c->sent)
		return; /* more pipelined replies to read */
	if (c->sent < 1 + tx->nrcpt) {
		send_envelope_next(c);
		return;
	}
	if (c->body_pipelined) {
		enter(c, C_END); /* the reply to BDAT comes next */
		return;
	}
	if (c->accepted == 0) {
		/* MAIL refused or no recipient accepted: end the transaction. */
		enter(c, C_RSET);
		cmd(c, "RSET");
		xprt_flush(&c->x);
		return;
	}
	if (c->ext & EXT_CHUNKING) {
		enter(c, C_BODY); /* (before cmd: a full buffer fails to C_CLOSING) */
		cmd(c, "BDAT %llu LAST", (unsigned long long)tx->size);
		if (c->state == C_CLOSING)
			return;
		if (xprt_file_joins_output(&c->x, tx->size, use_splice(c))) {
			send_body(c); /* command and body in one write */
			return;
		}
		c->after_write = AW_BODY;
		xprt_flush(&c->x); /* WRITTEN starts the body */
	} else {
		enter(c, C_DATA);
		cmd(c, "DATA");
		xprt_flush(&c->x);
	}
}

/* Only DATA is answered 3xx (354); a 2xx to DATA would claim a body that
 * was never sent. */
static bool reply_fits(const struct smtp_client *c)
{
	if (c->state == C_DATA)
		return c->code == 354 || c->code >= 400;
	return c->code / 100 != 3;
}

static void on_reply(struct smtp_client *c)
{
	if (!reply_fits(c)) {
		char why[SMTP_REPLY_MAX + 48];
		snprintf(why, sizeof(why), "reply that fits no command sent: %s", c->text);
		fail(c, SMTP_FAIL_PROTO, why);
		return;
	}
	switch (c->state) {
	case C_BANNER:
		if (c->code != 220) {
			cmd(c, "QUIT");
			xprt_flush(&c->x);
			fail(c, SMTP_FAIL_GREETING, c->text);
			return;
		}
		ehlo(c);
		break;
	case C_EHLO:
		if (c->code / 100 != 2) {
			if (c->code / 100 == 5 && !c->tried_helo && !c->tls) {
				c->tried_helo = true;
				enter(c, C_HELO);
				cmd(c, "HELO %s", c->p.helo);
				xprt_flush(&c->x);
				return;
			}
			fail(c, SMTP_FAIL_GREETING, c->text);
			return;
		}
		after_ehlo(c);
		break;
	case C_HELO:
		if (c->code / 100 != 2) {
			fail(c, SMTP_FAIL_GREETING, c->text);
			return;
		}
		after_ehlo(c);
		break;
	case C_STARTTLS:
		if (c->code != 220) {
			char why[SMTP_REPLY_MAX + 32];
			snprintf(why, sizeof(why), "STARTTLS refused: %s", c->text);
			fail(c, SMTP_FAIL_TLS, why);
			return;
		}
		/* Anything after the 220 is an injection attempt: drop it. */
		xprt_discard_input(&c->x);
		if (c->x.writing)
			c->after_write = AW_TLS; /* the 220 overtook our send's completion */
		else
			start_tls(c);
		break;
	case C_ENVELOPE:
		envelope_reply(c);
		break;
	case C_DATA:
		if (c->code >= 400) {
			answer_accepted(c);
			tx_finish(c);
			return;
		}
		if (c->x.writing)
			c->after_write = AW_BODY; /* the 354 overtook our send's completion */
		else
			send_body(c);
		break;
	case C_END:
		if (c->body_pipelined) {
			c->tx->body_bytes = c->x.file.sent;
			if (c->accepted == 0) {
				/* nothing was accepted: make sure no transaction is left */
				enter(c, C_RSET);
				cmd(c, "RSET");
				xprt_flush(&c->x);
				return;
			}
		}
		answer_accepted(c);
		tx_finish(c);
		break;
	case C_RSET:
		if (c->code / 100 != 2) {
			fail(c, SMTP_FAIL_PROTO, c->text);
			return;
		}
		tx_finish(c);
		break;
	case C_QUIT:
		break;
	default:
		fail(c, SMTP_FAIL_PROTO, "reply out of turn");
		break;
	}
}

/* The peer spoke out of turn: input that no command written before it came
 * asked for.  An unsolicited 421 is the server closing (RFC 5321 3.8). */
static void out_of_turn(struct smtp_client *c)
{
	struct xprt *x = &c->x;

	if (x->in_len >= 3 && memcmp(x->in, "421", 3) == 0) {
		bad_input(c, "the server closed the connection", x->in, x->in_len);
		fail(c, SMTP_FAIL_IO, c->error);
		return;
	}
	bad_input(c, "unexpected reply (more replies than commands)", x->in, x->in_len);
	fail(c, SMTP_FAIL_PROTO, c->error);
}

/* The reply to the end of data came with more behind it: it still counts
 * (its recipients stay sent) before the connection is closed. */
static void final_reply(struct smtp_client *c)
{
	if (c->state != C_END || c->tx == NULL || !reply_fits(c))
		return;
	if (c->body_pipelined)
		c->tx->body_bytes = c->x.file.sent;
	answer_accepted(c);
	c->tx_final = true;
}

static void client_read(struct smtp_client *c)
{
	/* The input came before anything written from here on: it may answer
	 * only what was owed now. */
	size_t budget = c->owed;

	for (;;) {
		int r;

		if (c->state == C_CLOSING || c->state == C_QUIT)
			return;
		if (budget == 0 && c->x.in_len > 0) {
			out_of_turn(c);
			return;
		}
		r = read_reply(c);
		if (r < 0) {
			fail(c, SMTP_FAIL_PROTO, c->error);
			return;
		}
		if (r == 0)
			break;
		budget--;
		c->owed--;
		/* After 220 to STARTTLS the input is dropped (RFC 3207 4.2). */
		if (budget == 0 && c->x.in_len > 0 && c->state != C_STARTTLS) {
			final_reply(c);
			out_of_turn(c);
			return;
		}
		on_reply(c);
	}
	/* No read while the body goes out: the reply comes after it.  While
	 * idle, a read catches what the peer says unasked. */
	if (cstate_reads[c->state] && c->after_write == AW_READ)
		xprt_read(&c->x);
}

static void client_event(void *owner, enum xprt_event ev, int err)
{
	struct smtp_client *c = owner;

	switch (ev) {
	case XPRT_READ:
		client_read(c);
		break;
	case XPRT_WRITTEN: {
		enum after_write next = c->after_write;

		if (c->state == C_CLOSING)
			break;
		c->after_write = AW_READ; /* what follows may ask for another */
		switch (next) {
		case AW_TLS:
			start_tls(c);
			break;
		case AW_BODY:
			send_body(c);
			break;
		case AW_STUFF:
			stuff_next(c);
			break;
		case AW_END:
			c->tx->body_bytes = c->x.file.sent;
			enter(c, C_END);
			if (!(c->ext & EXT_CHUNKING)) {
				cmd(c, "%s.", c->tx->final_crlf || c->tx->size == 0 ? "" : "\r\n");
				xprt_flush(&c->x);
			}
			xprt_read(&c->x);
			break;
		case AW_READ:
			if (c->state == C_QUIT) {
				enter(c, C_CLOSING);
				xprt_close(&c->x);
			} else {
				xprt_read(&c->x); /* idle (C_READY) too: see client_read */
			}
			break;
		}
		break;
	}
	case XPRT_TLS_OK: {
		X509 *peer = SSL_get0_peer_certificate(c->x.ssl);
		c->tls = true;
		ktls_describe(c->x.ssl, c->tls_desc, sizeof(c->tls_desc));
		c->verified = peer != NULL && SSL_get_verify_result(c->x.ssl) == X509_V_OK;
		c->verify_result =
		    peer != NULL ? SSL_get_verify_result(c->x.ssl) : X509_V_ERR_UNSPECIFIED;
		c->auth = "none";
		if (c->p.tls_policy == TLS_POLICY_DANE) {
			uint8_t usage;
			/* the handshake fails unless a record matched */
			if (SSL_get0_dane_tlsa(c->x.ssl, &usage, NULL, NULL, NULL, NULL) >= 0)
				c->auth = usage == 3 ? "dane-ee" : "dane-ta";
		} else if (c->p.tls_policy == TLS_POLICY_VERIFY && c->verified) {
			c->auth = c->p.verify_auth != NULL ? c->p.verify_auth : "pkix";
		}
		c->resumed = SSL_session_reused(c->x.ssl);
		if (c->p.smtps)
			enter(c, C_BANNER); /* implicit TLS: now the greeting */
		else
			ehlo(c);
		xprt_read(&c->x);
		break;
	}
	case XPRT_EOF:
		fail(c, SMTP_FAIL_IO, "connection closed by the server");
		break;
	case XPRT_TIMEOUT:
		fail(c, SMTP_FAIL_IO, c->x.error);
		break;
	case XPRT_ERROR:
		if (c->x.keyupdate && c->x.ktls.tx)
			fail(c, SMTP_FAIL_TLS_KEYUPDATE, c->x.error);
		else if (c->state == C_HANDSHAKE && c->p.smtps &&
		         strstr(c->x.error, "wrong version number") != NULL) {
			char why[sizeof(c->x.error) + 96];
			snprintf(why, sizeof(why),
			         "%s (the next hop is written smtps, but its port does not start "
			         "with TLS)",
			         c->x.error);
			fail(c, SMTP_FAIL_TLS, why);
		} else if (c->state == C_HANDSHAKE && c->x.ssl != NULL &&
		           SSL_get_verify_result(c->x.ssl) != X509_V_OK) {
			/* say why the peer was refused (DANE: no matching TLSA record) */
			char why[sizeof(c->x.error) + 96];
			c->verify_result = SSL_get_verify_result(c->x.ssl);
			snprintf(why, sizeof(why), "%s (%s)", c->x.error,
			         X509_verify_cert_error_string(SSL_get_verify_result(c->x.ssl)));
			fail(c, SMTP_FAIL_TLS, why);
		} else
			fail(c, c->state == C_HANDSHAKE ? SMTP_FAIL_TLS : SMTP_FAIL_IO, c->x.error);
		break;
	case XPRT_CLOSED:
		maybe_free(c);
		break;
	}
}

void smtp_client_quit(struct smtp_client *c)
{
	if (c->state == C_CLOSING || c->state == C_QUIT)
		return;
	if (c->state == C_READY) {
		enter(c, C_QUIT);
		cmd(c, "QUIT");
		xprt_flush(&c->x);
		return;
	}
	enter(c, C_CLOSING);
	xprt_close(&c->x);
}

void smtp_client_stop(struct smtp_client *c)
{
	switch (c->state) {
	case C_CLOSING:
	case C_QUIT:
	case C_BODY:
	case C_END:
		return; /* sending the body, or waiting for its reply: it finishes */
	case C_READY:
		smtp_client_quit(c);
		return;
	default:
		c->stop_req = true;
		c->after_write = AW_READ;
		enter(c, C_CLOSING);
		xprt_close(&c->x);
	}
}

const char *smtp_client_peer(const struct smtp_client *c)
{
	return c->peer;
}

const char *smtp_client_tls(const struct smtp_client *c)
{
	return c->tls_desc;
}

long smtp_client_verify_result(const struct smtp_client *c)
{
	return c->verify_result;
}

bool smtp_client_starttls_missing(const struct smtp_client *c)
{
	return c->starttls_missing;
}

const char *smtp_client_local(const struct smtp_client *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct smtp_client *m = (struct smtp_client *)c;

	if (m->local[0] == '\0' && m->x.fd >= 0 &&
	    getsockname(m->x.fd, (struct sockaddr *)&ss, &len) == 0) {
		const void *bin = ss.ss_family == AF_INET6
		                      ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
		                      : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
		if (inet_ntop(ss.ss_family, bin, m->local, sizeof(m->local)) == NULL)
			m->local[0] = '\0';
	}
	return m->local;
}

const char *smtp_client_auth(const struct smtp_client *c)
{
	return c->auth != NULL ? c->auth : "none";
}

bool smtp_client_tls_verified(const struct smtp_client *c)
{
	return c->verified;
}

bool smtp_client_ktls_tx(const struct smtp_client *c)
{
	return c->tls && c->x.ktls.tx;
}

const char *smtp_client_ktls_why(const struct smtp_client *c)
{
	if (c->tls && c->p.no_ktls)
		return "off for this destination after a TLS KeyUpdate";
	return !c->tls ? "no TLS" : c->x.ktls.tx ? "" : c->x.ktls.tx_why;
}

bool smtp_client_resumed(const struct smtp_client *c)
{
	return c->resumed;
}

SSL_SESSION *smtp_client_session(const struct smtp_client *c)
{
	if (!c->tls || c->x.ssl == NULL)
		return NULL;
	SSL_SESSION *s = SSL_get1_session(c->x.ssl);
	if (s != NULL && !SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(s);
		s = NULL;
	}
	return s;
}
