/* throttle: the counters that shaping (shaping.h) keeps per (egress source
 * x site), shared by every worker of the relay: connections open, the
 * next cell's time of the connection and message rates (GCRA), and a
 * suspension or a lowered rate that a reply rule set.  An entry is found
 * by its key ("SOURCE>SITE") and held by reference; one mutex per entry,
 * one for the table.  Times are CLOCK_MONOTONIC ns.
 *
 * The cluster store (ThrottleStore=redis://) is a later layer: the local
 * entry stays the fallback whenever it cannot be reached. */
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

struct throttle_verdict {
	enum throttle_why why;
	int64_t wait_ns; /* 0 with THROTTLE_OK */
};

/* What the metrics endpoint shows of an entry. */
struct throttle_view {
	const char *key;
	unsigned conns;
	bool suspended, slowed;
	uint64_t delays, suspensions; /* verdicts other than OK; suspensions set */
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
                                      int64_t now);
void throttle_close(struct throttle_entry *e);
/* A connection counted without a check: the same connection's job moving
 * on to the next address of its destination. */
void throttle_count(struct throttle_entry *e);
/* The next message on an open connection. */
struct throttle_verdict throttle_message(struct throttle_entry *e, const struct shaping_limits *l,
                                         int64_t now);
/* A reply rule: suspends until `until`, or lowers the message rate to r
 * until then.  True when this changed anything (a suspension already
 * lasting as long is not set again, so the log says it once). */
bool throttle_suspend(struct throttle_entry *e, int64_t until);
bool throttle_slow(struct throttle_entry *e, const struct shaping_rate *r, int64_t until);
/* The end of a suspension in force, else 0. */
int64_t throttle_suspended_until(struct throttle_entry *e, int64_t now);

/* Calls fn for every entry (under the table's lock: fn must not call
 * back into the throttle). */
void throttle_each(struct throttle *t, int64_t now,
                   void (*fn)(void *arg, const struct throttle_view *v), void *arg);

#endif
