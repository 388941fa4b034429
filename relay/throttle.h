/* throttle (pure but for a mutex and the clock): the counters that shaping (shaping.h) keeps per
 * (egress source x site), shared by every worker of the relay: connections open, the next cell's
 * time of the connection and message rates (GCRA), and a suspension or a lowered rate that a reply
 * rule set.  An entry is found by its key ("SOURCE>SITE") and held by reference; one mutex per
 * entry, one for the table.  Times are CLOCK_MONOTONIC ns.
 *
 * With ThrottleStore (several nodes: throttle_redis.h), the cluster's
 * store decides instead: an entry asks it for cells of the message and
 * connection rates and for connection slots ahead of need (a verdict
 * says what to ask for; the caller's store client asks and brings the
 * answer to throttle_granted), and spends them locally.  While the store
 * cannot be reached the local counters decide, as on a single node:
 * never no limit at all. */
#ifndef KRELAY_THROTTLE_H
#define KRELAY_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

#include "shaping.h"

#define THROTTLE_KEY_MAX (SHAPING_NAME_MAX + 1 + SHAPING_SITE_MAX + 8)
/* how often a destination looks again while max_connections is reached
 * (a connection closing in another worker does not wake it) */
#define THROTTLE_FULL_POLL_NS (100LL * 1000 * 1000)

enum throttle_why {
	THROTTLE_OK,
	THROTTLE_SUSPENDED,   /* a reply rule suspended it: wait until the end */
	THROTTLE_CONNECTIONS, /* max_connections open: look again shortly */
	THROTTLE_CONN_RATE,   /* max_connection_rate: wait */
	THROTTLE_MSG_RATE,    /* max_message_rate (or a lowered one): wait */
	THROTTLE_WHYS
};
extern const char *const throttle_why_name[THROTTLE_WHYS];

/* what a verdict asks the cluster's store for */
enum throttle_ask { THROTTLE_ASK_MSG, THROTTLE_ASK_CONN_RATE, THROTTLE_ASK_SLOT, THROTTLE_ASKS };
#define THROTTLE_ASK_BIT(a) (1u << (a))
/* how often a destination looks again while the store's answer is awaited */
#define THROTTLE_CLUSTER_POLL_NS (20LL * 1000 * 1000)
/* how long granted cells and slots may wait to be spent */
#define THROTTLE_GRANT_TTL_NS (1000LL * 1000 * 1000)

struct throttle_verdict {
	enum throttle_why why;
	int64_t wait_ns;              /* 0 with THROTTLE_OK */
	unsigned ask;                 /* THROTTLE_ASK_BITs the caller must ask the store for now */
	struct shaping_rate msg_rate; /* the message rate in force (what to ask with) */
};

/* What the metrics endpoint shows of an entry. */
struct throttle_view {
	const char *key;
	unsigned conns;
	bool suspended, slowed;
	uint64_t delays, suspensions; /* verdicts other than OK; suspensions set */
	bool slots_used;              /* connection slots were taken from the cluster's store */
	unsigned slots_stale;         /* throttle_each_store: slots granted, expired unspent */
};

struct throttle;
struct throttle_entry;

struct throttle *throttle_new(void);
void throttle_free(struct throttle *t);

/* The entry for key, made when there is none; a reference the caller puts
 * back. */
struct throttle_entry *throttle_get(struct throttle *t, const char *key);
void throttle_put(struct throttle *t, struct throttle_entry *e);
/* One more reference to e (one the caller holds already). */
struct throttle_entry *throttle_hold(struct throttle *t, struct throttle_entry *e);
const char *throttle_key(const struct throttle_entry *e);

/* A new connection with its first message: suspended, max_connections,
 * connection rate and message rate are checked together; with OK the
 * connection is counted (throttle_close undoes it) and both cells taken. */
struct throttle_verdict throttle_open(struct throttle_entry *e, const struct shaping_limits *l,
                                      int64_t now, bool cluster);
void throttle_close(struct throttle_entry *e);
/* A connection counted without a check: the same connection's job moving
 * on to the next address of its destination. */
void throttle_count(struct throttle_entry *e);
/* The next message on an open connection. */
struct throttle_verdict throttle_message(struct throttle_entry *e, const struct shaping_limits *l,
                                         int64_t now, bool cluster);
/* The store's answer to an ask: n cells (slots) granted, or none and how
 * long to wait before asking again. */
void throttle_granted(struct throttle_entry *e, enum throttle_ask a, unsigned n, int64_t wait_ns,
                      int64_t now);
/* An ask that got no answer (the store is unreachable): free to ask again. */
void throttle_ask_failed(struct throttle_entry *e, enum throttle_ask a);
/* How many cells to ask for at once: 100 ms's worth, 1 to 50. */
unsigned throttle_want(const struct shaping_rate *r);
/* A reply rule: suspends until `until`, or lowers the message rate to r
 * until then.  True when this changed anything (a suspension already
 * lasting as long is not set again, so the log says it once). */
bool throttle_suspend(struct throttle_entry *e, int64_t until);
bool throttle_slow(struct throttle_entry *e, const struct shaping_rate *r, int64_t until);
/* The end of a suspension in force, else 0. */
int64_t throttle_suspended_until(struct throttle_entry *e, int64_t now);

/* The same for the store's client that keeps the counts: each entry's
 * slots that expired unspent are handed over once (to give back). */
void throttle_each_store(struct throttle *t, int64_t now,
                         void (*fn)(void *arg, const struct throttle_view *v), void *arg);

/* ThrottleStore: a worker's client is connected (up) or not any more;
 * how many are. */
void throttle_store_up(struct throttle *t, bool up);
unsigned throttle_store_clients_up(struct throttle *t);

/* The metrics endpoint's lines (metrics.h's provider): per source x site,
 * connections open, waits, suspensions, and the store's clients up. */
struct strbuf;
void throttle_metrics(void *arg, struct strbuf *out);

/* Calls fn for every entry (under the table's lock: fn must not call
 * back into the throttle). */
void throttle_each(struct throttle *t, int64_t now,
                   void (*fn)(void *arg, const struct throttle_view *v), void *arg);

#endif
