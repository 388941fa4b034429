/* worker: one thread per core, each with its own ring, its own SO_REUSEPORT
 * listeners and its own spool writer.  What is shared is small and explicit:
 * struct server (the current runtime, counters, the stop flag). */
#ifndef KRELAY_WORKER_H
#define KRELAY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "metrics_srv.h"
#include "ring.h"
#include "runtime.h"
#include "smtp_server.h"
#include "spool.h"

struct listener {
	struct worker *w;
	int fd;
	bool smtps;
	char text[80];
	struct ring_op op;
	struct __kernel_timespec retry_ts;
	struct ring_op op_retry;
};

struct worker {
	struct server *srv;
	unsigned index;
	pthread_t thread;
	struct ring ring;
	struct spool spool;
	struct listener listeners[CONFIG_LISTEN_MAX];
	unsigned nlisteners;
	int wake_fd;
	uint64_t wake_buf;
	struct ring_op op_wake;
	struct queue *queue;     /* relaying: created by the worker thread */
	struct smtp_server smtp; /* the sessions this worker accepted */
	char **recover;          /* queue IDs found at start, for this worker */
	size_t nrecover;
	bool stopping;
	atomic_bool flush;    /* `krelay queue flush` (SIGUSR1) asked for a queue run */
	atomic_bool requests; /* `krelay queue hold|delete` left a request */
	bool queue_only;      /* DeliveryMode=queueonly at start */
	/* MetricsListen: the worker's counters; worker 0 serves the endpoint,
	 * and every worker publishes its queue's picture once a second */
	struct metrics_worker *mw;
	struct metrics_srv *metrics_srv;
	bool metrics_on;
	struct wheel_timer metrics_tick;
	uint64_t relayed, bounced, deferred, connections; /* at stop */
};

/* Creates the ring and the listeners (SO_REUSEPORT) for worker w, while the
 * relay may still be root.  Returns 0 or -1 with err set. */
int worker_init(struct worker *w, struct server *srv, unsigned index, const struct config *cfg,
                char *err, size_t errlen);
/* Opens worker w's spool, as the user the relay runs as (named in err when
 * it cannot: user, NULL when the relay did not change user). */
int worker_open_spool(struct worker *w, const struct config *cfg, const char *user, char *err,
                      size_t errlen);
int worker_start(struct worker *w);
/* Asks the worker to stop accepting and end its sessions gracefully. */
void worker_wake(struct worker *w);
/* Asks the worker to retry its deferred messages now and pick up released ones. */
void worker_flush(struct worker *w);
/* SIGUSR2: the queue looks at QueueDirectory/request/ (no queue run). */
void worker_requests(struct worker *w);
void worker_join(struct worker *w);

#endif
