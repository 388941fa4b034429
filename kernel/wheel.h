/* wheel: a hashed timer wheel (Varghese and Lauck), pure: no clock and no
 * ring.  Its owner says what time it is; the ring (ring.h) drives one per
 * worker with a single IORING_OP_TIMEOUT, so that the read and write
 * deadlines of every connection cost a list insertion each, not a linked
 * timeout request and its completion.
 *
 * Time is in nanoseconds on the owner's clock, cut into ticks of
 * WHEEL_TICK_NS; a timer is kept in the slot of the tick its due time falls
 * in and fires once that tick has passed: never early, at most one tick
 * late.  Timers due further ahead than the wheel's span share slots with
 * nearer ones and are simply passed over until their own turn. */
#ifndef KRELAY_WHEEL_H
#define KRELAY_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WHEEL_SLOTS   1024u
#define WHEEL_TICK_NS (50ll * 1000 * 1000) /* 50 ms: the span is 51.2 s */

struct wheel_timer;
typedef void (*wheel_fire)(struct wheel_timer *t);

struct wheel_timer {
	struct wheel_timer *next, *prev; /* NULL while not armed */
	int64_t due;
	wheel_fire fire;
	void *owner;
};

struct wheel {
	struct wheel_timer slot[WHEEL_SLOTS]; /* list heads */
	int64_t done;                         /* ticks before this one are expired */
	unsigned count;                       /* timers armed */
};

void wheel_init(struct wheel *w, int64_t now);
void wheel_timer_init(struct wheel_timer *t, wheel_fire fire, void *owner);
static inline bool wheel_armed(const struct wheel_timer *t)
{
	return t->next != NULL;
}
/* Arms (or moves) t to fire once due has passed.  Returns the time by which
 * the owner must call wheel_expire for t to fire on time: the end of its
 * tick. */
int64_t wheel_arm(struct wheel *w, struct wheel_timer *t, int64_t due);
void wheel_disarm(struct wheel *w, struct wheel_timer *t);
/* Fires every timer due at or before now, each disarmed before its fire
 * callback, which may arm or disarm any timer.  Returns how many fired. */
unsigned wheel_expire(struct wheel *w, int64_t now);
/* When wheel_expire should next run: the end of the first tick, from the
 * first unexpired one, whose slot holds a timer; INT64_MAX when none is
 * armed. */
int64_t wheel_next(const struct wheel *w);

#endif
