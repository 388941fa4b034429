/* xprt: see xprt.h.  Each direction has one operation record and one timer
 * on the ring's wheel, armed with the operation: a timer that fires cancels
 * the operation, which then completes with -ECANCELED and is reported as
 * XPRT_TIMEOUT.  (A linked timeout per operation cost a second submission
 * and a second completion for every read and write.) */
#include "xprt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ll

static void rd_cb(struct ring_op *op, int res, unsigned flags);
static void wr_cb(struct ring_op *op, int res, unsigned flags);
static void rd_expired(struct wheel_timer *t);
static void wr_expired(struct wheel_timer *t);
static void cancel_cb(struct ring_op *op, int res, unsigned flags);
static void splice_cb(struct ring_op *op, int res, unsigned flags);
static void splice_complete(struct xprt *x);

int xprt_init(struct xprt *x, struct ring *ring, int fd, const struct caps *caps, size_t in_cap,
              size_t out_max, xprt_cb cb, void *owner)
{
	memset(x, 0, sizeof(*x));
	x->ring = ring;
	x->fd = fd;
	x->caps = caps;
	x->cb = cb;
	x->owner = owner;
	x->in_cap = in_cap;
	x->out_max = out_max;
	x->timeout_s = 300;
	x->in = malloc(in_cap);
	if (x->in == NULL)
		return -ENOMEM;
	ring_op_init(&x->op_rd, RING_RECV, rd_cb, x);
	ring_op_init(&x->op_wr, RING_SEND, wr_cb, x);
	wheel_timer_init(&x->rd_timer, rd_expired, x);
	wheel_timer_init(&x->wr_timer, wr_expired, x);
	ring_op_init(&x->op_cancel, RING_CANCEL, cancel_cb, x);
	ring_op_init(&x->op_splice, RING_SPLICE, splice_cb, x);
	return 0;
}

void xprt_set_timeout(struct xprt *x, unsigned seconds)
{
	x->timeout_s = seconds;
	x->deadline_ns = 0;
}

void xprt_use_deadline(struct xprt *x, unsigned min_rate)
{
	x->deadline_mode = true;
	x->min_rate = min_rate;
	x->deadline_ns = 0;
}

/* When the next read or write must be done: the timeout from now, or in
 * deadline mode the deadline (started now if it has not begun; one already
 * past fires on the wheel's next tick, through the ring). */
static int64_t timeout_due(struct xprt *x)
{
	int64_t now = ring_now(x->ring), ns = (int64_t)x->timeout_s * NS_PER_S;

	if (!x->deadline_mode)
		return now + ns;
	if (x->deadline_ns == 0)
		x->deadline_ns = now + ns;
	return x->deadline_ns;
}

/* n bytes received: with a minimum rate, they buy the deadline time. */
static void credit(struct xprt *x, size_t n)
{
	if (x->deadline_mode && x->min_rate > 0 && x->deadline_ns != 0)
		x->deadline_ns += (int64_t)n * NS_PER_S / x->min_rate;
}

static void set_ssl_error(struct xprt *x, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char buf[120];

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(x->error, sizeof(x->error), "%s: %s", what, buf);
	} else {
		snprintf(x->error, sizeof(x->error), "%s: %s", what,
		         errno ? strerror(errno) : "connection closed");
	}
	ERR_clear_error();
}

/* Arms the timer of op_rd (just prepared by the caller). */
static void arm_rd_timeout(struct xprt *x)
{
	x->rd_to_res = 0;
	ring_timer_arm(x->ring, &x->rd_timer, timeout_due(x));
}

static void arm_wr_timeout(struct xprt *x)
{
	x->wr_to_res = 0;
	ring_timer_arm(x->ring, &x->wr_timer, timeout_due(x));
}

/* A direction's time is up: its operation is cancelled and, when it
 * completes with -ECANCELED, reported as a timeout.  The timer goes on
 * ticking: should the cancel find nothing to cancel (an operation still
 * queued behind the one it is linked to), the next tick asks again. */
static void expired(struct xprt *x, struct ring_op *op, struct wheel_timer *t, int *to_res)
{
	if (x->closing)
		return;
	*to_res = -ETIME;
	ring_cancel_op(x->ring, op);
	ring_timer_arm(x->ring, t, ring_now(x->ring) + WHEEL_TICK_NS);
}

static void rd_expired(struct wheel_timer *t)
{
	struct xprt *x = t->owner;

	if (x->reading)
		expired(x, &x->op_rd, t, &x->rd_to_res);
}

static void wr_expired(struct wheel_timer *t)
{
	struct xprt *x = t->owner;

	if (x->writing)
		expired(x, &x->op_wr, t, &x->wr_to_res);
}

static void rd_poll(struct xprt *x, unsigned events)
{
	x->reading = true;
	x->op_rd.kind = RING_POLL;
	ring_poll(x->ring, &x->op_rd, x->fd, events, false);
	arm_rd_timeout(x);
}

static void wr_poll(struct xprt *x, unsigned events)
{
	x->writing = true;
	x->op_wr.kind = RING_POLL;
	ring_poll(x->ring, &x->op_wr, x->fd, events, false);
	arm_wr_timeout(x);
}

void xprt_read(struct xprt *x)
{
	if (x->closing || x->reading || x->handshaking || x->in_len == x->in_cap)
		return;
	x->reading = true;
	if (x->ssl == NULL) {
		x->op_rd.kind = RING_RECV;
		ring_recv(x->ring, &x->op_rd, x->fd, x->in + x->in_len, x->in_cap - x->in_len,
		          false);
		arm_rd_timeout(x);
	} else if (SSL_has_pending(x->ssl)) {
		x->op_rd.kind = RING_NOP; /* OpenSSL holds data: no readiness will come */
		ring_nop(x->ring, &x->op_rd);
	} else {
		rd_poll(x, POLLIN);
	}
}

void xprt_consume(struct xprt *x, size_t n)
{
	assert(n <= x->in_len && !(x->reading && x->ssl == NULL));
	memmove(x->in, x->in + n, x->in_len - n);
	x->in_len -= n;
}

void xprt_discard_input(struct xprt *x)
{
	x->in_len = 0;
}

/* Returns a closing outcome for a direction whose op failed. */
static enum xprt_event failure(struct xprt *x, int res, int to_res, const char *dir)
{
	if (res == -ECANCELED && to_res == -ETIME) {
		snprintf(x->error, sizeof(x->error),
		         x->deadline_mode ? "%s deadline of %us passed" : "%s timeout after %us",
		         dir, x->timeout_s);
		x->deadline_ns = 0; /* the owner's last words get a deadline of their own */
		return XPRT_TIMEOUT;
	}
	snprintf(x->error, sizeof(x->error), "%s: %s", dir, strerror(-res));
	return XPRT_ERROR;
}

static void maybe_closed(struct xprt *x)
{
	if (x->closed || ring_op_busy(&x->op_rd) || ring_op_busy(&x->op_wr) ||
	    ring_op_busy(&x->op_cancel) || ring_op_busy(&x->op_splice))
		return;
	ring_timer_disarm(x->ring, &x->rd_timer);
	ring_timer_disarm(x->ring, &x->wr_timer);
	if (x->file.pipe[0] > 0) {
		close(x->file.pipe[0]);
		close(x->file.pipe[1]);
	}
	free(x->file.buf);
	x->file.buf = NULL;
	x->closed = true;
	if (x->ssl != NULL)
		SSL_free(x->ssl);
	x->ssl = NULL;
	close(x->fd);
	free(x->in);
	free(x->out);
	x->in = x->out = NULL;
	x->cb(x->owner, XPRT_CLOSED, 0); /* x may be dangling after this call */
}

/* Decrypts into the input buffer record after record while OpenSSL holds
 * bytes (read-ahead brings up to TLS_RBUF per read(2)) and tells the owner
 * once, not once per 16 KiB record, each followed by a turn of the ring.
 * It stops before a read(2) that would likely say EAGAIN. */
static void tls_read(struct xprt *x)
{
	size_t got = 0;
	int n, e;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		n = SSL_read(x->ssl, x->in + x->in_len, (int)(x->in_cap - x->in_len));
		if (x->keyupdate && x->ktls.tx) {
			snprintf(x->error, sizeof(x->error),
			         "peer sent a TLS KeyUpdate on a kTLS connection: closing");
			x->cb(x->owner, XPRT_ERROR, -EPROTO);
			return;
		}
		if (n <= 0)
			break;
		x->in_len += (size_t)n;
		got += (size_t)n;
		if (x->in_len == x->in_cap || !SSL_has_pending(x->ssl))
			break; /* full, or the next record needs a read(2) */
	}
	if (got > 0) {
		ERR_clear_error();
		credit(x, got);
		x->cb(x->owner, XPRT_READ, 0);
		return;
	}
	e = SSL_get_error(x->ssl, n);
	if (e == SSL_ERROR_WANT_READ) {
		rd_poll(x, POLLIN);
	} else if (e == SSL_ERROR_WANT_WRITE) {
		rd_poll(x, POLLOUT);
	} else if (e == SSL_ERROR_ZERO_RETURN ||
	           (e == SSL_ERROR_SYSCALL && errno == 0 && ERR_peek_error() == 0)) {
		x->cb(x->owner, XPRT_EOF, 0);
	} else {
		set_ssl_error(x, "TLS read");
		x->cb(x->owner, XPRT_ERROR, -EPROTO);
	}
}

/* Userspace TLS on the sending (client) side: records gather in a buffer
 * and reach the socket together (tls_write flushes it whenever its source
 * is drained), one write(2) per TLS_WBUF, not one per 16 KiB record. */
#define TLS_WBUF (256 << 10)
#define TLS_RBUF (64 << 10)

static void buffer_writes(struct xprt *x)
{
	BIO *sock = SSL_get_wbio(x->ssl), *buf = BIO_new(BIO_f_buffer());

	if (buf == NULL || BIO_set_write_buffer_size(buf, TLS_WBUF) <= 0) {
		BIO_free(buf);
		return;
	}
	BIO_up_ref(sock); /* SSL_set0_wbio drops the reference the old wbio held */
	SSL_set0_wbio(x->ssl, BIO_push(buf, sock));
	x->tls_wbuf = true;
}

static void hs_step(struct xprt *x)
{
	int r, e;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(x->ssl);
	if (r == 1) {
		x->handshaking = false;
		x->deadline_ns = 0; /* the handshake had its own */
		ktls_query(x->ssl, x->caps, &x->ktls);
		/* Records decrypted in user space: read whatever the socket
		 * holds in one read(2), not a header and then a body per record
		 * (never with kTLS RX, where the kernel hands out records). */
		if (!x->ktls.rx)
			SSL_set_read_ahead(x->ssl, 1);
		if (!x->ktls.tx && x->tls_client)
			buffer_writes(x);
		x->cb(x->owner, XPRT_TLS_OK, 0);
		return;
	}
	e = SSL_get_error(x->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		rd_poll(x, POLLIN);
	} else if (e == SSL_ERROR_WANT_WRITE) {
		rd_poll(x, POLLOUT);
	} else {
		set_ssl_error(x, "TLS handshake");
		x->cb(x->owner, XPRT_ERROR, -EPROTO);
	}
}

static void rd_complete(struct xprt *x)
{
	int res = x->rd_res;

	x->reading = false;
	if (x->closing) {
		maybe_closed(x);
		return;
	}
	if (x->op_rd.kind != RING_NOP && res < 0) {
		enum xprt_event ev = failure(x, res, x->rd_to_res, "read");
		x->cb(x->owner, ev, res);
		return;
	}
	if (x->handshaking) {
		hs_step(x);
	} else if (x->op_rd.kind == RING_RECV) {
		if (res == 0) {
			x->cb(x->owner, XPRT_EOF, 0);
			return;
		}
		x->in_len += (size_t)res;
		credit(x, (size_t)res);
		x->cb(x->owner, XPRT_READ, 0);
	} else {
		tls_read(x);
	}
}

static void rd_cb(struct ring_op *op, int res, unsigned flags)
{
	struct xprt *x = op->owner;

	x->rd_res = res;
	ring_timer_disarm(x->ring, &x->rd_timer);
	rd_complete(x);
}

int xprt_write(struct xprt *x, const void *buf, size_t len)
{
	size_t live = x->out_len - x->out_off;

	if (x->closing)
		return 0; /* nothing more goes out on a closing connection */
	/* The buffer never moves: a send in flight may point into it. */
	if (x->out == NULL) {
		x->out = malloc(x->out_max);
		if (x->out == NULL)
			return -ENOMEM;
		x->out_cap = x->out_max;
	}
	if (x->out_off > 0 && !x->writing) {
		memmove(x->out, x->out + x->out_off, live);
		x->out_len = live;
		x->out_off = 0;
	}
	if (x->out_len + len > x->out_cap)
		return -ENOBUFS;
	memcpy(x->out + x->out_len, buf, len);
	x->out_len += len;
	return 0;
}

int xprt_vline(struct xprt *x, const char *fmt, va_list ap)
{
	char buf[1024];
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);

	if (n < 0)
		return -EINVAL;
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)sizeof(buf) - 3;
	buf[n++] = '\r';
	buf[n++] = '\n';
	return xprt_write(x, buf, (size_t)n);
}

size_t xprt_pending(const struct xprt *x)
{
	return x->out_len - x->out_off;
}

/* What the write side sends next: the queued output, or a chunk of a file
 * being sent by copy. */
static const char *wsrc(struct xprt *x, size_t *len)
{
	if (x->file.active) {
		*len = x->file.buf_len - x->file.buf_off;
		return x->file.buf + x->file.buf_off;
	}
	*len = x->out_len - x->out_off;
	return x->out + x->out_off;
}

static void wadvance(struct xprt *x, size_t n)
{
	if (x->file.active)
		x->file.buf_off += n;
	else
		x->out_off += n;
}

static bool plain_socket(const struct xprt *x)
{
	return x->ssl == NULL || x->ktls.tx; /* the kernel sees (or encrypts) plaintext */
}

static void send_more(struct xprt *x)
{
	size_t len;
	const char *p = wsrc(x, &len);

	x->writing = true;
	x->op_wr.kind = RING_SEND;
	ring_send(x->ring, &x->op_wr, x->fd, p, len, false);
	arm_wr_timeout(x);
}

void xprt_flush(struct xprt *x)
{
	/* Nothing queued: nothing to do.  (A no-op completion here made every
	 * session that flushes while it waits spin through the ring.) */
	if (x->closing || x->writing || x->handshaking || x->file.active || xprt_pending(x) == 0)
		return;
	if (plain_socket(x)) {
		send_more(x);
		return;
	}
	x->writing = true;
	x->op_wr.kind = RING_NOP;
	ring_nop(x->ring, &x->op_wr);
}

static void file_next(struct xprt *x);

/* The current source is empty. */
static void source_done(struct xprt *x)
{
	if (x->file.active) {
		file_next(x);
		return;
	}
	x->out_off = x->out_len = 0;
	x->cb(x->owner, XPRT_WRITTEN, 0);
}

static void tls_write(struct xprt *x)
{
	size_t len;
	const char *p;

	while ((p = wsrc(x, &len)), len > 0) {
		int n, e;

		ERR_clear_error();
		errno = 0;
		n = SSL_write(x->ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
		if (n > 0) {
			wadvance(x, (size_t)n);
			continue;
		}
		e = SSL_get_error(x->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE) {
			wr_poll(x, POLLOUT);
		} else if (e == SSL_ERROR_WANT_READ) {
			wr_poll(x, POLLIN);
		} else {
			set_ssl_error(x, "TLS write");
			x->cb(x->owner, XPRT_ERROR, -EPROTO);
		}
		return;
	}
	if (x->tls_wbuf && BIO_wpending(SSL_get_wbio(x->ssl)) > 0) {
		BIO *b = SSL_get_wbio(x->ssl);
		ERR_clear_error();
		errno = 0;
		if (BIO_flush(b) <= 0) {
			if (BIO_should_retry(b)) {
				wr_poll(x, POLLOUT); /* write_step flushes the rest */
			} else {
				set_ssl_error(x, "TLS write");
				x->cb(x->owner, XPRT_ERROR, -EPROTO);
			}
			return;
		}
	}
	source_done(x);
}

/* The write side's next step once the current source may have more. */
static void write_step(struct xprt *x)
{
	size_t len;

	if (!plain_socket(x)) {
		tls_write(x);
		return;
	}
	wsrc(x, &len);
	if (len > 0)
		send_more(x);
	else
		source_done(x);
}

static void joined_read_done(struct xprt *x, size_t n);

static void wr_complete(struct xprt *x)
{
	int res = x->wr_res;

	x->writing = false;
	if (x->closing) {
		maybe_closed(x);
		return;
	}
	if (x->op_wr.kind == RING_SPLICE) {
		splice_complete(x); /* judges both halves of the pair itself */
		return;
	}
	if (x->op_wr.kind != RING_NOP && res < 0) {
		enum xprt_event ev = failure(x, res, x->wr_to_res, "write");
		x->cb(x->owner, ev, res);
		return;
	}
	if (x->op_wr.kind == RING_SEND)
		wadvance(x, (size_t)res);
	if (x->op_wr.kind == RING_READ) {
		/* a file chunk arrived for the copy path */
		if (res == 0) {
			snprintf(x->error, sizeof(x->error), "file ended early");
			x->cb(x->owner, XPRT_ERROR, -EIO);
			return;
		}
		if (x->file.into_out) {
			joined_read_done(x, (size_t)res);
			return;
		}
		x->file.buf_len = (size_t)res;
		x->file.buf_off = 0;
		x->file.off += (uint64_t)res;
		x->file.left -= (uint64_t)res;
	}
	write_step(x);
}

static void wr_cb(struct ring_op *op, int res, unsigned flags)
{
	struct xprt *x = op->owner;

	x->wr_res = res;
	ring_timer_disarm(x->ring, &x->wr_timer);
	if (!ring_op_busy(&x->op_splice))
		wr_complete(x);
}

static void splice_cb(struct ring_op *op, int res, unsigned flags)
{
	struct xprt *x = op->owner;

	x->file.splice_res = res;
	if (!ring_op_busy(&x->op_wr))
		wr_complete(x);
}

/* ---- sending a file ------------------------------------------------------
 * Splice (file -> pipe -> socket, two linked IORING_OP_SPLICE) when the
 * socket takes plaintext: cleartext, or kTLS TX.  Otherwise the copy path:
 * IORING_OP_READ into one buffer, then SSL_write (or send) from it. */

#define FILE_CHUNK (256u << 10)

static void splice_step(struct xprt *x)
{
	struct xprt_file *f = &x->file;

	x->writing = true;
	f->splice_res = 0;
	x->op_wr.kind = RING_SPLICE;
	ring_reserve(x->ring, 2); /* the pair goes to the kernel in one submission */
	if (f->pipe_fill == 0) {
		unsigned n = f->left < FILE_CHUNK ? (unsigned)f->left : FILE_CHUNK;
		f->pending = n;
		ring_splice(x->ring, &x->op_splice, f->fd, (int64_t)f->off, f->pipe[1], n, true);
		ring_splice(x->ring, &x->op_wr, f->pipe[0], -1, x->fd, n, false);
	} else {
		f->pending = 0;
		ring_splice(x->ring, &x->op_wr, f->pipe[0], -1, x->fd, (unsigned)f->pipe_fill,
		            false);
	}
	arm_wr_timeout(x);
}

static void splice_complete(struct xprt *x)
{
	struct xprt_file *f = &x->file;
	int in = f->pending ? f->splice_res : 0, out = x->wr_res;
	bool blocked = false;

	/* The socket (and pipe) are non-blocking: a full send buffer makes the
	 * splice return -EAGAIN; wait for POLLOUT and go on from the pipe. */
	if (in == -EAGAIN)
		in = 0, blocked = true;
	if (out == -EAGAIN)
		out = 0, blocked = true;
	if (out == -ECANCELED && in >= 0 && (unsigned)in < f->pending && x->wr_to_res != -ETIME)
		out = 0; /* a short first splice broke the link; the pipe drains next */
	if (in < 0 || (f->pending && in == 0 && !blocked)) {
		snprintf(x->error, sizeof(x->error), "splice from file: %s",
		         in == 0 ? "file ended early" : strerror(-in));
		x->cb(x->owner, XPRT_ERROR, in == 0 ? -EIO : in);
		return;
	}
	f->pipe_fill += (size_t)in;
	f->off += (uint64_t)in;
	f->left -= (uint64_t)in;
	if (out < 0) {
		enum xprt_event ev = failure(x, out, x->wr_to_res, "splice to socket");
		x->cb(x->owner, ev, out);
		return;
	}
	f->pipe_fill -= (size_t)out;
	f->sent += (uint64_t)out;
	if (blocked) {
		wr_poll(x, POLLOUT); /* write_step -> file_next resumes the splice */
		return;
	}
	file_next(x);
}

static void file_next(struct xprt *x)
{
	struct xprt_file *f = &x->file;

	if (f->splice) {
		if (f->left > 0 || f->pipe_fill > 0) {
			splice_step(x);
			return;
		}
	} else if (f->left > 0) {
		size_t n = f->left < FILE_CHUNK ? (size_t)f->left : FILE_CHUNK;
		f->sent += f->buf_len;
		x->writing = true;
		x->op_wr.kind = RING_READ;
		ring_read(x->ring, &x->op_wr, f->fd, f->buf, n, f->off);
		return;
	} else {
		f->sent += f->buf_len;
	}
	f->active = false;
	x->cb(x->owner, XPRT_WRITTEN, 0);
}

/* ---- a small file joined to the queued output ------------------------------
 * Read in behind what is queued (say "BDAT n LAST"), so that both go out in
 * one send, or one SSL_write (one TLS record up to 16 KiB), not two. */

#define JOIN_MAX (64u << 10)

static bool out_room(struct xprt *x, size_t len)
{
	if (x->out == NULL) {
		x->out = malloc(x->out_max);
		if (x->out == NULL)
			return false;
		x->out_cap = x->out_max;
	}
	if (x->out_off > 0) {
		memmove(x->out, x->out + x->out_off, x->out_len - x->out_off);
		x->out_len -= x->out_off;
		x->out_off = 0;
	}
	return x->out_cap - x->out_len >= len;
}

bool xprt_file_joins_output(struct xprt *x, uint64_t len, bool allow_splice)
{
	if (x->closing || x->writing || x->handshaking || x->file.active || len == 0 ||
	    len > JOIN_MAX || (allow_splice && plain_socket(x)))
		return false;
	return out_room(x, (size_t)len);
}

static void joined_read(struct xprt *x)
{
	struct xprt_file *f = &x->file;

	x->writing = true;
	x->op_wr.kind = RING_READ;
	ring_read(x->ring, &x->op_wr, f->fd, x->out + x->out_len, (size_t)f->left, f->off);
}

static void joined_read_done(struct xprt *x, size_t n)
{
	struct xprt_file *f = &x->file;

	x->out_len += n;
	f->off += n;
	f->left -= n;
	f->sent += n;
	if (f->left > 0) {
		joined_read(x); /* a short read: the rest */
		return;
	}
	/* the file is output now: sent as such, XPRT_WRITTEN when all is gone */
	f->active = false;
	f->into_out = false;
	write_step(x);
}

int xprt_send_file(struct xprt *x, int fd, uint64_t off, uint64_t len, bool allow_splice)
{
	struct xprt_file *f = &x->file;

	if (x->closing || x->writing || x->handshaking)
		return -EBUSY;
	if (xprt_pending(x) > 0) {
		if (!xprt_file_joins_output(x, len, allow_splice))
			return -EBUSY;
		f->fd = fd;
		f->off = off;
		f->left = len;
		f->sent = 0;
		f->splice = false;
		f->into_out = true;
		f->active = true;
		x->body_path = x->ssl != NULL ? "ssl_write" : "copy";
		joined_read(x);
		return 0;
	}
	f->into_out = false;
	f->fd = fd;
	f->off = off;
	f->left = len;
	f->sent = 0;
	f->buf_len = f->buf_off = 0;
	f->pipe_fill = 0;
	f->splice = allow_splice && plain_socket(x);
	if (f->splice && f->pipe[0] <= 0) {
		if (pipe2(f->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
			f->splice = false;
		else
			fcntl(f->pipe[1], F_SETPIPE_SZ, (int)FILE_CHUNK);
	}
	if (!f->splice && f->buf == NULL) {
		f->buf = malloc(FILE_CHUNK);
		if (f->buf == NULL)
			return -ENOMEM;
	}
	x->body_path = f->splice ? "splice" : x->ssl != NULL ? "ssl_write" : "copy";
	f->active = true;
	file_next(x);
	return 0;
}

void xprt_start_tls(struct xprt *x, SSL *ssl, bool server)
{
	assert(!x->reading && !x->writing && x->ssl == NULL);
	x->ssl = ssl;
	SSL_set_fd(ssl, x->fd);
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	ktls_watch_keyupdate(ssl, &x->keyupdate);
	/* Read-ahead (after the handshake) fills a buffer this large: one
	 * read(2) takes several records of a message body, not one. */
	if (server)
		SSL_set_default_read_buffer_len(ssl, TLS_RBUF);
	x->tls_client = !server;
	x->handshaking = true;
	x->reading = true;
	x->op_rd.kind = RING_NOP;
	ring_nop(x->ring, &x->op_rd);
}

static void cancel_cb(struct ring_op *op, int res, unsigned flags)
{
	maybe_closed(op->owner);
}

void xprt_close(struct xprt *x)
{
	if (x->closing)
		return;
	x->closing = true;
	if (x->ssl != NULL && !x->handshaking && x->error[0] == '\0') {
		ERR_clear_error();
		SSL_shutdown(x->ssl); /* best effort close_notify; never waits */
		if (x->tls_wbuf)
			(void)BIO_flush(SSL_get_wbio(x->ssl));
		ERR_clear_error();
	}
	/* Always go through the ring, so XPRT_CLOSED never fires inside this
	 * call: a cancel of what is in flight, or a deferred step when
	 * nothing is (most closes: no kernel request for them). */
	if (ring_op_busy(&x->op_rd) || ring_op_busy(&x->op_wr) || ring_op_busy(&x->op_splice)) {
		x->op_cancel.kind = RING_CANCEL;
		ring_cancel_fd(x->ring, &x->op_cancel, x->fd);
	} else {
		x->op_cancel.kind = RING_NOP;
		ring_nop(x->ring, &x->op_cancel);
	}
}
