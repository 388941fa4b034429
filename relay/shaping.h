/* shaping: ShapingTable, the traffic-shaping table (pure code but for
 * reading the file).  One rule per line, '#' comments:
 *
 *   source NAME ADDRESS [ehlo=NAME]      an egress source: the address
 *                                        connections out are bound to, and
 *                                        the EHLO name that matches its
 *                                        reverse DNS (default: Hostname)
 *   pool NAME SOURCE[:WEIGHT]...         an egress pool: weighted sources
 *   WHERE [source:NAME] SETTING=VALUE... limits
 *   WHERE [source:NAME] reply="REGEX" suspend=DURATION
 *   WHERE [source:NAME] reply="REGEX" rate=RATE for=DURATION
 *
 * WHERE is `default`, `domain:PATTERN` (the recipient domain, or the next
 * hop's name when it is not routed by MX) or `site:PATTERN` (any of the
 * destination's MX hosts); patterns are shell globs, case-insensitive.  A
 * `source:NAME` rule applies only to connections from that source.
 * Settings: max_connections=N, max_connection_rate=RATE,
 * max_message_rate=RATE (RATE: N/s, N/m, N/h or N/d, paced by a generic
 * cell rate algorithm), max_deliveries_per_connection=N,
 * idle_timeout=DURATION, connect_timeout=DURATION (DURATION: N, Ns, Nm,
 * Nh, Nd) and pool=NAME.  Every rule that matches applies, in file order:
 * a later rule's setting replaces an earlier one's.
 *
 * Limits count per (egress source x site): a site is the set of MX hosts
 * (destinations served by the same hosts share one), or the domain
 * itself once a `domain:` rule matched it.  A reply rule: when a reply of
 * the next hop matches REGEX (POSIX extended, case-insensitive), that
 * source x site is suspended (no new connection or message) for DURATION,
 * or its message rate lowered to RATE for DURATION.  The first reply rule
 * that matches, in file order, applies. */
#ifndef KRELAY_SHAPING_H
#define KRELAY_SHAPING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SHAPING_NAME_MAX   63
#define SHAPING_POOL_MAX   16  /* sources in a pool */
#define SHAPING_SITE_MAX   512 /* a site's name, as the counters key it */
#define SHAPING_REPLY_MAX  16  /* reply rules that may apply to one destination */
#define SHAPING_SOURCE_MAX 256 /* sources in a table */

/* N messages (or connections) per `per_s` seconds; n == 0: no limit. */
struct shaping_rate {
	uint32_t n, per_s;
};

struct shaping_source {
	char name[SHAPING_NAME_MAX + 1];
	char addr_text[64];
	struct sockaddr_storage addr; /* port 0 */
	socklen_t addrlen;
	char ehlo[256]; /* "" : Hostname */
};

struct shaping_pool {
	char name[SHAPING_NAME_MAX + 1];
	unsigned n;
	unsigned src[SHAPING_POOL_MAX]; /* indexes into the table's sources */
	unsigned weight[SHAPING_POOL_MAX];
};

enum shaping_action { SHAPING_SUSPEND, SHAPING_SLOW };

struct shaping_reply_rule {
	unsigned line;
	char pattern[256];
	enum shaping_action action;
	unsigned duration_s;
	struct shaping_rate rate; /* SHAPING_SLOW */
	void *re;                 /* compiled regex_t */
};

/* What applies to one destination (and one source): 0 is "no limit" or
 * "the option's default". */
struct shaping_limits {
	unsigned max_connections;
	struct shaping_rate conn_rate, msg_rate;
	unsigned max_deliveries;
	unsigned idle_timeout_s, connect_timeout_s;
	int pool;       /* index of the pool, -1: none (the kernel picks the address) */
	bool by_domain; /* a domain: rule matched: counted by domain, not site */
	unsigned nreply;
	const struct shaping_reply_rule *reply[SHAPING_REPLY_MAX];
};

struct shaping_table;

/* NULL with err = "path:line: why". */
struct shaping_table *shaping_parse(const char *text, const char *path, char *err, size_t errlen);
struct shaping_table *shaping_load(const char *path, char *err, size_t errlen);
void shaping_free(struct shaping_table *t);

size_t shaping_nsources(const struct shaping_table *t);
const struct shaping_source *shaping_source(const struct shaping_table *t, size_t i);
const struct shaping_pool *shaping_pool(const struct shaping_table *t, int i);

/* The limits for a destination: domain (recipient domain or next hop),
 * its MX hosts (the hop's host when not routed by MX), and source (the
 * index of the egress source, or -1 for the rules that apply whatever the
 * source: the pool is chosen with those). */
void shaping_match(const struct shaping_table *t, const char *domain, const char *const *mx,
                   size_t nmx, int source, struct shaping_limits *out);
/* The reply rule that a reply matches, or NULL. */
const struct shaping_reply_rule *shaping_reply_match(const struct shaping_limits *l,
                                                     const char *reply);

/* A site's name: its MX host names, lower-cased, sorted, without
 * duplicates or a final dot, joined by ','; cut to len - 1 with a hash of
 * the whole at the end when longer.  Returns out. */
char *shaping_site_name(const char *const *mx, size_t nmx, char *out, size_t len);

/* "100/s", "5/m", "1000/h", "10000/d"; 0 or -1 with why. */
int shaping_parse_rate(const char *s, struct shaping_rate *r, char *why, size_t len);
/* "30", "30s", "10m", "2h", "1d" (1 s to 366 days); 0 or -1. */
int shaping_parse_duration(const char *s, unsigned *secs);

/* The generic cell rate algorithm: cells are paced evenly, one interval
 * apart, with a tolerance of one interval and at least GCRA_SLACK_NS (a
 * burst of two cells, or of 150 ms's worth at high rates, which absorbs
 * a timer's lateness: the timers that wake a throttled destination fire
 * up to 50 ms late).  *tat is the theoretical arrival time of the next
 * cell (ns on one clock).  Returns 0 when a cell may pass at now (and
 * takes it: *tat moves on one interval), else how many ns to wait. */
#define GCRA_SLACK_NS (150LL * 1000 * 1000)
int64_t gcra_take(int64_t *tat, int64_t now, const struct shaping_rate *r);
/* The same without taking. */
int64_t gcra_wait(int64_t tat, int64_t now, const struct shaping_rate *r);
/* One cell's interval in ns (0 when r is no limit). */
int64_t gcra_interval(const struct shaping_rate *r);

/* The smooth weighted round robin (as nginx's upstreams): the next
 * member of pool p, given and updating the running weights cur[]
 * (SHAPING_POOL_MAX, zeroed at first); only members with usable[i]
 * (NULL: all) are picked; -1 when none is.  Returns the index in the
 * pool. */
int shaping_pool_next(const struct shaping_pool *p, int *cur, const bool *usable);

#endif
