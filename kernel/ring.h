/* ring: one io_uring per worker thread, typed operation records, batched
 * completion dispatch.  The ring knows nothing about SMTP or TLS. */
#ifndef KRELAY_RING_H
#define KRELAY_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wheel.h"

struct ring_op;

/* Called once per completion of the operation; op may be reused or freed by
 * the callee only when it holds no other completion (see ring_op_busy). */
typedef void (*ring_cb)(struct ring_op *op, int res, unsigned flags);

enum ring_kind {
	RING_ACCEPT,
	RING_RECV,
	RING_SEND,
	RING_POLL,
	RING_TIMEOUT,
	RING_LINK_TIMEOUT,
	RING_OPEN,
	RING_WRITE,
	RING_FSYNC,
	RING_RENAME,
	RING_UNLINK,
	RING_CLOSE,
	RING_CANCEL,
	RING_READ,
	RING_NOP,
	RING_CONNECT,
	RING_SPLICE,
	RING_TIMEOUT_REMOVE,
	RING_KIND_COUNT
};

/* Embedded in its owner; user_data of every SQE points at one of these. */
struct ring_op {
	ring_cb cb;
	void *owner;
	uint16_t kind;                 /* enum ring_kind, for tracing and error tables */
	uint16_t inflight;             /* completions still expected */
	struct ring_op *next_deferred; /* ring_nop's list */
};

struct ring {
	struct io_uring uring;
	struct io_uring_sqe *last; /* the SQE prepared last */
	unsigned prepared;         /* SQEs prepared since last submit */
	uint64_t completions;
	uint64_t submits;
	uint64_t turns;                    /* ring_run_once calls */
	uint64_t deferred;                 /* ring_nop completions (no kernel involved) */
	uint64_t by_kind[RING_KIND_COUNT]; /* completions, by the kind of op */
	int64_t now;                       /* CLOCK_MONOTONIC ns, read once per turn */
	/* Timers (ring_timer_arm): one wheel, one IORING_OP_TIMEOUT for it. */
	struct wheel wheel;
	struct ring_op op_tick;
	struct __kernel_timespec tick_ts;
	int64_t tick_at;   /* when the armed tick fires; INT64_MAX: none armed */
	int64_t tick_want; /* the earliest tick a timer armed since asked for */
	/* ring_nop: ops to complete on the next turn, in order */
	struct ring_op *defer_head, **defer_tail;
};

int ring_init(struct ring *r, unsigned entries);
/* Call from the thread that will own the ring, before anything else. */
int ring_enable(struct ring *r);
void ring_exit(struct ring *r);
const char *ring_kind_name(unsigned kind);

/* One turn of the loop: submit what is prepared, wait up to timeout_ms for at
 * least one completion, drain all completions, mark them seen at once, then
 * run their callbacks.  Returns the number of completions handled or -errno. */
int ring_run_once(struct ring *r, int timeout_ms);

/* Submit what is prepared without waiting. */
int ring_flush(struct ring *r);

void ring_op_init(struct ring_op *op, enum ring_kind kind, ring_cb cb, void *owner);

/* Timers: t->fire runs from the ring's dispatch (a turn of the loop), never
 * inside the call that arms it, once due (CLOCK_MONOTONIC ns, see
 * ring_now) has passed: at most WHEEL_TICK_NS late.  Arming or moving a
 * timer is a list operation; the ring keeps one kernel timeout for all. */
static inline int64_t ring_now(const struct ring *r)
{
	return r->now; /* as of the start of this turn */
}
void ring_timer_arm(struct ring *r, struct wheel_timer *t, int64_t due);
void ring_timer_disarm(struct ring *r, struct wheel_timer *t);
/* Asks the kernel to cancel target if it is in flight (it then completes
 * with -ECANCELED); the request itself reports nothing. */
void ring_cancel_op(struct ring *r, const struct ring_op *target);

/* Makes room for n SQEs, submitting what is prepared when needed: a linked
 * chain of up to n SQEs prepared next is then submitted whole (a submission
 * ends a chain).  n must not exceed the ring's size. */
void ring_reserve(struct ring *r, unsigned n);
/* Links the SQE prepared last to the next one even if it fails
 * (IOSQE_IO_HARDLINK). */
void ring_hardlink_last(struct ring *r);
static inline bool ring_op_busy(const struct ring_op *op)
{
	return op->inflight != 0;
}

/* Preparation helpers: each takes an idle op record and arms it. */
void ring_accept_multishot(struct ring *r, struct ring_op *op, int fd);
void ring_recv(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len, bool linked);
void ring_send(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len,
               bool linked);
void ring_poll(struct ring *r, struct ring_op *op, int fd, unsigned events, bool linked);
void ring_read(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len, uint64_t off);
/* Arms a link timeout for the SQE prepared just before (which must have been
 * prepared with linked=true). */
void ring_link_timeout(struct ring *r, struct ring_op *op, struct __kernel_timespec *ts);
void ring_timeout(struct ring *r, struct ring_op *op, struct __kernel_timespec *ts);
/* Fires the timeout armed on target now (it completes with -ECANCELED). */
void ring_timeout_remove(struct ring *r, struct ring_op *op, struct ring_op *target);
void ring_openat(struct ring *r, struct ring_op *op, int dfd, const char *path, int flags,
                 mode_t mode);
void ring_write(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len,
                uint64_t off, bool linked);
void ring_fsync(struct ring *r, struct ring_op *op, int fd, bool datasync, bool linked);
void ring_renameat(struct ring *r, struct ring_op *op, int olddfd, const char *oldpath, int newdfd,
                   const char *newpath, unsigned flags, bool linked);
void ring_unlinkat(struct ring *r, struct ring_op *op, int dfd, const char *path);
void ring_close(struct ring *r, struct ring_op *op, int fd);
void ring_connect(struct ring *r, struct ring_op *op, int fd, const struct sockaddr *sa,
                  socklen_t len, bool linked);
/* Moves len bytes from fd_in (at off_in, or -1 for a pipe) to fd_out. */
void ring_splice(struct ring *r, struct ring_op *op, int fd_in, int64_t off_in, int fd_out,
                 unsigned len, bool linked);
/* Completes (res 0) on the next turn of the loop, after that turn's kernel
 * completions: runs a step outside the caller's stack.  No kernel request:
 * the ring keeps the list, and a turn with something on it does not sleep. */
void ring_nop(struct ring *r, struct ring_op *op);
/* Cancels every operation pending on fd. */
void ring_cancel_fd(struct ring *r, struct ring_op *op, int fd);

#endif
