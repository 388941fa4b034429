/* queue_policy: the queue's rules as pure functions, so that a table can
 * test them (tests/unit/test_queue_policy.c): how long to wait before a
 * retry, how many connections a worker may open, what a reply code means
 * for a recipient, and what a destination does next. */
#ifndef KRELAY_QUEUE_POLICY_H
#define KRELAY_QUEUE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "spool_format.h"

/* RetrySchedule=min,max: seconds to wait after attempt number `attempts`
 * (min after the first, doubled each time, never above max). */
unsigned qpolicy_backoff_s(unsigned retry_min_s, unsigned retry_max_s, unsigned attempts);
/* DestinationConcurrency is for the whole relay: worker `index` of
 * `workers` opens limit/workers, one more for the first limit%workers
 * workers, at least 1 (so max(limit, Workers) in all). */
unsigned qpolicy_share(unsigned limit, unsigned workers, unsigned index);
/* A recipient's reply code: 2xx delivered, 5xx failed, else still pending
 * (4xx, or 0: no reply, the connection failed first). */
enum spool_rcpt_state qpolicy_outcome(int code);
/* A reply that settles the recipient (recorded on disk): 2xx or 5xx. */
bool qpolicy_final(int code);
/* The delivery line's status=: "sent", "bounced" or "deferred". */
const char *qpolicy_status(int code);
/* The enhanced status code of a reply (RFC 3463: "250 2.1.5 Ok" gives
 * "2.1.5"), else one made from the code's class ("4.0.0"). */
void qpolicy_dsn(int code, const char *reply, char *out, size_t len);
/* QueueLifetime has passed since arrival. */
bool qpolicy_expired(time_t now, time_t arrival, unsigned lifetime_s);

/* What a destination knows of its addresses. */
enum qdest_addrs { QDEST_UNRESOLVED, QDEST_RESOLVING, QDEST_RESOLVED, QDEST_FAILED };
#define QDEST_RESOLVED_KEEP_S 300 /* addresses are looked up again after this */
enum qdest_step { QSTEP_WAIT, QSTEP_RESOLVE, QSTEP_FAIL_JOBS, QSTEP_CONNECT };
/* For a destination with jobs waiting: wait for the lookup under way;
 * connect while the addresses are fresh; fail the jobs while a failed
 * lookup is under a second old (no point asking again); else look up. */
enum qdest_step qpolicy_dest_step(enum qdest_addrs st, time_t resolved_at, time_t now);

/* A destination with no job, connection or lookup is freed once it has
 * stayed so for QDEST_UNUSED_KEEP_S (its addresses are stale by then);
 * unused_since is when the sweep first saw it so (0: not yet, or it was
 * used since).  What the sweep does with it now: */
#define QDEST_UNUSED_KEEP_S QDEST_RESOLVED_KEEP_S
enum qdest_sweep { QSWEEP_KEEP, QSWEEP_MARK, QSWEEP_FREE };
enum qdest_sweep qpolicy_dest_sweep(bool unused, time_t unused_since, time_t now);

#endif
