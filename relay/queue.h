/* queue: the per-worker scheduler that relays what the spool holds.
 *
 * Each worker owns the messages it accepted (and a share of those found at
 * start).  Recipients are grouped by next hop (route.c) into jobs; each
 * destination has a FIFO of jobs, a concurrency limit and a pool of
 * connections reused for many messages.  Per-recipient outcomes are made
 * durable (queue/ID.env, spool_msg.h) before they are logged; 4xx is
 * retried with exponential backoff (io_uring timeouts), 5xx and expiry
 * are final.  queue_int.h names the objects and the files that hold them. */
#ifndef KRELAY_QUEUE_H
#define KRELAY_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "spool.h"

struct queue;
struct ring;
struct spool;
struct server;
struct metrics_worker;

/* What a queue needs from the worker that runs it (copied by queue_new).
 * The queue never sees the worker: the worker depends on the queue, not
 * the reverse. */
struct queue_ctx {
	struct ring *ring;
	struct spool *spool;       /* queue/, pool/, the directory fsync */
	struct server *srv;        /* the current runtime (SIGHUP), caps, Workers */
	unsigned worker_index;     /* this worker's DestinationConcurrency share, IDs */
	struct metrics_worker *mw; /* the worker's counters (metrics.h) */
};

struct queue_stats {
	uint64_t delivered, failed, deferred, connections, transactions, bytes;
};

/* Returns NULL with err set. */
struct queue *queue_new(const struct queue_ctx *ctx, char *err, size_t errlen);
/* Stops scheduling, quits idle connections; queue_idle() then tells when
 * nothing is in flight any more. */
void queue_stop(struct queue *q);
bool queue_idle(const struct queue *q);
void queue_free(struct queue *q);
const struct queue_stats *queue_stats(const struct queue *q);

/* A message just made durable by the spool (env is copied; loc: where it
 * lies, spool_tx_take's, now the queue's; loc->fd -1 to have queue/ID
 * opened). */
void queue_add(struct queue *q, const struct spool_env *env, const struct spool_loc *loc);
/* DeliveryMode=interactive: a message received but not yet durable, whose
 * client waits for its reply.  The queue relays it at once (fd: its file,
 * still the caller's; the queue reads a dup of it) and calls back once:
 *   QUEUE_INTERACTIVE_RELAYED: every recipient got 2xx from its next hop;
 *     nothing stays in the queue, the file is the caller's again.
 *   QUEUE_INTERACTIVE_COMMIT: anything else (a 4xx or 5xx, no connection,
 *     the client gone, InteractiveTimeout passed, the queue stopping): the
 *     caller makes the message durable and then calls
 *     queue_interactive_durable(); until then the queue keeps the
 *     outcomes, then records them as for any queued message (retries,
 *     bounces).  Transactions still under way at other next hops go on.
 * Returns NULL when the queue is stopping: commit it as usual.  The
 * callback never runs inside a queue_* call of its owner (asserted). */
enum queue_interactive_event { QUEUE_INTERACTIVE_RELAYED, QUEUE_INTERACTIVE_COMMIT };
typedef void (*queue_interactive_cb)(void *owner, enum queue_interactive_event ev);
struct qmsg;
struct qmsg *queue_add_interactive(struct queue *q, const struct spool_env *env, int fd,
                                   uint64_t file_size, queue_interactive_cb cb, void *owner);
/* The caller's reason to commit now (its client left, say): the queue
 * calls back no more; the caller commits and calls
 * queue_interactive_durable(). */
void queue_interactive_commit(struct qmsg *m);
/* After QUEUE_INTERACTIVE_COMMIT or queue_interactive_commit(): err 0 when
 * the message is durable in queue/ (the queue goes on with it), else
 * -errno (the client was told to retry: outcomes are logged, nothing is
 * recorded). */
void queue_interactive_durable(struct qmsg *m, int err);

/* A message found in the spool at start (reads its envelope). */
int queue_recover(struct queue *q, const char *id);
/* DeliveryMode=queueonly: a durable message (just accepted, or found at
 * start) that waits in queue/ for the next queue run. */
void queue_park(struct queue *q, const char *id);
/* `krelay queue hold|delete ID` (SIGUSR2): QueueDirectory/request/VERB.ID
 * for a message this worker holds is carried out once no attempt of it is
 * under way; for one it does not hold, at once. */
void queue_requests(struct queue *q);
/* A queue run: retries every deferred message now, and takes in the parked
 * ones and those `krelay queue release` put back. */
void queue_flush(struct queue *q);
/* A reload (SIGHUP) happened: the queue takes the new configuration now
 * (new connections out use it; jobs waiting are routed again), rather
 * than at its next message. */
void queue_reloaded(struct queue *q);
/* MetricsListen: publishes the queue's picture (metrics_publish): messages
 * and recipients waiting and connections open, by destination. */
void queue_metrics_publish(struct queue *q);

#endif
