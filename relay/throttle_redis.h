/* throttle_redis: ThrottleStore=redis://ADDR:PORT/, shaping's counters
 * shared by the nodes of a cluster.  One client per worker, on its ring:
 * hiredis's asynchronous API (Debian's libhiredis) with its reads and
 * writes driven by IORING_OP_POLL_ADD, never a blocking call.
 *
 * In the store (the relay's throttle keys, "SOURCE>SITE"):
 *   krelay:m:KEY, krelay:r:KEY  the next cell's time (GCRA, in µs of the
 *                               store's clock) of the message and of the
 *                               connection rate: a node asks for up to
 *                               100 ms's worth of cells at a time
 *   krelay:c:KEY                the nodes that hold connections there,
 *   krelay:c:KEY:NODE           and each one's count (expiring: a node
 *                               gone stops counting after 10 s)
 * each changed by one Lua script, atomically.  Every 2 s the first worker
 * sets its node's counts to the connections it has open.
 *
 * Unreachable (refused, closed, or no answer within 2 s), the client says
 * so once in the log and the local counters decide (throttle.h); it
 * connects again every second, and says so once it is back. */
#ifndef KRELAY_THROTTLE_REDIS_H
#define KRELAY_THROTTLE_REDIS_H

#include <stdbool.h>

#include "config.h"
#include "ring.h"
#include "shaping.h"
#include "throttle.h"

struct tredis;

/* A client for worker `index` (the first keeps the counts fresh); node
 * names this relay in the store.  It starts connecting at once. */
struct tredis *tredis_new(struct ring *ring, const struct config_listen *addr, struct throttle *t,
                          const char *node, unsigned index);
/* Connected: the store decides. */
bool tredis_up(const struct tredis *r);
/* Asks the store what verdict v said to ask for, for entry e with limits
 * l; the answers go to throttle_granted (or throttle_ask_failed). */
void tredis_ask(struct tredis *r, struct throttle_entry *e, const struct shaping_limits *l,
                const struct throttle_verdict *v);
/* A connection counted in the store closed. */
void tredis_release(struct tredis *r, struct throttle_entry *e);
/* Disconnects (answers still awaited fail); tredis_idle tells when its
 * ring operations are over, then tredis_free. */
void tredis_stop(struct tredis *r);
bool tredis_idle(const struct tredis *r);
void tredis_free(struct tredis *r);

#endif
