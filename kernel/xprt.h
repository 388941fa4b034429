/* xprt: a stream connection on the ring, cleartext or TLS, seen by its owner
 * only through events (OpenSMTPD's ioev habit: TLS stays inside the I/O
 * layer).  Every completion reaches the owner from the ring's dispatch, never
 * from inside an xprt_* call, so the owner may close itself in any handler.
 *
 * Cleartext: IORING_OP_RECV / IORING_OP_SEND, each with a timer on the
 * ring's wheel (ring_timer_arm).
 * TLS: OpenSSL over a socket BIO on the non-blocking fd, driven by
 * IORING_OP_POLL_ADD readiness; with kTLS TX on, plaintext goes out through
 * IORING_OP_SEND and the kernel encrypts it. */
#ifndef KRELAY_XPRT_H
#define KRELAY_XPRT_H

#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ktls.h"
#include "ring.h"

enum xprt_event {
	XPRT_READ,    /* in_len grew */
	XPRT_WRITTEN, /* everything queued was sent */
	XPRT_TLS_OK,  /* handshake done; ktls filled in */
	XPRT_EOF,     /* peer closed */
	XPRT_ERROR,   /* err: -errno or -EPROTO (TLS), see xprt->error */
	XPRT_TIMEOUT, /* a read or write waited longer than the timeout (or deadline) */
	XPRT_CLOSED,  /* after xprt_close: nothing in flight, fd closed; owner may free */
};

typedef void (*xprt_cb)(void *owner, enum xprt_event ev, int err);

/* A file being sent (xprt_send_file). */
struct xprt_file {
	bool active;
	bool splice;
	int fd;
	uint64_t off, left, sent;
	int pipe[2];
	size_t pipe_fill;
	unsigned pending; /* bytes asked of the file->pipe splice in flight */
	int splice_res;
	char *buf; /* copy path */
	size_t buf_len, buf_off;
	bool into_out; /* read in behind the queued output (xprt_file_joins_output) */
};

struct xprt {
	struct ring *ring;
	int fd;
	void *owner;
	xprt_cb cb;
	const struct caps *caps;

	SSL *ssl; /* NULL while cleartext */
	bool handshaking;
	bool keyupdate;  /* peer sent a TLS 1.3 KeyUpdate */
	bool tls_client; /* our side of the handshake */
	bool tls_wbuf;   /* records go out through a buffering BIO (tls_write) */
	struct ktls_state ktls;

	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap, out_max;

	unsigned timeout_s;
	bool deadline_mode;  /* xprt_use_deadline */
	unsigned min_rate;   /* bytes per second that earn a second more; 0: none */
	int64_t deadline_ns; /* CLOCK_MONOTONIC; 0: starts with the next read or write */
	bool reading, writing, closing, closed;
	int rd_res, wr_res;
	int rd_to_res, wr_to_res; /* -ETIME once the direction's timer fired */
	struct wheel_timer rd_timer, wr_timer;
	struct ring_op op_rd, op_wr, op_cancel, op_splice;
	struct xprt_file file;
	const char *body_path; /* "splice", "ssl_write" or "copy": the last file sent */

	char error[160]; /* last TLS or socket error, for the log */
};

/* in_cap: input buffer size; out_max: most bytes of replies held. */
int xprt_init(struct xprt *x, struct ring *ring, int fd, const struct caps *caps, size_t in_cap,
              size_t out_max, xprt_cb cb, void *owner);
/* Each read and each write must finish within seconds (an idle timer); in
 * deadline mode, everything from the next read or write on must. */
void xprt_set_timeout(struct xprt *x, unsigned seconds);
/* Deadline mode, for a server facing untrusted peers: each xprt_set_timeout
 * (and the end of a TLS handshake) starts a deadline, counted from the next
 * read or write, that bounds every read and write until the next one, so a
 * peer cannot stretch a command or a message by sending a byte at a time.
 * min_rate > 0 moves the deadline one second later per min_rate bytes
 * received (Postfix's smtpd_min_data_rate). */
void xprt_use_deadline(struct xprt *x, unsigned min_rate);

/* Arms one read unless one is pending or the input buffer is full. */
void xprt_read(struct xprt *x);
/* Drops n bytes from the front of the input buffer. */
void xprt_consume(struct xprt *x, size_t n);
/* Discards all buffered input (STARTTLS: RFC 3207 section 4.2). */
void xprt_discard_input(struct xprt *x);

/* Queues bytes for sending; returns -ENOBUFS past out_max. */
int xprt_write(struct xprt *x, const void *buf, size_t len);
/* Queues one protocol line: the formatted text (cut at 1000 octets) + CRLF. */
int xprt_vline(struct xprt *x, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
size_t xprt_pending(const struct xprt *x);
/* Starts sending what is queued; XPRT_WRITTEN when all of it is gone.  With
 * nothing queued it does nothing (no XPRT_WRITTEN). */
void xprt_flush(struct xprt *x);

/* Sends len bytes of fd from off; XPRT_WRITTEN when all are gone.  Spliced
 * (file -> pipe -> socket, never through user space) when allow_splice and the
 * socket takes plaintext (cleartext, or kTLS TX on); otherwise read through
 * one buffer and written (SSL_write on a userspace-TLS socket).  Nothing may
 * be in flight, and nothing queued unless xprt_file_joins_output said yes.
 * Returns 0 or -errno. */
int xprt_send_file(struct xprt *x, int fd, uint64_t off, uint64_t len, bool allow_splice);
/* True when a file of len bytes would be copied (not spliced) and fits in
 * the output buffer behind what is queued: xprt_send_file then reads it in
 * there and sends both together. */
bool xprt_file_joins_output(struct xprt *x, uint64_t len, bool allow_splice);

/* Starts a server- or client-side handshake on ssl (taken over by x).  No
 * read or write may be pending. */
void xprt_start_tls(struct xprt *x, SSL *ssl, bool server);

/* Cancels what is in flight and closes; XPRT_CLOSED follows. */
void xprt_close(struct xprt *x);

#endif
