/* test_wheel: the timer wheel (kernel/wheel.c) that carries every
 * connection's read and write deadlines: never early, at most one tick late,
 * timers beyond one turn of the wheel, moving and disarming, callbacks that
 * arm timers, and long gaps between calls. */
#include "unit.h"
#include "wheel.h"

#define MS (1000ll * 1000)
#define S  (1000 * MS)

static struct wheel w;
static int64_t fired_at[64];
static int nfired;
static int64_t clock_now;

struct probe {
	struct wheel_timer t;
	int64_t fired; /* clock_now when it fired; 0: not yet */
	int times;
	int64_t rearm_by; /* > 0: the callback arms it again this far ahead */
	bool rearm_past;  /* the first callback arms it again for its old due time */
};

static void on_fire(struct wheel_timer *t)
{
	struct probe *p = t->owner;

	p->fired = clock_now;
	p->times++;
	if (nfired < 64)
		fired_at[nfired++] = clock_now;
	if (p->rearm_by > 0)
		wheel_arm(&w, &p->t, clock_now + p->rearm_by);
	if (p->rearm_past && p->times == 1)
		wheel_arm(&w, &p->t, p->t.due);
}

static void probe_init(struct probe *p)
{
	memset(p, 0, sizeof(*p));
	wheel_timer_init(&p->t, on_fire, p);
}

/* Runs the wheel the way the ring does: wakes at wheel_next, expires. */
static void run_until(int64_t end)
{
	for (;;) {
		int64_t next = wheel_next(&w);
		if (next > end)
			break;
		if (next > clock_now)
			clock_now = next;
		wheel_expire(&w, clock_now);
	}
	clock_now = end;
	wheel_expire(&w, clock_now);
}

static void reset(int64_t now)
{
	clock_now = now;
	nfired = 0;
	wheel_init(&w, now);
}

TEST(fires_once_never_early_at_most_one_tick_late)
{
	struct probe p;
	int64_t due;

	reset(1000 * S + 7 * MS);
	probe_init(&p);
	due = clock_now + 300 * MS + 3;
	int64_t end = wheel_arm(&w, &p.t, due);
	CHECK(wheel_armed(&p.t));
	CHECK(end >= due && end <= due + WHEEL_TICK_NS);
	CHECK(wheel_next(&w) == end);
	run_until(due - 1);
	CHECK(p.times == 0);
	run_until(due + 5 * S);
	CHECK(p.times == 1);
	CHECK(p.fired >= due && p.fired <= due + WHEEL_TICK_NS);
	CHECK(!wheel_armed(&p.t));
	CHECK(wheel_next(&w) == INT64_MAX);
}

TEST(beyond_one_turn)
{
	struct probe p, q;
	int64_t span = (int64_t)WHEEL_SLOTS * WHEEL_TICK_NS;

	reset(5 * S);
	probe_init(&p);
	probe_init(&q);
	/* p shares a slot with q, one turn later */
	wheel_arm(&w, &q.t, clock_now + 2 * S);
	wheel_arm(&w, &p.t, clock_now + 2 * S + span);
	run_until(clock_now + 3 * S);
	CHECK(q.times == 1);
	CHECK(p.times == 0);
	CHECK(wheel_armed(&p.t));
	run_until(5 * S + 2 * S + span - 1);
	CHECK(p.times == 0);
	run_until(5 * S + 2 * S + span + WHEEL_TICK_NS);
	CHECK(p.times == 1);
	CHECK(p.fired >= 5 * S + 2 * S + span);
}

TEST(an_hour_ahead)
{
	struct probe p;

	reset(0);
	probe_init(&p);
	wheel_arm(&w, &p.t, 3600 * S);
	run_until(3600 * S - 1);
	CHECK(p.times == 0);
	run_until(3601 * S);
	CHECK(p.times == 1);
	CHECK(p.fired >= 3600 * S && p.fired <= 3600 * S + WHEEL_TICK_NS);
}

TEST(moved_and_disarmed)
{
	struct probe a, b, c;

	reset(10 * S);
	probe_init(&a);
	probe_init(&b);
	probe_init(&c);
	wheel_arm(&w, &a.t, clock_now + 1 * S);
	wheel_arm(&w, &b.t, clock_now + 1 * S);
	wheel_arm(&w, &c.t, clock_now + 1 * S);
	CHECK(w.count == 3);
	/* a: later; b: earlier; c: gone (twice, which is harmless) */
	wheel_arm(&w, &a.t, clock_now + 4 * S);
	wheel_arm(&w, &b.t, clock_now + 200 * MS);
	wheel_disarm(&w, &c.t);
	wheel_disarm(&w, &c.t);
	CHECK(w.count == 2);
	run_until(10 * S + 2 * S);
	CHECK(b.times == 1 && b.fired <= 10 * S + 200 * MS + WHEEL_TICK_NS);
	CHECK(a.times == 0);
	CHECK(c.times == 0);
	run_until(10 * S + 5 * S);
	CHECK(a.times == 1 && a.fired >= 10 * S + 4 * S);
	CHECK(c.times == 0);
	CHECK(w.count == 0);
}

TEST(due_already_past)
{
	struct probe p;

	reset(50 * S);
	probe_init(&p);
	wheel_expire(&w, clock_now); /* the current tick's start is expired */
	int64_t end = wheel_arm(&w, &p.t, clock_now - 10 * S);
	CHECK(end > clock_now - 10 * S && end <= clock_now + WHEEL_TICK_NS);
	run_until(clock_now + WHEEL_TICK_NS);
	CHECK(p.times == 1);
}

TEST(callback_rearms_into_the_same_tick)
{
	struct probe p;

	reset(0);
	probe_init(&p);
	p.rearm_by = 1; /* what xprt's expiry does: again, one tick on */
	wheel_arm(&w, &p.t, 100 * MS);
	run_until(100 * MS + WHEEL_TICK_NS);
	CHECK(p.times >= 1 && p.times <= 2);
	int before = p.times;
	run_until(2 * S);
	/* one firing per tick: never a loop inside one call */
	CHECK(p.times - before <= (int)(2 * S / WHEEL_TICK_NS) + 1);
	CHECK(p.times - before >= (int)((2 * S - 200 * MS) / WHEEL_TICK_NS) - 1);
	p.rearm_by = 0;
	run_until(3 * S);
	CHECK(!wheel_armed(&p.t));
}

TEST(callback_arms_a_time_already_past)
{
	struct probe p;

	/* armed from its own callback for a time in the tick being expired:
	 * it fires on the next tick, not a turn of the wheel later */
	reset(0);
	probe_init(&p);
	p.rearm_past = true;
	wheel_arm(&w, &p.t, 100 * MS + 1);
	run_until(100 * MS + 3 * WHEEL_TICK_NS);
	CHECK(p.times == 2);
}

TEST(long_gap_between_calls)
{
	struct probe p[8];

	reset(0);
	for (int i = 0; i < 8; i++) {
		probe_init(&p[i]);
		wheel_arm(&w, &p[i].t, (int64_t)(i + 1) * 30 * S); /* up to 240 s: several turns */
	}
	/* nothing expires for ten minutes, then one call */
	clock_now = 600 * S;
	CHECK(wheel_expire(&w, clock_now) == 8);
	for (int i = 0; i < 8; i++)
		CHECK(p[i].times == 1);
	/* after the gap the wheel still keeps time */
	probe_init(&p[0]);
	wheel_arm(&w, &p[0].t, clock_now + 500 * MS);
	run_until(clock_now + 400 * MS);
	CHECK(p[0].times == 0);
	run_until(clock_now + 200 * MS);
	CHECK(p[0].times == 1);
}

TEST(many_timers_fire_in_due_order_by_tick)
{
	static struct probe p[500];
	unsigned seed = 12345;

	reset(77 * S);
	for (int i = 0; i < 500; i++) {
		probe_init(&p[i]);
		seed = seed * 1103515245u + 12345u;
		wheel_arm(&w, &p[i].t, clock_now + (int64_t)(seed % 120000) * MS);
	}
	CHECK(w.count == 500);
	run_until(77 * S + 121 * S);
	CHECK(w.count == 0);
	for (int i = 0; i < 500; i++) {
		CHECK(p[i].times == 1);
		CHECK(p[i].fired >= p[i].t.due);
		CHECK(p[i].fired <= p[i].t.due + WHEEL_TICK_NS);
	}
}

int main(void)
{
	RUN(fires_once_never_early_at_most_one_tick_late);
	RUN(beyond_one_turn);
	RUN(an_hour_ahead);
	RUN(moved_and_disarmed);
	RUN(due_already_past);
	RUN(callback_rearms_into_the_same_tick);
	RUN(callback_arms_a_time_already_past);
	RUN(long_gap_between_calls);
	RUN(many_timers_fire_in_due_order_by_tick);
	UNIT_END("test_wheel");
}
