/* throttle: see throttle.h. */
#include "throttle.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "metrics.h"

#define BUCKETS_MIN 64

const char *const throttle_why_name[THROTTLE_WHYS] = {
    [THROTTLE_OK] = "ok",
    [THROTTLE_SUSPENDED] = "suspended",
    [THROTTLE_CONNECTIONS] = "max_connections",
    [THROTTLE_CONN_RATE] = "max_connection_rate",
    [THROTTLE_MSG_RATE] = "max_message_rate",
};

struct throttle_entry {
	pthread_mutex_t lock;
	unsigned refs; /* under the table's lock */
	uint32_t hash;
	unsigned conns;
	int64_t conn_tat, msg_tat;
	int64_t suspended_until;
	struct shaping_rate slow_rate;
	int64_t slow_until;
	uint64_t delays, suspensions;
	/* ThrottleStore: what the cluster granted and is asked for */
	struct grant {
		unsigned n;
		int64_t until;    /* spend them before */
		bool asking;      /* an ask is out */
		int64_t retry_at; /* the store said: not before */
	} g[THROTTLE_ASKS];
	bool slots_used;
	unsigned slots_stale; /* granted, never spent: still counted in the store */
	struct throttle_entry *next;
	char key[];
};

struct throttle {
	pthread_mutex_t lock;
	atomic_int store_up; /* ThrottleStore clients connected */
	struct throttle_entry **b;
	size_t nb, n, swept_at; /* n when the last sweep ended */
};

struct throttle *throttle_new(void)
{
	struct throttle *t = calloc(1, sizeof(*t));

	if (t == NULL || (t->b = calloc(BUCKETS_MIN, sizeof(*t->b))) == NULL)
		abort(); /* out of memory */
	t->nb = BUCKETS_MIN;
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

static void entry_free(struct throttle_entry *e)
{
	pthread_mutex_destroy(&e->lock);
	free(e);
}

void throttle_free(struct throttle *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nb; i++)
		for (struct throttle_entry *e = t->b[i], *next; e != NULL; e = next) {
			next = e->next;
			entry_free(e);
		}
	free(t->b);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Nothing to remember: no connection, no cell ahead of now, no
 * suspension or lowered rate in force. */
static bool entry_idle(struct throttle_entry *e, int64_t now)
{
	bool idle;

	pthread_mutex_lock(&e->lock);
	idle = e->conns == 0 && e->conn_tat <= now && e->msg_tat <= now &&
	       e->suspended_until <= now && e->slow_until <= now;
	pthread_mutex_unlock(&e->lock);
	return idle;
}

static int64_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Entries nobody holds and that remember nothing go (under t->lock);
 * run when the table has doubled since the last sweep. */
static void sweep(struct throttle *t)
{
	int64_t now = mono_now();

	for (size_t i = 0; i < t->nb; i++) {
		struct throttle_entry **p = &t->b[i];

		while (*p != NULL) {
			struct throttle_entry *e = *p;

			if (e->refs == 0 && entry_idle(e, now)) {
				*p = e->next;
				entry_free(e);
				t->n--;
			} else {
				p = &e->next;
			}
		}
	}
	t->swept_at = t->n;
}

static void grow(struct throttle *t)
{
	size_t nb = t->nb * 2;
	struct throttle_entry **b = calloc(nb, sizeof(*b));

	if (b == NULL)
		return; /* longer chains, still right */
	for (size_t i = 0; i < t->nb; i++)
		for (struct throttle_entry *e = t->b[i], *next; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

struct throttle_entry *throttle_get(struct throttle *t, const char *key)
{
	uint32_t h = fnv1a(key);
	struct throttle_entry *e;
	size_t len = strlen(key);

	pthread_mutex_lock(&t->lock);
	for (e = t->b[h & (t->nb - 1)]; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			break;
	if (e == NULL) {
		if (t->n >= 2 * t->swept_at + BUCKETS_MIN)
			sweep(t);
		if (t->n >= t->nb)
			grow(t);
		if ((e = calloc(1, sizeof(*e) + len + 1)) == NULL)
			abort(); /* out of memory */
		pthread_mutex_init(&e->lock, NULL);
		memcpy(e->key, key, len + 1);
		e->hash = h;
		e->next = t->b[h & (t->nb - 1)];
		t->b[h & (t->nb - 1)] = e;
		t->n++;
	}
	e->refs++;
	pthread_mutex_unlock(&t->lock);
	return e;
}

void throttle_put(struct throttle *t, struct throttle_entry *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&t->lock);
	e->refs--;
	pthread_mutex_unlock(&t->lock);
}

struct throttle_entry *throttle_hold(struct throttle *t, struct throttle_entry *e)
{
	pthread_mutex_lock(&t->lock);
	e->refs++;
	pthread_mutex_unlock(&t->lock);
	return e;
}

const char *throttle_key(const struct throttle_entry *e)
{
	return e->key;
}

/* The message rate in force: the lowered one while it lasts, when it is
 * lower than the table's (or the table has none). */
static const struct shaping_rate *msg_rate(const struct throttle_entry *e,
                                           const struct shaping_limits *l, int64_t now)
{
	if (e->slow_until > now &&
	    (l->msg_rate.n == 0 || gcra_interval(&e->slow_rate) > gcra_interval(&l->msg_rate)))
		return &e->slow_rate;
	return &l->msg_rate;
}

static struct throttle_verdict verdict(struct throttle_entry *e, enum throttle_why why,
                                       int64_t wait)
{
	struct throttle_verdict v = {why, why == THROTTLE_OK ? 0 : wait > 0 ? wait : 1, 0, {0, 0}};

	if (why != THROTTLE_OK)
		e->delays++;
	return v;
}

unsigned throttle_want(const struct shaping_rate *r)
{
	int64_t t = gcra_interval(r);
	int64_t n = t > 0 ? 100000000LL / t : 1;

	return n < 1 ? 1 : n > 50 ? 50 : (unsigned)n;
}

static bool have(struct throttle_entry *e, enum throttle_ask a, int64_t now)
{
	struct grant *g = &e->g[a];

	if (g->n > 0 && now >= g->until) {
		/* too old; a slot is counted in the store until given back */
		if (a == THROTTLE_ASK_SLOT)
			e->slots_stale += g->n;
		g->n = 0;
	}
	return g->n > 0;
}

/* Not enough of a: ask when no ask is out and the store allows; the wait
 * is until the answer can have come, or until the store's time. */
static void need(struct throttle_entry *e, enum throttle_ask a, enum throttle_why why, int64_t now,
                 struct throttle_verdict *v)
{
	struct grant *g = &e->g[a];
	int64_t wait = THROTTLE_CLUSTER_POLL_NS;

	if (g->retry_at > now)
		wait = g->retry_at - now;
	else if (!g->asking) {
		g->asking = true;
		v->ask |= THROTTLE_ASK_BIT(a);
	}
	if (v->why == THROTTLE_OK || wait > v->wait_ns) {
		if (v->why == THROTTLE_OK)
			v->why = why;
		v->wait_ns = wait;
	}
}

/* Granted cells running low: ask for more before they are out. */
static void prefetch(struct throttle_entry *e, enum throttle_ask a, const struct shaping_rate *r,
                     int64_t now, struct throttle_verdict *v)
{
	struct grant *g = &e->g[a];

	if (r->n != 0 && !g->asking && g->retry_at <= now && g->n * 2 < throttle_want(r)) {
		g->asking = true;
		v->ask |= THROTTLE_ASK_BIT(a);
	}
}

static struct throttle_verdict cluster_open(struct throttle_entry *e,
                                            const struct shaping_limits *l, int64_t now)
{
	struct throttle_verdict v = {THROTTLE_OK, 0, 0, *msg_rate(e, l, now)};

	if (l->max_connections != 0 && !have(e, THROTTLE_ASK_SLOT, now))
		need(e, THROTTLE_ASK_SLOT, THROTTLE_CONNECTIONS, now, &v);
	if (l->conn_rate.n != 0 && !have(e, THROTTLE_ASK_CONN_RATE, now))
		need(e, THROTTLE_ASK_CONN_RATE, THROTTLE_CONN_RATE, now, &v);
	if (v.msg_rate.n != 0 && !have(e, THROTTLE_ASK_MSG, now))
		need(e, THROTTLE_ASK_MSG, THROTTLE_MSG_RATE, now, &v);
	if (v.why != THROTTLE_OK) {
		e->delays++;
		return v;
	}
	if (l->max_connections != 0) {
		e->g[THROTTLE_ASK_SLOT].n--;
		e->slots_used = true;
	}
	if (l->conn_rate.n != 0)
		e->g[THROTTLE_ASK_CONN_RATE].n--;
	if (v.msg_rate.n != 0)
		e->g[THROTTLE_ASK_MSG].n--;
	e->conns++;
	prefetch(e, THROTTLE_ASK_CONN_RATE, &l->conn_rate, now, &v);
	prefetch(e, THROTTLE_ASK_MSG, &v.msg_rate, now, &v);
	return v;
}

static struct throttle_verdict cluster_message(struct throttle_entry *e,
                                               const struct shaping_limits *l, int64_t now)
{
	struct throttle_verdict v = {THROTTLE_OK, 0, 0, *msg_rate(e, l, now)};

	if (v.msg_rate.n != 0 && !have(e, THROTTLE_ASK_MSG, now))
		need(e, THROTTLE_ASK_MSG, THROTTLE_MSG_RATE, now, &v);
	if (v.why != THROTTLE_OK) {
		e->delays++;
		return v;
	}
	if (v.msg_rate.n != 0)
		e->g[THROTTLE_ASK_MSG].n--;
	prefetch(e, THROTTLE_ASK_MSG, &v.msg_rate, now, &v);
	return v;
}

void throttle_granted(struct throttle_entry *e, enum throttle_ask a, unsigned n, int64_t wait_ns,
                      int64_t now)
{
	struct grant *g = &e->g[a];

	pthread_mutex_lock(&e->lock);
	g->asking = false;
	if (n > 0) {
		if (now >= g->until)
			g->n = 0;
		g->n += n;
		g->until = now + THROTTLE_GRANT_TTL_NS;
		g->retry_at = 0;
	} else {
		g->retry_at = now + (wait_ns > 0 ? wait_ns : THROTTLE_CLUSTER_POLL_NS);
	}
	pthread_mutex_unlock(&e->lock);
}

void throttle_ask_failed(struct throttle_entry *e, enum throttle_ask a)
{
	pthread_mutex_lock(&e->lock);
	e->g[a].asking = false;
	pthread_mutex_unlock(&e->lock);
}

struct throttle_verdict throttle_open(struct throttle_entry *e, const struct shaping_limits *l,
                                      int64_t now, bool cluster)
{
	struct throttle_verdict v;
	const struct shaping_rate *mr;
	int64_t w;

	pthread_mutex_lock(&e->lock);
	mr = msg_rate(e, l, now);
	if (e->suspended_until > now)
		v = verdict(e, THROTTLE_SUSPENDED, e->suspended_until - now);
	else if (cluster)
		v = cluster_open(e, l, now);
	else if (l->max_connections != 0 && e->conns >= l->max_connections)
		v = verdict(e, THROTTLE_CONNECTIONS, THROTTLE_FULL_POLL_NS);
	else if ((w = gcra_wait(e->conn_tat, now, &l->conn_rate)) > 0)
		v = verdict(e, THROTTLE_CONN_RATE, w);
	else if ((w = gcra_wait(e->msg_tat, now, mr)) > 0)
		v = verdict(e, THROTTLE_MSG_RATE, w);
	else {
		gcra_take(&e->conn_tat, now, &l->conn_rate);
		gcra_take(&e->msg_tat, now, mr);
		e->conns++;
		v = verdict(e, THROTTLE_OK, 0);
	}
	pthread_mutex_unlock(&e->lock);
	return v;
}

void throttle_close(struct throttle_entry *e)
{
	pthread_mutex_lock(&e->lock);
	if (e->conns > 0)
		e->conns--;
	pthread_mutex_unlock(&e->lock);
}

void throttle_count(struct throttle_entry *e)
{
	pthread_mutex_lock(&e->lock);
	e->conns++;
	pthread_mutex_unlock(&e->lock);
}

struct throttle_verdict throttle_message(struct throttle_entry *e, const struct shaping_limits *l,
                                         int64_t now, bool cluster)
{
	struct throttle_verdict v;
	int64_t w;

	pthread_mutex_lock(&e->lock);
	if (e->suspended_until > now)
		v = verdict(e, THROTTLE_SUSPENDED, e->suspended_until - now);
	else if (cluster)
		v = cluster_message(e, l, now);
	else if ((w = gcra_take(&e->msg_tat, now, msg_rate(e, l, now))) > 0)
		v = verdict(e, THROTTLE_MSG_RATE, w);
	else
		v = verdict(e, THROTTLE_OK, 0);
	pthread_mutex_unlock(&e->lock);
	return v;
}

bool throttle_suspend(struct throttle_entry *e, int64_t until)
{
	bool changed = false;

	pthread_mutex_lock(&e->lock);
	if (until > e->suspended_until) {
		changed = e->suspended_until < mono_now();
		e->suspended_until = until;
		if (changed)
			e->suspensions++;
	}
	pthread_mutex_unlock(&e->lock);
	return changed;
}

bool throttle_slow(struct throttle_entry *e, const struct shaping_rate *r, int64_t until)
{
	bool changed;

	pthread_mutex_lock(&e->lock);
	changed =
	    e->slow_until < mono_now() || e->slow_rate.n != r->n || e->slow_rate.per_s != r->per_s;
	e->slow_rate = *r;
	if (until > e->slow_until)
		e->slow_until = until;
	pthread_mutex_unlock(&e->lock);
	return changed;
}

int64_t throttle_suspended_until(struct throttle_entry *e, int64_t now)
{
	int64_t until;

	pthread_mutex_lock(&e->lock);
	until = e->suspended_until > now ? e->suspended_until : 0;
	pthread_mutex_unlock(&e->lock);
	return until;
}

static void each(struct throttle *t, int64_t now, bool take_stale,
                 void (*fn)(void *arg, const struct throttle_view *v), void *arg)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->nb; i++)
		for (struct throttle_entry *e = t->b[i]; e != NULL; e = e->next) {
			struct throttle_view v;

			pthread_mutex_lock(&e->lock);
			v.key = e->key;
			v.conns = e->conns;
			v.suspended = e->suspended_until > now;
			v.slowed = e->slow_until > now;
			v.delays = e->delays;
			v.suspensions = e->suspensions;
			v.slots_used = e->slots_used;
			v.slots_stale = 0;
			if (take_stale) {
				v.slots_stale = e->slots_stale;
				e->slots_stale = 0;
			}
			pthread_mutex_unlock(&e->lock);
			fn(arg, &v);
		}
	pthread_mutex_unlock(&t->lock);
}

void throttle_each(struct throttle *t, int64_t now,
                   void (*fn)(void *arg, const struct throttle_view *v), void *arg)
{
	each(t, now, false, fn, arg);
}

void throttle_each_store(struct throttle *t, int64_t now,
                         void (*fn)(void *arg, const struct throttle_view *v), void *arg)
{
	each(t, now, true, fn, arg);
}

void throttle_store_up(struct throttle *t, bool up)
{
	atomic_fetch_add(&t->store_up, up ? 1 : -1);
}

unsigned throttle_store_clients_up(struct throttle *t)
{
	int n = atomic_load(&t->store_up);

	return n > 0 ? (unsigned)n : 0;
}

#define METRICS_SITES_MAX 500 /* source x site pairs a scrape names */

struct seen {
	struct throttle_view v[METRICS_SITES_MAX];
	char key[METRICS_SITES_MAX][THROTTLE_KEY_MAX];
	size_t n, more;
};

static void seen_one(void *arg, const struct throttle_view *v)
{
	struct seen *s = arg;

	if (s->n == METRICS_SITES_MAX) {
		s->more++;
		return;
	}
	snprintf(s->key[s->n], sizeof(s->key[s->n]), "%s", v->key);
	s->v[s->n] = *v;
	s->v[s->n].key = s->key[s->n];
	s->n++;
}

void throttle_metrics(void *arg, struct strbuf *out)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
	    {"krelay_shaping_connections", "gauge",
	     "Connections out open, per egress source and site (ShapingTable)."},
	    {"krelay_shaping_delays_total", "counter",
	     "Times a connection or message had to wait: a rate, max_connections or a suspension."},
	    {"krelay_shaping_suspensions_total", "counter",
	     "Suspensions set by a reply rule (a reply matched its regular expression)."},
	    {"krelay_shaping_suspended", "gauge", "1 while a reply rule's suspension is in force."},
	    {"krelay_shaping_rate_lowered", "gauge",
	     "1 while a reply rule's lower message rate is in force."},
	};
	struct throttle *t = arg;
	struct seen *s = calloc(1, sizeof(*s));
	struct timespec ts;

	if (s == NULL)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	throttle_each(t, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec, seen_one, s);
	for (size_t f = 0; s->n > 0 && f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_family(out, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < s->n; i++) {
			const struct throttle_view *v = &s->v[i];
			char source[THROTTLE_KEY_MAX];
			const char *gt = strchr(v->key, '>');
			const char *labels[] = {"source", source, "site",
			                        gt != NULL ? gt + 1 : v->key, NULL};
			uint64_t val = f == 0   ? v->conns
			               : f == 1 ? v->delays
			               : f == 2 ? v->suspensions
			               : f == 3 ? v->suspended
			                        : v->slowed;

			snprintf(source, sizeof(source), "%.*s",
			         gt != NULL ? (int)(gt - v->key) : 1, gt != NULL ? v->key : "-");
			metrics_sample_u64(out, fam[f].name, labels, val);
		}
	}
	if (s->more > 0) {
		metrics_family(out, "krelay_shaping_sites_not_shown", "gauge",
		               "Source x site pairs past the first 500, not named above.");
		metrics_sample_u64(out, "krelay_shaping_sites_not_shown", NULL, s->more);
	}
	metrics_family(out, "krelay_throttle_store_clients_up", "gauge",
	               "Workers whose client of the ThrottleStore (Redis) is connected.");
	metrics_sample_u64(out, "krelay_throttle_store_clients_up", NULL,
	                   throttle_store_clients_up(t));
	free(s);
}
