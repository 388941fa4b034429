/* test_throttle: relay/throttle.c, shaping's counters: one entry per key,
 * shared; connections counted up to max_connections; the rates' waits; a
 * suspension and a lowered rate; and with a cluster's store, what is asked
 * for, when, and how granted cells and slots are spent, run low, expire
 * or are refused. */
#include <time.h>

#include "throttle.h"
#include "unit.h"

#define MS (1000LL * 1000)
#define S  (1000LL * MS)

static struct shaping_limits limits(unsigned max_conns, unsigned msg_n, unsigned msg_per)
{
	struct shaping_limits l;

	memset(&l, 0, sizeof(l));
	l.pool = -1;
	l.max_connections = max_conns;
	l.msg_rate.n = msg_n;
	l.msg_rate.per_s = msg_per;
	return l;
}

TEST(entries_are_shared_by_key)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *a = throttle_get(t, "-\x3emx.example"),
	                      *b = throttle_get(t, "-\x3emx.example");
	struct throttle_entry *c = throttle_get(t, "ip1\x3emx.example");

	CHECK(a == b && a != c);
	CHECK_STR(throttle_key(c), "ip1>mx.example");
	CHECK(throttle_hold(t, a) == a);
	throttle_put(t, a);
	throttle_put(t, a);
	throttle_put(t, b);
	throttle_put(t, c);
	throttle_free(t);
}

static unsigned views;
static void count_view(void *arg, const struct throttle_view *v)
{
	unsigned *conns = arg;

	views++;
	*conns += v->conns;
}

TEST(connections_up_to_the_limit)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *e = throttle_get(t, "k");
	struct shaping_limits l = limits(2, 0, 0);
	struct throttle_verdict v;
	unsigned conns = 0;

	CHECK(throttle_open(e, &l, 10 * S, false).why == THROTTLE_OK);
	CHECK(throttle_open(e, &l, 10 * S, false).why == THROTTLE_OK);
	v = throttle_open(e, &l, 10 * S, false);
	CHECK(v.why == THROTTLE_CONNECTIONS && v.wait_ns == THROTTLE_FULL_POLL_NS && v.ask == 0);
	views = 0;
	throttle_each(t, 10 * S, count_view, &conns);
	CHECK(views == 1 && conns == 2);
	throttle_close(e);
	CHECK(throttle_open(e, &l, 10 * S, false).why == THROTTLE_OK);
	throttle_count(e); /* the same connection's next address */
	throttle_close(e);
	CHECK(throttle_open(e, &l, 10 * S, false).why == THROTTLE_CONNECTIONS);
	throttle_put(t, e);
	throttle_free(t);
}

TEST(rates_wait)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *e = throttle_get(t, "k");
	struct shaping_limits l = limits(0, 1, 1); /* 1/s: a burst of two */
	struct throttle_verdict v;

	l.conn_rate.n = 1;
	l.conn_rate.per_s = 60;
	/* two connections at once (each with its first message), then one a minute */
	CHECK(throttle_open(e, &l, 100 * S, false).why == THROTTLE_OK);
	CHECK(throttle_open(e, &l, 100 * S, false).why == THROTTLE_OK);
	v = throttle_open(e, &l, 100 * S, false);
	CHECK(v.why == THROTTLE_CONN_RATE && v.wait_ns == 60 * S);
	v = throttle_message(e, &l, 100 * S, false);
	CHECK(v.why == THROTTLE_MSG_RATE && v.wait_ns == 1 * S);
	CHECK(throttle_message(e, &l, 101 * S, false).why == THROTTLE_OK);
	throttle_put(t, e);
	throttle_free(t);
}

TEST(suspended_and_slowed)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *e = throttle_get(t, "k");
	struct shaping_limits l = limits(0, 100, 1);
	struct shaping_rate slow = {1, 10};
	struct throttle_verdict v;
	struct timespec ts;
	int64_t now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * S + ts.tv_nsec;
	CHECK(throttle_suspend(e, now + 5 * S));
	CHECK(!throttle_suspend(e, now + 4 * S)); /* already, for longer */
	CHECK(throttle_suspended_until(e, now) == now + 5 * S);
	v = throttle_open(e, &l, now, false);
	CHECK(v.why == THROTTLE_SUSPENDED && v.wait_ns == 5 * S);
	v = throttle_message(e, &l, now + 1 * S, true);
	CHECK(v.why == THROTTLE_SUSPENDED && v.wait_ns == 4 * S && v.ask == 0);
	CHECK(throttle_suspended_until(e, now + 6 * S) == 0);
	/* 1 per 10 s for a while, lower than the table's 100/s */
	CHECK(throttle_slow(e, &slow, now + 60 * S));
	CHECK(!throttle_slow(e, &slow, now + 60 * S));
	CHECK(throttle_message(e, &l, now + 6 * S, false).why == THROTTLE_OK);
	CHECK(throttle_message(e, &l, now + 6 * S, false).why == THROTTLE_OK);
	v = throttle_message(e, &l, now + 6 * S, false);
	CHECK(v.why == THROTTLE_MSG_RATE && v.wait_ns == 10 * S);
	/* in a cluster, the lowered rate is what is asked with */
	v = throttle_message(e, &l, now + 7 * S, true);
	CHECK(v.msg_rate.n == 1 && v.msg_rate.per_s == 10);
	throttle_put(t, e);
	throttle_free(t);
}

TEST(cluster_cells)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *e = throttle_get(t, "k");
	struct shaping_limits l = limits(0, 40, 1); /* 40/s: ask 4 at a time */
	struct throttle_verdict v;
	int64_t now = 50 * S;

	CHECK(throttle_want(&l.msg_rate) == 4);
	/* nothing granted yet: ask, wait for the answer */
	v = throttle_message(e, &l, now, true);
	CHECK(v.why == THROTTLE_MSG_RATE && v.ask == THROTTLE_ASK_BIT(THROTTLE_ASK_MSG));
	CHECK(v.wait_ns == THROTTLE_CLUSTER_POLL_NS && v.msg_rate.n == 40);
	/* asked already: no second ask */
	v = throttle_message(e, &l, now, true);
	CHECK(v.why == THROTTLE_MSG_RATE && v.ask == 0);
	throttle_granted(e, THROTTLE_ASK_MSG, 4, 0, now);
	CHECK(throttle_message(e, &l, now, true).ask == 0);
	CHECK(throttle_message(e, &l, now, true).ask == 0);
	/* running low (1 left, fewer than half of 4): ask ahead */
	v = throttle_message(e, &l, now, true);
	CHECK(v.why == THROTTLE_OK && v.ask == THROTTLE_ASK_BIT(THROTTLE_ASK_MSG));
	CHECK(throttle_message(e, &l, now, true).why == THROTTLE_OK);
	CHECK(throttle_message(e, &l, now, true).why == THROTTLE_MSG_RATE);
	/* the store says wait 300 ms: no ask before that */
	throttle_granted(e, THROTTLE_ASK_MSG, 0, 300 * MS, now);
	v = throttle_message(e, &l, now + 100 * MS, true);
	CHECK(v.why == THROTTLE_MSG_RATE && v.ask == 0 && v.wait_ns == 200 * MS);
	v = throttle_message(e, &l, now + 300 * MS, true);
	CHECK(v.ask == THROTTLE_ASK_BIT(THROTTLE_ASK_MSG));
	/* no answer (the store went away): free to ask again */
	throttle_ask_failed(e, THROTTLE_ASK_MSG);
	v = throttle_message(e, &l, now + 310 * MS, true);
	CHECK(v.ask == THROTTLE_ASK_BIT(THROTTLE_ASK_MSG));
	/* cells not spent in time are gone */
	throttle_granted(e, THROTTLE_ASK_MSG, 4, 0, now + 400 * MS);
	v = throttle_message(e, &l, now + 400 * MS + THROTTLE_GRANT_TTL_NS, true);
	CHECK(v.why == THROTTLE_MSG_RATE && v.ask == THROTTLE_ASK_BIT(THROTTLE_ASK_MSG));
	/* and the local counters decide alone meanwhile */
	CHECK(throttle_message(e, &l, now + 2 * S, false).why == THROTTLE_OK);
	throttle_put(t, e);
	throttle_free(t);
}

static bool slots_seen;
static void see_slots(void *arg, const struct throttle_view *v)
{
	slots_seen = v->slots_used;
}

TEST(cluster_connections)
{
	struct throttle *t = throttle_new();
	struct throttle_entry *e = throttle_get(t, "k");
	struct shaping_limits l = limits(5, 10, 1);
	struct throttle_verdict v;
	int64_t now = 70 * S;

	l.conn_rate.n = 1;
	l.conn_rate.per_s = 1;
	/* a slot, a connection cell and a message cell: all three asked */
	v = throttle_open(e, &l, now, true);
	CHECK(v.why == THROTTLE_CONNECTIONS);
	CHECK(v.ask ==
	      (THROTTLE_ASK_BIT(THROTTLE_ASK_SLOT) | THROTTLE_ASK_BIT(THROTTLE_ASK_CONN_RATE) |
	       THROTTLE_ASK_BIT(THROTTLE_ASK_MSG)));
	throttle_granted(e, THROTTLE_ASK_SLOT, 1, 0, now);
	throttle_granted(e, THROTTLE_ASK_MSG, 1, 0, now);
	v = throttle_open(e, &l, now, true);
	CHECK(v.why == THROTTLE_CONN_RATE && v.ask == 0);
	throttle_granted(e, THROTTLE_ASK_CONN_RATE, 1, 0, now);
	slots_seen = false;
	throttle_each(t, now, see_slots, NULL);
	CHECK(!slots_seen);
	v = throttle_open(e, &l, now, true);
	CHECK(v.why == THROTTLE_OK);
	/* spent: the message and connection cells are asked for ahead */
	CHECK(v.ask ==
	      (THROTTLE_ASK_BIT(THROTTLE_ASK_CONN_RATE) | THROTTLE_ASK_BIT(THROTTLE_ASK_MSG)));
	throttle_each(t, now, see_slots, NULL);
	CHECK(slots_seen);
	/* the store refuses a slot: wait, and ask again only later */
	v = throttle_open(e, &l, now, true);
	CHECK(v.why == THROTTLE_CONNECTIONS && (v.ask & THROTTLE_ASK_BIT(THROTTLE_ASK_SLOT)));
	throttle_granted(e, THROTTLE_ASK_SLOT, 0, 0, now);
	v = throttle_open(e, &l, now + 1 * MS, true);
	CHECK(v.why == THROTTLE_CONNECTIONS && !(v.ask & THROTTLE_ASK_BIT(THROTTLE_ASK_SLOT)));
	throttle_close(e);
	throttle_put(t, e);
	throttle_free(t);
}

int main(void)
{
	RUN(entries_are_shared_by_key);
	RUN(connections_up_to_the_limit);
	RUN(rates_wait);
	RUN(suspended_and_slowed);
	RUN(cluster_cells);
	RUN(cluster_connections);
	UNIT_END("test_throttle");
}
