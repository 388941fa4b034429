/* metrics: the relay's counters, for the Prometheus endpoint
 * (MetricsListen, metrics_srv.c).
 *
 * Process-wide, one struct metrics (in struct server); per worker, one
 * struct metrics_worker: a block of counters that only its worker's thread
 * writes (relaxed atomic loads and stores, no locked instruction) and that
 * starts on its own cache line, so the hot path shares no line with
 * another thread.  A scrape sums the blocks.  What is not a counter but a
 * picture of a worker's queue (messages and recipients waiting by
 * destination, connections open per destination) is published by that
 * worker about once a second (metrics_publish) and merged by the scrape.
 *
 * Other modules add their own lines through metrics_add_provider: the
 * function is called at each scrape, after krelay's own families, and
 * writes whole families (metrics_family, then metrics_sample_*). */
#ifndef KRELAY_METRICS_H
#define KRELAY_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "strbuf.h"

#define METRICS_DEST_NAME     272  /* a destination's name (route_hop_text), with its NUL */
#define METRICS_DEST_TOP      100  /* destinations named in a scrape; the rest are "other" */
#define METRICS_DEST_PUBLISH  1000 /* destinations one worker publishes; the rest "other" */
#define METRICS_DEST_OTHER    "other"
#define METRICS_FSYNC_BUCKETS 13 /* finite buckets of the fsync histogram, then +Inf */
#define METRICS_PROVIDERS_MAX 16

enum metrics_counter {
	MC_RECEIVED_MESSAGES, /* made durable, or relayed before the reply */
	MC_RECEIVED_BYTES,    /* their content as stored (with krelay's Received:) */
	MC_RELAYED_MESSAGES,  /* transactions out in which a recipient got 2xx */
	MC_RELAYED_BYTES,     /* content bytes sent in transactions out */
	MC_RCPT_RELAYED,      /* recipients: 2xx from the next hop */
	MC_RCPT_DEFERRED,     /* ... a 4xx or no answer (each attempt counts) */
	MC_RCPT_BOUNCED,      /* ... failed for good (5xx, expired) */
	MC_CONN_IN,           /* SMTP connections accepted */
	MC_CONN_OUT,          /* connections out opened */
	MC_TLS_IN_12,
	MC_TLS_IN_13,
	MC_TLS_IN_OTHER,
	MC_TLS_OUT_12,
	MC_TLS_OUT_13,
	MC_TLS_OUT_OTHER,
	MC_KTLS_IN_TX_ON,
	MC_KTLS_IN_TX_OFF,
	MC_KTLS_IN_RX_ON,
	MC_KTLS_IN_RX_OFF,
	MC_KTLS_OUT_TX_ON,
	MC_KTLS_OUT_TX_OFF,
	MC_COUNT
};

enum metrics_gauge {
	MG_SESSIONS_IN, /* SMTP sessions open */
	MG_CONNS_OUT,   /* connections out open or opening */
	MG_COUNT
};

/* One worker's block: written by that worker's thread alone. */
struct metrics_worker {
	_Alignas(64) _Atomic uint64_t counter[MC_COUNT];
	_Atomic int64_t gauge[MG_COUNT];
	/* fsyncs by latency bucket (not cumulative: the count is their sum) */
	_Atomic uint64_t fsync_bucket[METRICS_FSYNC_BUCKETS + 1];
	_Atomic uint64_t fsync_sum_ns;
	/* the last picture of the queue (struct metrics_snap, metrics.c),
	 * swapped in by the worker, read by the scrape */
	_Alignas(64) pthread_mutex_t lock;
	void *snap;
};

struct metrics;

struct metrics *metrics_new(unsigned workers);
void metrics_free(struct metrics *m);
/* Worker index's block; NULL for a NULL m (every call below takes NULL). */
struct metrics_worker *metrics_worker(struct metrics *m, unsigned index);

static inline void metrics_count(struct metrics_worker *w, enum metrics_counter c, uint64_t n)
{
	if (w == NULL)
		return;
	/* one writer: a plain add, published whole */
	uint64_t v = atomic_load_explicit(&w->counter[c], memory_order_relaxed);
	atomic_store_explicit(&w->counter[c], v + n, memory_order_relaxed);
}

static inline void metrics_gauge_set(struct metrics_worker *w, enum metrics_gauge g, int64_t v)
{
	if (w != NULL)
		atomic_store_explicit(&w->gauge[g], v, memory_order_relaxed);
}

/* A finished TLS handshake: its version (SSL_get_version's "TLSv1.3"),
 * whether kTLS took the sending side and (inbound; -1: not told) the
 * receiving side. */
void metrics_tls(struct metrics_worker *w, bool inbound, const char *version, bool ktls_tx,
                 int ktls_rx);

/* CLOCK_MONOTONIC in ns: taken when an fsync is submitted ... */
int64_t metrics_clock(void);
/* ... and given back when it completes (0: not taken, nothing counted). */
void metrics_fsync_done(struct metrics_worker *w, int64_t started_ns);

/* ---- the queue's picture, by destination ------------------------------- */

struct metrics_dest {
	char name[METRICS_DEST_NAME];
	uint64_t messages;   /* messages with a recipient waiting for it */
	uint64_t recipients; /* recipients waiting for it */
	uint64_t connections;
	int64_t oldest;       /* arrival (Unix time) of its oldest waiting message; 0: none */
	const void *last_msg; /* the caller's: the message counted last */
};

/* Destinations by name, for building a picture. */
struct metrics_dests {
	struct metrics_dest *d;
	size_t n, cap;
	size_t *slot; /* hash: index + 1, 0 empty */
	size_t nslots;
	bool oom;
};

/* The destination named name (made, zero, when new); NULL when out of
 * memory (t->oom set; the picture is then dropped). */
struct metrics_dest *metrics_dests_get(struct metrics_dests *t, const char *name);
void metrics_dests_free(struct metrics_dests *t);
/* Orders d[0..n) by recipients waiting, then connections, then name, the
 * one named METRICS_DEST_OTHER last; when more than keep are left, those
 * after the first keep are summed into one "other".  Returns the new n. */
size_t metrics_dests_top(struct metrics_dest *d, size_t n, size_t keep);

/* A worker's picture of its queue: the destinations (t is emptied: its
 * array is the picture's now) and the totals, which count every message
 * (also those in no destination's top). */
void metrics_publish(struct metrics_worker *w, struct metrics_dests *t, uint64_t messages,
                     uint64_t recipients, int64_t oldest);

/* ---- the exposition ------------------------------------------------------ */

typedef void (*metrics_provider_fn)(void *arg, struct strbuf *out);
/* fn(arg, out) appends whole families to every scrape (from the thread
 * that serves it: worker 0's, so it must only read what it shares).
 * Returns 0, or -1 when METRICS_PROVIDERS_MAX are registered already. */
int metrics_add_provider(struct metrics *m, metrics_provider_fn fn, void *arg);

/* The text exposition format (0.0.4) of everything, now being the Unix time. */
void metrics_render(struct metrics *m, struct strbuf *out, time_t now);

/* Writing a family: "# HELP" and "# TYPE" (counter, gauge, histogram,
 * untyped) first, then its samples.  labels: NULL, or pairs of label name
 * and value ending with NULL ({"destination", name, NULL}); the values are
 * escaped here (metrics_label_value), the names must be valid already. */
void metrics_family(struct strbuf *out, const char *name, const char *type, const char *help);
void metrics_sample_u64(struct strbuf *out, const char *name, const char *const *labels,
                        uint64_t v);
void metrics_sample_f(struct strbuf *out, const char *name, const char *const *labels, double v);

#endif
