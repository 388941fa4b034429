/* ring: io_uring setup, SQE allocation with submit-on-full, batched CQE
 * dispatch.  Loop shape: submit_and_wait_timeout, drain CQEs into a local
 * batch, cq_advance once, then run callbacks (no callback re-enters the loop). */
#include "ring.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_BATCH 256

static const char *const kind_names[RING_KIND_COUNT] = {
    [RING_ACCEPT] = "accept",   [RING_RECV] = "recv",
    [RING_SEND] = "send",       [RING_POLL] = "poll",
    [RING_TIMEOUT] = "timeout", [RING_LINK_TIMEOUT] = "link_timeout",
    [RING_OPEN] = "openat",     [RING_WRITE] = "write",
    [RING_FSYNC] = "fsync",     [RING_RENAME] = "renameat",
    [RING_UNLINK] = "unlinkat", [RING_CLOSE] = "close",
    [RING_CANCEL] = "cancel",   [RING_READ] = "read",
    [RING_NOP] = "nop",         [RING_CONNECT] = "connect",
    [RING_SPLICE] = "splice",   [RING_TIMEOUT_REMOVE] = "timeout_remove",
};

const char *ring_kind_name(unsigned kind)
{
	return kind < RING_KIND_COUNT ? kind_names[kind] : "?";
}

static int64_t clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void tick_cb(struct ring_op *op, int res, unsigned flags);

int ring_init(struct ring *r, unsigned entries)
{
	struct io_uring_params p;
	int ret;

	memset(r, 0, sizeof(*r));
	r->now = clock_ns();
	wheel_init(&r->wheel, r->now);
	ring_op_init(&r->op_tick, RING_TIMEOUT, tick_cb, r);
	r->tick_at = r->tick_want = INT64_MAX;
	r->defer_tail = &r->defer_head;
	memset(&p, 0, sizeof(p));
	/* One thread owns each ring: ask for the cheapest task-work mode and
	 * fall back on older kernels (liburing's echo-server does the same). */
	/* Created disabled: SINGLE_ISSUER binds the ring to the task that
	 * enables it, the worker thread (ring_enable). */
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
	          IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
	ret = io_uring_queue_init_params(entries, &r->uring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
		ret = io_uring_queue_init_params(entries, &r->uring, &p);
	}
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(entries, &r->uring, &p);
	}
	return ret;
}

int ring_enable(struct ring *r)
{
	if (!(r->uring.flags & IORING_SETUP_R_DISABLED))
		return 0;
	/* liburing 2.3's library lacks io_uring_enable_rings: call the kernel. */
	if (syscall(__NR_io_uring_register, r->uring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL,
	            0) < 0)
		return -errno;
	return 0;
}

void ring_exit(struct ring *r)
{
	io_uring_queue_exit(&r->uring);
}

int ring_flush(struct ring *r)
{
	int ret = 0;

	if (r->prepared) {
		ret = io_uring_submit(&r->uring);
		if (ret >= 0) {
			r->submits++;
			r->prepared = 0;
		}
	}
	return ret;
}

static struct io_uring_sqe *ring_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&r->uring)) == NULL) {
		/* SQ full: hand what we have to the kernel and try again. */
		int ret = io_uring_submit(&r->uring);
		assert(ret >= 0 || ret == -EBUSY || ret == -EAGAIN);
		if (ret >= 0)
			r->submits++;
		r->prepared = 0;
	}
	r->prepared++;
	r->last = sqe;
	return sqe;
}

void ring_reserve(struct ring *r, unsigned n)
{
	if (io_uring_sq_space_left(&r->uring) >= n)
		return;
	int ret = io_uring_submit(&r->uring);
	assert(ret >= 0 || ret == -EBUSY || ret == -EAGAIN);
	if (ret >= 0)
		r->submits++;
	r->prepared = 0;
}

void ring_hardlink_last(struct ring *r)
{
	r->last->flags |= IOSQE_IO_HARDLINK;
}

void ring_op_init(struct ring_op *op, enum ring_kind kind, ring_cb cb, void *owner)
{
	op->cb = cb;
	op->owner = owner;
	op->kind = (uint16_t)kind;
	op->inflight = 0;
}

static void arm(struct io_uring_sqe *sqe, struct ring_op *op, bool linked)
{
	io_uring_sqe_set_data(sqe, op);
	if (linked)
		sqe->flags |= IOSQE_IO_LINK;
	op->inflight++;
}

/* ---- timers ---------------------------------------------------------------
 * The wheel's timeout is armed (absolute, CLOCK_MONOTONIC) for the end of
 * the first tick holding a timer, and moved earlier with a timeout update
 * when a timer armed since wants an earlier one.  Both happen once per turn,
 * before the ring waits (tick_sync). */

static void tick_sync(struct ring *r)
{
	struct io_uring_sqe *sqe;

	if (r->tick_want >= r->tick_at) {
		r->tick_want = INT64_MAX;
		return;
	}
	r->tick_at = r->tick_want;
	r->tick_want = INT64_MAX;
	r->tick_ts.tv_sec = r->tick_at / 1000000000ll;
	r->tick_ts.tv_nsec = r->tick_at % 1000000000ll;
	sqe = ring_sqe(r);
	if (ring_op_busy(&r->op_tick)) {
		/* its own completion is not wanted: user_data NULL */
		io_uring_prep_timeout_update(sqe, &r->tick_ts, (__u64)(uintptr_t)&r->op_tick,
		                             IORING_TIMEOUT_ABS);
		io_uring_sqe_set_data(sqe, NULL);
	} else {
		io_uring_prep_timeout(sqe, &r->tick_ts, 0, IORING_TIMEOUT_ABS);
		arm(sqe, &r->op_tick, false);
	}
}

static void tick_cb(struct ring_op *op, int res, unsigned flags)
{
	struct ring *r = op->owner;
	int64_t next;

	/* -ETIME: it fired.  Whatever the result, this timeout is gone. */
	r->tick_at = INT64_MAX;
	wheel_expire(&r->wheel, r->now);
	next = wheel_next(&r->wheel);
	if (next < r->tick_want)
		r->tick_want = next;
}

void ring_timer_arm(struct ring *r, struct wheel_timer *t, int64_t due)
{
	int64_t end = wheel_arm(&r->wheel, t, due);

	if (end < r->tick_want)
		r->tick_want = end;
}

void ring_timer_disarm(struct ring *r, struct wheel_timer *t)
{
	wheel_disarm(&r->wheel, t);
	/* The kernel timeout stays: a tick that finds nothing due costs one
	 * completion, less than removing and arming it again. */
}

void ring_cancel_op(struct ring *r, const struct ring_op *target)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)target, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

int ring_run_once(struct ring *r, int timeout_ms)
{
	struct {
		struct ring_op *op;
		int res;
		unsigned flags;
	} batch[RING_BATCH];
	struct __kernel_timespec ts = {
	    .tv_sec = timeout_ms / 1000,
	    .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
	};
	struct io_uring_cqe *cqe, *first = NULL;
	struct ring_op *deferred = r->defer_head;
	unsigned head, n = 0, nd = 0;
	int ret;

	tick_sync(r);
	/* With steps deferred (ring_nop) the turn must not sleep: it only
	 * collects what the kernel has finished. */
	if (deferred != NULL)
		ret = io_uring_submit_and_get_events(&r->uring);
	else
		ret = io_uring_submit_and_wait_timeout(&r->uring, &first, 1,
		                                       timeout_ms >= 0 ? &ts : NULL, NULL);
	r->prepared = 0;
	r->submits++;
	r->turns++;
	r->now = clock_ns();
	if (ret < 0 && ret != -ETIME && ret != -EINTR)
		return ret;

	io_uring_for_each_cqe (&r->uring, head, cqe) {
		if (n == RING_BATCH)
			break;
		batch[n].op = io_uring_cqe_get_data(cqe);
		batch[n].res = cqe->res;
		batch[n].flags = cqe->flags;
		n++;
	}
	io_uring_cq_advance(&r->uring, n);
	r->completions += n;

	for (unsigned i = 0; i < n; i++) {
		struct ring_op *op = batch[i].op;

		if (op == NULL || (uintptr_t)op == LIBURING_UDATA_TIMEOUT)
			continue; /* fire-and-forget SQE, or liburing's own timeout */
		/* A multishot accept keeps its slot while F_MORE is set; a
		 * zero-copy send's first CQE announces its notification. */
		if (!(batch[i].flags & IORING_CQE_F_MORE)) {
			assert(op->inflight > 0);
			op->inflight--;
		}
		r->by_kind[op->kind < RING_KIND_COUNT ? op->kind : 0]++;
		op->cb(op, batch[i].res, batch[i].flags);
	}
	/* Then the steps deferred before this turn's callbacks ran, and those
	 * they deferred; what these defer waits for the next turn. */
	deferred = r->defer_head;
	r->defer_head = NULL;
	r->defer_tail = &r->defer_head;
	for (struct ring_op *op = deferred, *next; op != NULL; op = next) {
		next = op->next_deferred; /* op may be deferred again by its callback */
		assert(op->inflight == 1);
		op->inflight--;
		nd++;
		op->cb(op, 0, 0);
	}
	r->deferred += nd;
	return (int)(n + nd);
}

void ring_accept_multishot(struct ring *r, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	arm(sqe, op, false);
}

void ring_recv(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_recv(sqe, fd, buf, len, 0);
	arm(sqe, op, linked);
}

void ring_send(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	arm(sqe, op, linked);
}

void ring_poll(struct ring *r, struct ring_op *op, int fd, unsigned events, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_poll_add(sqe, fd, events);
	arm(sqe, op, linked);
}

void ring_read(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len, uint64_t off)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
	arm(sqe, op, false);
}

void ring_link_timeout(struct ring *r, struct ring_op *op, struct __kernel_timespec *ts)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_link_timeout(sqe, ts, 0);
	arm(sqe, op, false);
}

void ring_timeout(struct ring *r, struct ring_op *op, struct __kernel_timespec *ts)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_timeout(sqe, ts, 0, 0);
	arm(sqe, op, false);
}

void ring_openat(struct ring *r, struct ring_op *op, int dfd, const char *path, int flags,
                 mode_t mode)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_openat(sqe, dfd, path, flags, mode);
	arm(sqe, op, false);
}

void ring_write(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len,
                uint64_t off, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
	arm(sqe, op, linked);
}

void ring_fsync(struct ring *r, struct ring_op *op, int fd, bool datasync, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
	arm(sqe, op, linked);
}

void ring_renameat(struct ring *r, struct ring_op *op, int olddfd, const char *oldpath, int newdfd,
                   const char *newpath, unsigned flags, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_renameat(sqe, olddfd, oldpath, newdfd, newpath, flags);
	arm(sqe, op, linked);
}

void ring_unlinkat(struct ring *r, struct ring_op *op, int dfd, const char *path)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_unlinkat(sqe, dfd, path, 0);
	arm(sqe, op, false);
}

void ring_close(struct ring *r, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_close(sqe, fd);
	arm(sqe, op, false);
}

void ring_cancel_fd(struct ring *r, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	arm(sqe, op, false);
}

void ring_nop(struct ring *r, struct ring_op *op)
{
	assert(op->inflight == 0); /* on the list once, and nowhere else */
	op->inflight++;
	op->next_deferred = NULL;
	*r->defer_tail = op;
	r->defer_tail = &op->next_deferred;
}

void ring_connect(struct ring *r, struct ring_op *op, int fd, const struct sockaddr *sa,
                  socklen_t len, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_connect(sqe, fd, sa, len);
	arm(sqe, op, linked);
}

void ring_splice(struct ring *r, struct ring_op *op, int fd_in, int64_t off_in, int fd_out,
                 unsigned len, bool linked)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_splice(sqe, fd_in, off_in, fd_out, -1, len, SPLICE_F_MOVE);
	arm(sqe, op, linked);
}

void ring_timeout_remove(struct ring *r, struct ring_op *op, struct ring_op *target)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)target, 0);
	arm(sqe, op, false);
}
