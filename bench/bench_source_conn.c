/* bench_source_conn: one SMTP client connection of the source, an explicit
 * state machine over xprt events.  Every command sent pushes what its reply
 * means onto a small queue; replies are matched in order, so pipelined and
 * lock-step sessions run through the same code.  Message content goes out in
 * chunks copied into xprt's buffer (the body from the pool, never built per
 * message). */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "bench_source.h"
#include "xprt.h"

#define IN_CAP        (16u << 10)
#define OUT_MAX       (160u << 10)
#define PUMP_CHUNK    (64u << 10)
#define CONNECT_LIMIT 10 /* seconds, or --timeout when shorter */

enum conn_state {
	CS_CONNECT,
	CS_SMTP,  /* greeting, EHLO, STARTTLS, transactions */
	CS_QUIT,  /* QUIT sent: whatever happens now is no error */
	CS_CLOSE, /* xprt_close called (or the socket closed before xprt) */
};

/* What a reply answers. */
enum expect {
	E_GREET,
	E_EHLO,
	E_STARTTLS,
	E_RSET,
	E_MAIL,
	E_RCPT,
	E_DATA,     /* 354 wanted */
	E_DATA_END, /* the final reply after the content */
	E_BDAT,     /* the final reply to BDAT LAST */
	E_QUIT,
};

static const char *const expect_name[] = {
    [E_GREET] = "greeting",    [E_EHLO] = "EHLO",
    [E_STARTTLS] = "STARTTLS", [E_RSET] = "RSET",
    [E_MAIL] = "MAIL",         [E_RCPT] = "RCPT",
    [E_DATA] = "DATA",         [E_DATA_END] = "end of data",
    [E_BDAT] = "BDAT",         [E_QUIT] = "QUIT",
};

enum ext {
	EXT_PIPELINING = 1,
	EXT_CHUNKING = 2,
	EXT_STARTTLS = 4,
};

struct pump {
	const char *part[4];
	size_t len[4];
	unsigned n, i;
	size_t off;
};

struct src_conn {
	struct xprt x;
	struct source *s;
	struct src_conn *prev, *next;
	int fd;
	bool have_x; /* x owns fd */
	enum conn_state st;
	struct ring_op op_conn, op_conn_to;
	int conn_res, conn_to_res;
	struct __kernel_timespec conn_ts;

	unsigned ext;
	bool tls;
	bool tls_next;       /* 220 to STARTTLS read: handshake once our write is out */
	bool reserved;       /* first_seq is this connection's, not yet started */
	uint64_t first_seq;  /* claimed when the connection starts */
	uint64_t msgs;       /* messages started on this connection */
	unsigned char *expq; /* ring of enum expect */
	unsigned exp_head, exp_n, exp_cap;
	bool reply_first; /* the next line starts a reply */
	char reply[200];  /* first line of the current reply */

	bool in_tx, tx_failed, need_rset, pipelined;
	unsigned next_rcpt; /* lock-step: recipients sent so far */
	char tx_err[400];
	double t0;
	struct bench_msg m;
	struct pump pump;
	char bdat[48];
};

static void conn_cb(void *owner, enum xprt_event ev, int err);
static void next_message(struct src_conn *c);

struct src_conn *src_conn_next(struct src_conn *c)
{
	return c->next;
}

static void cmd(struct src_conn *c, enum expect e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cmd(struct src_conn *c, enum expect e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	xprt_vline(&c->x, fmt, ap); /* commands are small; OUT_MAX holds many */
	va_end(ap);
	if (c->exp_n < c->exp_cap)
		c->expq[(c->exp_head + c->exp_n++) % c->exp_cap] = (unsigned char)e;
}

static void flush(struct src_conn *c)
{
	if (xprt_pending(&c->x) > 0)
		xprt_flush(&c->x);
}

static void pump(struct src_conn *c)
{
	struct pump *p = &c->pump;

	while (p->i < p->n) {
		size_t left = p->len[p->i] - p->off, n = left < PUMP_CHUNK ? left : PUMP_CHUNK;

		if (n > 0 && xprt_write(&c->x, p->part[p->i] + p->off, n) < 0)
			break; /* full: XPRT_WRITTEN brings us back */
		p->off += n;
		if (p->off == p->len[p->i]) {
			p->i++;
			p->off = 0;
		}
	}
	flush(c);
}

static void pump_add(struct src_conn *c, const char *p, size_t len)
{
	c->pump.part[c->pump.n] = p;
	c->pump.len[c->pump.n++] = len;
}

/* ---- closing and failing -------------------------------------------------- */

static void close_conn(struct src_conn *c)
{
	if (c->st == CS_CLOSE)
		return;
	c->st = CS_CLOSE;
	if (c->have_x)
		xprt_close(&c->x);
}

static void freed(struct src_conn *c)
{
	struct source *s = c->s;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->nconns--;
	free(c->expq);
	free(c);
	/* Keep C connections busy while messages are left to claim. */
	if (!s->finished && !s->fatal && s->next_seq < s->o.messages &&
	    s->nconns < s->o.concurrency)
		src_conn_start(s);
}

static void tx_end(struct src_conn *c, bool ok, const char *why)
{
	struct source *s = c->s;

	c->in_tx = false;
	if (ok && !c->tx_failed) {
		source_outcome(s, true, bench_msg_len(&c->m), bench_mono_now() - c->t0, NULL);
	} else {
		source_outcome(s, false, 0, 0, c->tx_failed ? c->tx_err : why);
		c->need_rset = true;
	}
}

/* The connection is lost or unusable: the message under way (or the one it
 * claimed at its start, so a failing server cannot loop us) has failed with
 * why. */
static void conn_fail(struct src_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_fail(struct src_conn *c, const char *fmt, ...)
{
	struct source *s = c->s;
	char why[300];
	int n;
	va_list ap;

	if (c->st == CS_CLOSE)
		return;
	n = snprintf(why, sizeof(why), "%s: ", s->o.to.text);
	va_start(ap, fmt);
	vsnprintf(why + n, sizeof(why) - (size_t)n, fmt, ap);
	va_end(ap);
	if (!s->finished && c->st != CS_QUIT) {
		if (c->in_tx) {
			c->tx_failed = false;
			tx_end(c, false, why);
		} else if (c->reserved) {
			c->reserved = false;
			source_outcome(s, false, 0, 0, why);
		}
	}
	close_conn(c);
}

void src_conn_abort(struct src_conn *c)
{
	close_conn(c);
}

/* ---- connecting ---------------------------------------------------------- */

static void connected(struct src_conn *c)
{
	struct source *s = c->s;

	s->ever_connected = true;
	if (xprt_init(&c->x, &s->ring, c->fd, &s->caps, IN_CAP, OUT_MAX, conn_cb, c) < 0) {
		free(c->x.in);
		close(c->fd);
		conn_fail(c, "out of memory");
		freed(c);
		return;
	}
	c->have_x = true;
	/* Past the overall --timeout: that one ends a stalled run, and says so. */
	xprt_set_timeout(&c->x, s->o.timeout_s + 5);
	c->st = CS_SMTP;
	c->expq[c->exp_n++] = E_GREET;
	if (s->o.tls == SRC_TLS_SMTPS) {
		xprt_start_tls(&c->x, SSL_new(s->ctx), false);
		return;
	}
	xprt_read(&c->x);
}

static void connect_done(struct src_conn *c)
{
	struct source *s = c->s;
	int res = c->conn_res;
	const char *why;

	if (res == 0) {
		connected(c);
		return;
	}
	why = res == -ECANCELED && c->conn_to_res == -ETIME ? strerror(ETIMEDOUT) : strerror(-res);
	close(c->fd);
	if (!s->ever_connected && !s->finished) {
		s->fatal = true;
		snprintf(s->fatal_msg, sizeof(s->fatal_msg), "cannot connect to %s: %s",
		         s->o.to.text, why);
	} else {
		conn_fail(c, "connect: %s", why);
	}
	c->st = CS_CLOSE;
	freed(c);
}

static void conn_op_cb(struct ring_op *op, int res, unsigned flags)
{
	struct src_conn *c = op->owner;

	if (op == &c->op_conn)
		c->conn_res = res;
	else
		c->conn_to_res = res;
	if (!ring_op_busy(&c->op_conn) && !ring_op_busy(&c->op_conn_to))
		connect_done(c);
}

void src_conn_start(struct source *s)
{
	struct src_conn *c;
	int one = 1;
	unsigned limit = s->o.timeout_s < CONNECT_LIMIT ? s->o.timeout_s : CONNECT_LIMIT;

	if (s->next_seq >= s->o.messages)
		return; /* all claimed */
	c = calloc(1, sizeof(*c));
	if (c != NULL) {
		c->exp_cap = s->o.rcpts + 8;
		c->expq = malloc(c->exp_cap);
	}
	if (c == NULL || c->expq == NULL) {
		free(c);
		s->fatal = true;
		snprintf(s->fatal_msg, sizeof(s->fatal_msg), "out of memory");
		return;
	}
	c->s = s;
	c->reply_first = true;
	c->reserved = true;
	c->first_seq = s->next_seq++;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	s->connections++;
	c->fd = socket(s->o.to.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, "socket: %s", strerror(errno));
		c->st = CS_CLOSE;
		freed(c);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ring_op_init(&c->op_conn, RING_CONNECT, conn_op_cb, c);
	ring_op_init(&c->op_conn_to, RING_LINK_TIMEOUT, conn_op_cb, c);
	c->conn_ts.tv_sec = limit;
	ring_connect(&s->ring, &c->op_conn, c->fd, (const struct sockaddr *)&s->o.to.ss,
	             s->o.to.len, true);
	ring_link_timeout(&s->ring, &c->op_conn_to, &c->conn_ts);
}

/* ---- transactions ---------------------------------------------------------- */

static void send_rcpt(struct src_conn *c, unsigned j)
{
	char rcpt[300];

	bench_rcpt(rcpt, sizeof(rcpt), &c->s->mp, j);
	cmd(c, E_RCPT, "RCPT TO:<%s>", rcpt);
}

/* DATA (the content follows its 354) or BDAT LAST with the content. */
static void send_data_cmd(struct src_conn *c)
{
	struct bench_msg *m = &c->m;

	memset(&c->pump, 0, sizeof(c->pump));
	if (c->s->o.bdat && (c->ext & EXT_CHUNKING)) {
		int n = snprintf(c->bdat, sizeof(c->bdat), "BDAT %" PRIu64 " LAST\r\n",
		                 bench_msg_len(m));
		c->expq[(c->exp_head + c->exp_n++) % c->exp_cap] = E_BDAT;
		pump_add(c, c->bdat, (size_t)n);
		pump_add(c, m->hdr, m->hdr_len);
		pump_add(c, m->body, m->body_len);
		pump_add(c, m->fill, m->fill_len);
		pump(c);
	} else {
		cmd(c, E_DATA, "DATA");
	}
}

static void send_content(struct src_conn *c)
{
	struct bench_msg *m = &c->m;

	memset(&c->pump, 0, sizeof(c->pump));
	pump_add(c, m->hdr, m->hdr_len);
	pump_add(c, m->sbody, m->sbody_len);
	pump_add(c, m->fill, m->fill_len);
	pump_add(c, ".\r\n", 3);
	c->expq[(c->exp_head + c->exp_n++) % c->exp_cap] = E_DATA_END;
	pump(c);
}

static void start_tx(struct src_conn *c, uint64_t seq)
{
	struct source *s = c->s;

	bench_msg_make(&c->m, &s->pool, &s->mp, seq, size_dist_pick(&s->o.size, seq));
	c->in_tx = true;
	c->tx_failed = false;
	c->msgs++;
	c->t0 = bench_mono_now();
	c->pipelined = s->o.pipelining && (c->ext & EXT_PIPELINING);
	if (c->need_rset) {
		cmd(c, E_RSET, "RSET");
		c->need_rset = false;
	}
	cmd(c, E_MAIL, "MAIL FROM:<%s>", s->o.from);
	c->next_rcpt = 0;
	if (c->pipelined) {
		for (; c->next_rcpt < s->o.rcpts; c->next_rcpt++)
			send_rcpt(c, c->next_rcpt);
		send_data_cmd(c);
	}
	flush(c);
}

static void quit(struct src_conn *c)
{
	c->st = CS_QUIT;
	cmd(c, E_QUIT, "QUIT");
	flush(c);
}

static void next_message(struct src_conn *c)
{
	struct source *s = c->s;

	if (c->reserved && !s->finished) {
		c->reserved = false;
		start_tx(c, c->first_seq);
		return;
	}
	if (s->finished || s->next_seq >= s->o.messages ||
	    (s->o.per_conn > 0 && c->msgs >= s->o.per_conn)) {
		quit(c);
		return;
	}
	start_tx(c, s->next_seq++);
}

/* ---- replies ---------------------------------------------------------------- */

static void ehlo(struct src_conn *c)
{
	c->ext = 0;
	cmd(c, E_EHLO, "EHLO %s", c->s->o.helo);
	flush(c);
}

static void tx_reply_failed(struct src_conn *c, enum expect e)
{
	if (!c->tx_failed) {
		c->tx_failed = true;
		snprintf(c->tx_err, sizeof(c->tx_err), "%s: %s: %s", c->s->o.to.text,
		         expect_name[e], c->reply);
	}
}

/* A whole reply to e, with code (its first line is in c->reply). */
static void on_reply(struct src_conn *c, enum expect e, int code)
{
	struct source *s = c->s;
	bool pos = code >= 200 && code < 300;

	if (code == 421 && e != E_QUIT) {
		conn_fail(c, "%s: %s", expect_name[e], c->reply);
		return;
	}
	switch (e) {
	case E_GREET:
		if (!pos)
			conn_fail(c, "greeting: %s", c->reply);
		else
			ehlo(c);
		break;
	case E_EHLO:
		if (!pos)
			conn_fail(c, "EHLO: %s", c->reply);
		else if (s->o.tls == SRC_TLS_STARTTLS && !c->tls && !(c->ext & EXT_STARTTLS))
			conn_fail(c, "STARTTLS is not offered");
		else if (s->o.tls == SRC_TLS_STARTTLS && !c->tls) {
			cmd(c, E_STARTTLS, "STARTTLS");
			flush(c);
		} else
			next_message(c);
		break;
	case E_STARTTLS:
		if (code != 220)
			conn_fail(c, "STARTTLS: %s", c->reply);
		else
			c->tls_next = true;
		break;
	case E_RSET:
		break;
	case E_MAIL:
	case E_RCPT:
		if (!pos)
			tx_reply_failed(c, e);
		if (c->pipelined)
			break;
		if (c->tx_failed) { /* lock-step: stop this transaction here */
			tx_end(c, false, NULL);
			next_message(c);
		} else if (c->next_rcpt < s->o.rcpts) {
			send_rcpt(c, c->next_rcpt++);
			flush(c);
		} else {
			send_data_cmd(c);
			flush(c);
		}
		break;
	case E_DATA:
		if (code == 354) {
			send_content(c);
			break;
		}
		tx_reply_failed(c, e);
		tx_end(c, false, NULL);
		next_message(c);
		break;
	case E_DATA_END:
	case E_BDAT:
		if (!pos)
			tx_reply_failed(c, e);
		tx_end(c, true, NULL);
		next_message(c);
		break;
	case E_QUIT:
		close_conn(c);
		break;
	}
}

static void ext_line(struct src_conn *c, const char *kw, size_t len)
{
	static const struct {
		const char *name;
		unsigned bit;
	} known[] = {
	    {"PIPELINING", EXT_PIPELINING},
	    {"CHUNKING", EXT_CHUNKING},
	    {"STARTTLS", EXT_STARTTLS},
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		size_t n = strlen(known[i].name);
		if (len >= n && strncasecmp(kw, known[i].name, n) == 0 &&
		    (len == n || kw[n] == ' '))
			c->ext |= known[i].bit;
	}
}

/* One reply line (CRLF removed).  Returns false when the connection failed. */
static bool reply_line(struct src_conn *c, const char *line, size_t len)
{
	enum expect e;
	int code;

	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-')) {
		conn_fail(c, "bad reply line \"%.*s\"", (int)(len < 100 ? len : 100), line);
		return false;
	}
	if (c->exp_n == 0) {
		conn_fail(c, "unexpected reply \"%.*s\"", (int)(len < 100 ? len : 100), line);
		return false;
	}
	e = c->expq[c->exp_head];
	if (c->reply_first)
		snprintf(c->reply, sizeof(c->reply), "%.*s", (int)len, line);
	else if (e == E_EHLO && len > 4)
		ext_line(c, line + 4, len - 4);
	c->reply_first = len == 3 || line[3] == ' ';
	if (!c->reply_first)
		return true; /* more lines follow */
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	c->exp_head = (c->exp_head + 1) % c->exp_cap;
	c->exp_n--;
	on_reply(c, e, code);
	return c->st != CS_CLOSE;
}

static void start_tls(struct src_conn *c)
{
	c->tls_next = false;
	xprt_discard_input(&c->x); /* nothing may come between 220 and the handshake */
	xprt_start_tls(&c->x, SSL_new(c->s->ctx), false);
}

static void on_read(struct src_conn *c)
{
	size_t pos = 0;

	while (c->st != CS_CLOSE && !c->tls_next) {
		char *in = c->x.in + pos, *nl = memchr(in, '\n', c->x.in_len - pos);
		size_t len;

		if (nl == NULL) {
			if (c->x.in_len == c->x.in_cap)
				conn_fail(c, "reply line too long");
			break;
		}
		len = (size_t)(nl - in);
		pos += len + 1;
		if (len > 0 && in[len - 1] == '\r')
			len--;
		if (!reply_line(c, in, len))
			return;
	}
	if (c->st == CS_CLOSE)
		return;
	if (c->tls_next) {
		if (!c->x.writing)
			start_tls(c); /* else once STARTTLS itself is out */
		return;
	}
	xprt_consume(&c->x, pos);
	xprt_read(&c->x);
}

static void conn_cb(void *owner, enum xprt_event ev, int err)
{
	struct src_conn *c = owner;

	if (ev == XPRT_CLOSED) {
		freed(c);
		return;
	}
	if (c->st == CS_CLOSE)
		return;
	switch (ev) {
	case XPRT_READ:
		on_read(c);
		break;
	case XPRT_WRITTEN:
		if (c->tls_next)
			start_tls(c);
		else if (c->pump.i < c->pump.n)
			pump(c);
		break;
	case XPRT_TLS_OK:
		c->tls = true;
		if (c->exp_n == 0 || c->expq[c->exp_head] != E_GREET) /* else implicit TLS */
			ehlo(c); /* after STARTTLS: start again */
		xprt_read(&c->x);
		break;
	case XPRT_EOF:
		if (c->st == CS_QUIT)
			close_conn(c);
		else
			conn_fail(c, "connection closed by the server%s%s",
			          c->exp_n > 0 ? " waiting for the reply to " : "",
			          c->exp_n > 0 ? expect_name[c->expq[c->exp_head]] : "");
		break;
	case XPRT_ERROR:
	case XPRT_TIMEOUT:
		if (c->st == CS_QUIT)
			close_conn(c);
		else
			conn_fail(c, "%s", c->x.error[0] ? c->x.error : strerror(-err));
		break;
	case XPRT_CLOSED:
		break;
	}
}
