/* throttle: see throttle.h. */
#include "throttle.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

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
	struct throttle_entry *next;
	char key[];
};

struct throttle {
	pthread_mutex_t lock;
	struct throttle_entry **b;
	size_t nb, n, swept_at; /* n when the last sweep ended */
};

static uint32_t key_hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

struct throttle *throttle_new(void)
{
	struct throttle *t = calloc(1, sizeof(*t));

	if (t == NULL || (t->b = calloc(BUCKETS_MIN, sizeof(*t->b))) == NULL)
		fatalx("out of memory");
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
	uint32_t h = key_hash(key);
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
			fatalx("out of memory");
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
	struct throttle_verdict v = {why, why == THROTTLE_OK ? 0 : wait > 0 ? wait : 1};

	if (why != THROTTLE_OK)
		e->delays++;
	return v;
}

struct throttle_verdict throttle_open(struct throttle_entry *e, const struct shaping_limits *l,
                                      int64_t now)
{
	struct throttle_verdict v;
	const struct shaping_rate *mr;
	int64_t w;

	pthread_mutex_lock(&e->lock);
	mr = msg_rate(e, l, now);
	if (e->suspended_until > now)
		v = verdict(e, THROTTLE_SUSPENDED, e->suspended_until - now);
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
                                         int64_t now)
{
	struct throttle_verdict v;
	int64_t w;

	pthread_mutex_lock(&e->lock);
	if (e->suspended_until > now)
		v = verdict(e, THROTTLE_SUSPENDED, e->suspended_until - now);
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

void throttle_each(struct throttle *t, int64_t now,
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
			pthread_mutex_unlock(&e->lock);
			fn(arg, &v);
		}
	pthread_mutex_unlock(&t->lock);
}
