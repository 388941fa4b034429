/* worker: one thread per core, each with its own ring, its own SO_REUSEPORT
 * listeners and its own spool writer.  What is shared is small and explicit:
 * struct server (the current runtime, counters, the stop flag). */
#ifndef KRELAY_WORKER_H
#define KRELAY_WORKER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "probe.h"
#include "ring.h"
#include "route.h"
#include "spool.h"
#include "tls_policy.h"

/* A configuration and the TLS context built from it; sessions hold a
 * reference, so SIGHUP can swap in a new one without dropping anybody. */
struct runtime {
	atomic_int refs;
	struct config cfg;
	SSL_CTX *server_ctx; /* NULL: no STARTTLS, no smtps */
	SSL_CTX *client_ctx; /* relaying */
	/* relaying's routes, loaded with the configuration (read-only, shared
	 * by the workers' queues): SmartHost, TransportTable, TLSPolicyTable */
	struct route_hop smarthost;
	bool has_smarthost;
	struct route_table *transports;
	struct tls_policy_table *tls_policies;
};

struct server {
	struct caps caps;
	pthread_mutex_t lock; /* guards current */
	struct runtime *current;
	atomic_uint generation; /* bumped by each reload: queues follow it */
	atomic_uint spool_full; /* bumped when a spool finds the disk full */
	atomic_bool stopping;
	atomic_uint connections;      /* open SMTP sessions, all workers */
	struct client_count *clients; /* open SMTP sessions per client address */
	atomic_ullong session_seq;
	unsigned workers;
};

struct client_count;

struct runtime *runtime_get(struct server *srv);
/* One more reference to rt (one the caller holds already). */
struct runtime *runtime_hold(struct runtime *rt);
void runtime_put(struct runtime *rt);

struct smtp_session;

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
	struct queue *queue; /* relaying: created by the worker thread */
	char **recover;      /* queue IDs found at start, for this worker */
	size_t nrecover;
	struct smtp_session *sessions; /* all live sessions, for shutdown */
	unsigned nsessions;
	bool stopping;
	atomic_bool flush;
	atomic_bool requests; /* `krelay queue hold|delete` left a request */
	bool queue_only; /* DeliveryMode=queueonly at start */ /* `krelay queue flush` (SIGUSR1)
	                                                          asked for a queue run */
	uint64_t relayed, bounced, deferred, connections;      /* at stop */
};

/* Creates listeners (SO_REUSEPORT) and the spool for worker w.  Returns 0 or
 * -1 with err set. */
int worker_init(struct worker *w, struct server *srv, unsigned index, const struct config *cfg,
                char *err, size_t errlen);
int worker_start(struct worker *w);
/* Asks the worker to stop accepting and end its sessions gracefully. */
void worker_wake(struct worker *w);
/* Asks the worker to retry its deferred messages now and pick up released ones. */
void worker_flush(struct worker *w);
/* SIGUSR2: the queue looks at QueueDirectory/request/ (no queue run). */
void worker_requests(struct worker *w);
void worker_join(struct worker *w);

#endif
