/* bench_sink_session: one SMTP session of the sink, an explicit state
 * machine over xprt events.  Input is handled in place: commands are parsed
 * from xprt's buffer, DATA is scanned for its end (bench_scan), BDAT chunks
 * are counted; what was used is dropped once per read.  Replies to every
 * command in one read go out in one write. */
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

#include "bench_scan.h"
#include "bench_sink.h"
#include "bench_tls.h"
#include "xprt.h"

#define IN_CAP       (128u << 10)
#define OUT_MAX      (32u << 10)
#define OUT_HIGH     (OUT_MAX - 4096) /* stop reading commands above this */
#define CMD_LINE_MAX 2048             /* longest command line taken */

enum sess_state {
	SS_CMD,
	SS_DATA,
	SS_BDAT,
};

struct sink_conn {
	struct xprt x;
	struct sink_worker *w;
	struct sink_conn *prev, *next;
	enum sess_state st;
	bool smtps, tls, verified;
	bool starttls_next; /* start TLS once the 220 is out */
	bool quit;          /* close once the reply is out */
	bool closing;
	bool blocked; /* replies piled up: wait for them to go */
	bool mail, bdat_ok, bdat_last, in_bdat;
	unsigned rcpts;
	uint64_t bdat_left, msg_bytes;
	struct dscan scan;
	struct vmsg *vm; /* with --verify */
};

static void conn_cb(void *owner, enum xprt_event ev, int err);

struct sink_conn *sink_session_next(struct sink_conn *c)
{
	return c->next;
}

static void reply(struct sink_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct sink_conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (xprt_vline(&c->x, fmt, ap) < 0)
		c->quit = true; /* cannot happen below OUT_HIGH; never loop on it */
	va_end(ap);
}

static void flush(struct sink_conn *c)
{
	if (xprt_pending(&c->x) > 0)
		xprt_flush(&c->x);
}

static void close_conn(struct sink_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	xprt_close(&c->x);
}

void sink_session_stop(struct sink_conn *c, bool force)
{
	if (force || (!c->x.writing && xprt_pending(&c->x) == 0))
		close_conn(c);
}

void sink_session_start(struct sink_worker *w, int fd, bool smtps)
{
	struct sink *s = w->s;
	struct sink_conn *c = calloc(1, sizeof(*c));
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c == NULL || (s->o.verify && (c->vm = malloc(sizeof(*c->vm))) == NULL) ||
	    xprt_init(&c->x, &w->ring, fd, &s->caps, IN_CAP, OUT_MAX, conn_cb, c) < 0) {
		fprintf(stderr, "%s sink: out of memory for a connection\n", BENCH_PROG);
		if (c != NULL)
			free(c->vm);
		free(c);
		close(fd);
		return;
	}
	xprt_set_timeout(&c->x, s->o.timeout_s < 300 ? s->o.timeout_s : 300);
	c->w = w;
	c->smtps = smtps;
	c->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	w->st.connections++;
	if (smtps) {
		xprt_start_tls(&c->x, SSL_new(s->ctx), true);
		return;
	}
	reply(c, "220 %s ESMTP krelay-bench", s->o.hostname);
	flush(c);
	xprt_read(&c->x);
}

static void reset_tx(struct sink_conn *c)
{
	c->mail = false;
	c->rcpts = 0;
	c->in_bdat = false;
	c->bdat_ok = false;
}

static void first_mail(struct sink_worker *w)
{
	if (w->st.first_unix == 0)
		w->st.first_unix = bench_unix_now();
}

/* A whole message is in: check it, count it, answer it. */
static void message_end(struct sink_conn *c, uint64_t bytes)
{
	struct sink_worker *w = c->w;
	struct sink *s = w->s;
	char why[200];

	c->st = SS_CMD;
	if (c->vm != NULL && vmsg_check(c->vm, why, sizeof(why)) < 0) {
		w->st.checksum_errors++;
		fprintf(stderr, "%s sink: checksum mismatch: %s\n", BENCH_PROG, why);
		reply(c, "554 5.6.0 X-Bench checksum mismatch: %s", why);
	} else {
		w->st.messages++;
		w->st.bytes += bytes;
		reply(c, "250 2.0.0 Ok: queued as %02X%014" PRIX64, w->index, ++w->next_id);
	}
	w->st.last_unix = bench_unix_now();
	reset_tx(c);
	if (s->o.expect > 0 && atomic_fetch_add(&s->answered, 1) + 1 >= s->o.expect)
		atomic_store(&s->stop, true);
}

static bool verb_is(const char *line, size_t len, const char *verb)
{
	size_t n = strlen(verb);

	return len >= n && strncasecmp(line, verb, n) == 0 && (len == n || line[n] == ' ');
}

static void cmd_ehlo(struct sink_conn *c, bool ehlo)
{
	struct sink *s = c->w->s;

	reset_tx(c);
	if (!ehlo) {
		reply(c, "250 %s", s->o.hostname);
		return;
	}
	reply(c, "250-%s", s->o.hostname);
	reply(c, "250-PIPELINING");
	reply(c, "250-8BITMIME");
	if (s->o.chunking)
		reply(c, "250-CHUNKING");
	if (s->ctx != NULL && !c->tls)
		reply(c, "250-STARTTLS");
	reply(c, "250 ENHANCEDSTATUSCODES");
}

/* "BDAT <size> [LAST]" */
static void cmd_bdat(struct sink_conn *c, const char *line, size_t len)
{
	char buf[64], *end;
	unsigned long long n;

	if (!c->w->s->o.chunking) {
		reply(c, "502 5.5.1 CHUNKING not offered");
		return;
	}
	snprintf(buf, sizeof(buf), "%.*s", (int)(len < 63 ? len : 63), line);
	errno = 0;
	n = strtoull(buf + 4, &end, 10);
	if (errno != 0 || end == buf + 4 || (*end != '\0' && strcasecmp(end, " LAST") != 0)) {
		reply(c, "501 5.5.4 Syntax: BDAT <size> [LAST]");
		c->quit = true; /* the chunk's length is unknown: the stream is lost */
		return;
	}
	if (!c->in_bdat) {
		c->in_bdat = true;
		c->msg_bytes = 0;
		c->bdat_ok = c->mail && c->rcpts > 0;
		if (c->vm != NULL)
			vmsg_reset(c->vm);
	}
	c->bdat_left = n;
	c->bdat_last = *end != '\0';
	c->st = SS_BDAT;
}

static void bdat_end(struct sink_conn *c)
{
	c->st = SS_CMD;
	if (!c->bdat_ok) {
		reply(c, "503 5.5.1 Error: need MAIL and RCPT before BDAT");
		if (c->bdat_last)
			reset_tx(c);
	} else if (c->bdat_last) {
		message_end(c, c->msg_bytes);
	} else {
		reply(c, "250 2.0.0 %" PRIu64 " octets received", c->msg_bytes);
	}
}

static void command(struct sink_conn *c, const char *line, size_t len)
{
	struct sink *s = c->w->s;

	if (verb_is(line, len, "EHLO") || verb_is(line, len, "HELO")) {
		cmd_ehlo(c, line[0] == 'E' || line[0] == 'e');
	} else if (verb_is(line, len, "MAIL")) {
		if (s->o.verify_client && !c->verified)
			reply(c, "530 5.7.0 A verified client certificate is required");
		else if (c->mail)
			reply(c, "503 5.5.1 Error: nested MAIL command");
		else {
			c->mail = true;
			first_mail(c->w);
			reply(c, "250 2.1.0 Ok");
		}
	} else if (verb_is(line, len, "RCPT")) {
		if (!c->mail) {
			reply(c, "503 5.5.1 Error: need MAIL command");
		} else {
			c->rcpts++;
			reply(c, "250 2.1.5 Ok");
		}
	} else if (verb_is(line, len, "DATA")) {
		if (!c->mail || c->rcpts == 0) {
			reply(c, "554 5.5.1 Error: no valid recipients");
		} else {
			reply(c, "354 End data with <CR><LF>.<CR><LF>");
			c->st = SS_DATA;
			dscan_reset(&c->scan);
			if (c->vm != NULL)
				vmsg_reset(c->vm);
		}
	} else if (verb_is(line, len, "BDAT")) {
		cmd_bdat(c, line, len);
	} else if (verb_is(line, len, "STARTTLS")) {
		if (s->ctx == NULL)
			reply(c, "502 5.5.1 STARTTLS not offered (no --cert)");
		else if (c->tls)
			reply(c, "503 5.5.1 Error: TLS already active");
		else {
			reply(c, "220 2.0.0 Ready to start TLS");
			c->starttls_next = true;
		}
	} else if (verb_is(line, len, "RSET")) {
		reset_tx(c);
		reply(c, "250 2.0.0 Ok");
	} else if (verb_is(line, len, "NOOP")) {
		reply(c, "250 2.0.0 Ok");
	} else if (verb_is(line, len, "QUIT")) {
		reply(c, "221 2.0.0 Bye");
		c->quit = true;
	} else if (verb_is(line, len, "VRFY")) {
		reply(c, "252 2.0.0 Cannot VRFY user");
	} else {
		reply(c, "500 5.5.2 Error: command not recognized");
	}
}

/* Runs everything the input buffer holds; returns bytes used. */
static size_t run_input(struct sink_conn *c)
{
	size_t pos = 0;

	while (!c->quit && !c->starttls_next) {
		char *in = c->x.in + pos;
		size_t avail = c->x.in_len - pos;

		if (c->st == SS_DATA) {
			bool done;
			pos +=
			    dscan_feed(&c->scan, in, avail, &done, c->vm ? vmsg_feed : NULL, c->vm);
			if (!done)
				break;
			message_end(c, c->scan.bytes);
		} else if (c->st == SS_BDAT) {
			size_t take = avail < c->bdat_left ? avail : (size_t)c->bdat_left;

			if (c->vm != NULL && c->bdat_ok)
				vmsg_feed(c->vm, in, take);
			c->msg_bytes += take;
			c->bdat_left -= take;
			pos += take;
			if (c->bdat_left > 0)
				break;
			bdat_end(c);
		} else {
			char *nl;
			size_t len;

			if (xprt_pending(&c->x) > OUT_HIGH) {
				c->blocked = true;
				break;
			}
			nl = memchr(in, '\n', avail < CMD_LINE_MAX ? avail : CMD_LINE_MAX);
			if (nl == NULL) {
				if (avail >= CMD_LINE_MAX) {
					reply(c, "500 5.5.2 Error: line too long");
					c->quit = true;
				}
				break;
			}
			pos += (size_t)(nl - in) + 1;
			len = (size_t)(nl - in);
			if (len > 0 && in[len - 1] == '\r')
				len--;
			command(c, in, len);
		}
	}
	return pos;
}

static void process(struct sink_conn *c)
{
	size_t used = run_input(c);

	if (used > 0)
		xprt_consume(&c->x, used);
	flush(c);
	if (c->quit && !c->x.writing && xprt_pending(&c->x) == 0)
		close_conn(c);
	else if (!c->quit && !c->starttls_next && !c->blocked)
		xprt_read(&c->x);
}

static void tls_ok(struct sink_conn *c)
{
	struct sink_worker *w = c->w;

	c->tls = true;
	w->st.tls_connections++;
	w->st.ktls_rx += c->x.ktls.rx;
	w->st.ktls_tx += c->x.ktls.tx;
	c->verified = bench_tls_peer_verified(c->x.ssl);
	if (c->smtps) {
		reply(c, "220 %s ESMTP krelay-bench", w->s->o.hostname);
		flush(c);
	}
	xprt_read(&c->x);
}

static void written(struct sink_conn *c)
{
	if (c->starttls_next) {
		c->starttls_next = false;
		reset_tx(c);
		xprt_discard_input(&c->x); /* RFC 3207 4.2: nothing pipelined behind STARTTLS */
		xprt_start_tls(&c->x, SSL_new(c->w->s->ctx), true);
	} else if (c->quit) {
		close_conn(c);
	} else if (c->blocked) {
		c->blocked = false;
		process(c);
	} else if (atomic_load(&c->w->s->stop)) {
		close_conn(c); /* stopping: the last reply is out */
	}
}

static void closed(struct sink_conn *c)
{
	struct sink_worker *w = c->w;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	w->nconns--;
	free(c->vm);
	free(c);
}

static void conn_cb(void *owner, enum xprt_event ev, int err)
{
	struct sink_conn *c = owner;

	if (c->closing && ev != XPRT_CLOSED)
		return;
	switch (ev) {
	case XPRT_READ:
		process(c);
		break;
	case XPRT_WRITTEN:
		written(c);
		break;
	case XPRT_TLS_OK:
		tls_ok(c);
		break;
	case XPRT_EOF:
		close_conn(c);
		break;
	case XPRT_ERROR:
	case XPRT_TIMEOUT:
		c->w->st.connection_errors++;
		close_conn(c);
		break;
	case XPRT_CLOSED:
		closed(c);
		break;
	}
}
