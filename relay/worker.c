/* worker: see worker.h. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "queue.h"

#define RING_ENTRIES      1024
#define SHUTDOWN_GRACE_MS 30000
#define METRICS_TICK_NS   1000000000LL /* how often the queue's picture is published */

static void accept_cb(struct ring_op *op, int res, unsigned flags);
static void retry_cb(struct ring_op *op, int res, unsigned flags);
static void wake_cb(struct ring_op *op, int res, unsigned flags);
static void metrics_tick(struct wheel_timer *t);

static int listen_on(const struct config_listen *l, char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (l->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, 1024) < 0)
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "Listen=%s: %s", l->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

int worker_init(struct worker *w, struct server *srv, unsigned index, const struct config *cfg,
                char *err, size_t errlen)
{
	int ret;

	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->index = index;
	w->wake_fd = -1;
	ret = ring_init(&w->ring, RING_ENTRIES);
	if (ret < 0) {
		snprintf(err, errlen, "io_uring set-up: %s", strerror(-ret));
		return -1;
	}
	w->smtp.ring = &w->ring;
	w->smtp.spool = &w->spool;
	w->smtp.srv = srv;
	w->mw = metrics_worker(srv->metrics, index);
	w->smtp.mw = w->mw;
	w->metrics_on = cfg->metrics_listen.addrlen != 0;
	wheel_timer_init(&w->metrics_tick, metrics_tick, w);
	if (w->metrics_on && index == 0) {
		w->metrics_srv =
		    metrics_srv_new(&w->ring, srv->metrics, &cfg->metrics_listen, err, errlen);
		if (w->metrics_srv == NULL)
			return -1;
	}
	for (size_t i = 0; i < cfg->listen_count; i++) {
		struct listener *l = &w->listeners[i];
		l->w = w;
		l->smtps = cfg->listen[i].smtps;
		snprintf(l->text, sizeof(l->text), "%s", cfg->listen[i].text);
		l->fd = listen_on(&cfg->listen[i], err, errlen);
		if (l->fd < 0)
			return -1;
		ring_op_init(&l->op, RING_ACCEPT, accept_cb, l);
		ring_op_init(&l->op_retry, RING_TIMEOUT, retry_cb, l);
		w->nlisteners++;
	}
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -1;
	}
	ring_op_init(&w->op_wake, RING_READ, wake_cb, w);
	return 0;
}

int worker_open_spool(struct worker *w, const struct config *cfg, const char *user, char *err,
                      size_t errlen)
{
	int ret = spool_init(&w->spool, &w->ring, cfg->queue_directory, w->index);

	if (ret < 0) {
		snprintf(err, errlen, "QueueDirectory %s: %s%s%s", cfg->queue_directory,
		         strerror(-ret), user ? " as user " : "", user ? user : "");
		return -1;
	}
	spool_share_full(&w->spool, &w->srv->spool_full);
	w->spool.mw = w->mw;
	w->spool.segs.mw = w->mw;
	return 0;
}

static void accept_cb(struct ring_op *op, int res, unsigned flags)
{
	struct listener *l = op->owner;
	struct worker *w = l->w;

	if (res >= 0) {
		if (w->stopping)
			close(res);
		else
			smtp_session_start(&w->smtp, res, l->smtps, l->text);
	} else if (res != -ECANCELED && !w->stopping) {
		log_warnx("accept on %s: %s", l->text, strerror(-res));
	}
	if (!(flags & IORING_CQE_F_MORE) && !w->stopping) {
		/* Re-arm; after an error (EMFILE...) wait a little first. */
		if (res < 0) {
			l->retry_ts.tv_sec = 0;
			l->retry_ts.tv_nsec = 100 * 1000 * 1000;
			ring_timeout(&w->ring, &l->op_retry, &l->retry_ts);
		} else {
			ring_accept_multishot(&w->ring, &l->op, l->fd);
		}
	}
}

static void retry_cb(struct ring_op *op, int res, unsigned flags)
{
	struct listener *l = op->owner;

	if (!l->w->stopping && !ring_op_busy(&l->op))
		ring_accept_multishot(&l->w->ring, &l->op, l->fd);
}

static void stop_accepting(struct worker *w)
{
	w->stopping = true;
	for (unsigned i = 0; i < w->nlisteners; i++) {
		/* Wakes the multishot accept, which then ends with an error CQE;
		 * the fd itself is closed after the loop. */
		shutdown(w->listeners[i].fd, SHUT_RDWR);
	}
	metrics_srv_stop(w->metrics_srv);
	ring_timer_disarm(&w->ring, &w->metrics_tick);
	queue_stop(w->queue);
	smtp_server_shutdown(&w->smtp);
}

static void metrics_tick(struct wheel_timer *t)
{
	struct worker *w = t->owner;

	if (w->stopping)
		return;
	queue_metrics_publish(w->queue);
	ring_timer_arm(&w->ring, &w->metrics_tick, ring_now(&w->ring) + METRICS_TICK_NS);
}

static void wake_cb(struct ring_op *op, int res, unsigned flags)
{
	struct worker *w = op->owner;

	if (atomic_load(&w->srv->stopping)) {
		if (!w->stopping)
			stop_accepting(w);
		return;
	}
	if (w->queue != NULL)
		queue_reloaded(w->queue); /* nothing unless a reload came */
	if (atomic_exchange(&w->requests, false))
		queue_requests(w->queue);
	if (atomic_exchange(&w->flush, false))
		queue_flush(w->queue);
	ring_read(&w->ring, &w->op_wake, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
}

static bool listeners_idle(struct worker *w)
{
	for (unsigned i = 0; i < w->nlisteners; i++)
		if (ring_op_busy(&w->listeners[i].op) || ring_op_busy(&w->listeners[i].op_retry))
			return false;
	return true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int waited_ms = 0, ret = ring_enable(&w->ring);

	char err[512];

	if (ret < 0)
		fatalx("worker %u: io_uring enable: %s", w->index, strerror(-ret));
	struct queue_ctx qc = {
	    .ring = &w->ring,
	    .spool = &w->spool,
	    .srv = w->srv,
	    .worker_index = w->index,
	    .mw = w->mw,
	};
	w->queue = queue_new(&qc, err, sizeof(err));
	if (w->queue == NULL)
		fatalx("worker %u: relaying: %s", w->index, err);
	w->smtp.queue = w->queue;
	for (size_t i = 0; i < w->nrecover; i++) {
		if (w->queue_only)
			queue_park(w->queue, w->recover[i]);
		else
			queue_recover(w->queue, w->recover[i]);
		free(w->recover[i]);
	}
	free(w->recover);
	w->recover = NULL;
	for (unsigned i = 0; i < w->nlisteners; i++)
		ring_accept_multishot(&w->ring, &w->listeners[i].op, w->listeners[i].fd);
	ring_read(&w->ring, &w->op_wake, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
	if (w->metrics_srv != NULL)
		metrics_srv_start(w->metrics_srv);
	if (w->metrics_on)
		metrics_tick(&w->metrics_tick); /* the first picture now */
	log_buffer_start();
	for (;;) {
		/* the last turn's lines go out before its submissions do */
		log_flush();
		/* No timeout while running: stopping comes through wake_fd,
		 * timers through the ring's own (a wait with a timeout arms
		 * and cancels a kernel timer every turn). */
		ret = ring_run_once(&w->ring, w->stopping ? 100 : -1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			fatalx("worker %u: io_uring: %s", w->index, strerror(-ret));
		if (!w->stopping)
			continue;
		if (w->smtp.nsessions == 0 && listeners_idle(w) && queue_idle(w->queue) &&
		    metrics_srv_idle(w->metrics_srv))
			break;
		if (ret == 0 && (waited_ms += 100) >= SHUTDOWN_GRACE_MS) {
			log_warnx("worker %u: %u sessions still open after %d ms: leaving them",
			          w->index, w->smtp.nsessions, SHUTDOWN_GRACE_MS);
			break;
		}
	}
	/* Let the last completions (cancelled lookups, closes) run. */
	for (int i = 0; i < 100 && ring_run_once(&w->ring, 10) > 0; i++)
		log_flush();
	log_buffer_stop();
	return NULL;
}

int worker_start(struct worker *w)
{
	return -pthread_create(&w->thread, NULL, worker_main, w);
}

void worker_requests(struct worker *w)
{
	atomic_store(&w->requests, true);
	worker_wake(w);
}

void worker_flush(struct worker *w)
{
	atomic_store(&w->flush, true);
	worker_wake(w);
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->wake_fd, &one, sizeof(one)) < 0)
		log_warnx("worker %u: wake: %s", w->index, strerror(errno));
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	if (w->queue != NULL) {
		const struct queue_stats *st = queue_stats(w->queue);
		w->relayed = st->delivered;
		w->bounced = st->failed;
		w->deferred = st->deferred;
		w->connections = st->connections;
		queue_free(w->queue);
		w->queue = NULL;
	}
	metrics_srv_free(w->metrics_srv);
	w->metrics_srv = NULL;
	spool_exit(&w->spool);
	close(w->wake_fd);
	for (unsigned i = 0; i < w->nlisteners; i++)
		if (w->listeners[i].fd >= 0)
			close(w->listeners[i].fd);
	ring_exit(&w->ring);
}
