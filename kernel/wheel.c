/* wheel: see wheel.h. */
#include "wheel.h"

#include <stddef.h>

static int64_t tick_of(int64_t t)
{
	return t / WHEEL_TICK_NS;
}

static void link_after(struct wheel_timer *head, struct wheel_timer *t)
{
	t->prev = head;
	t->next = head->next;
	head->next->prev = t;
	head->next = t;
}

static void unlink_timer(struct wheel_timer *t)
{
	t->prev->next = t->next;
	t->next->prev = t->prev;
	t->next = t->prev = NULL;
}

void wheel_init(struct wheel *w, int64_t now)
{
	for (unsigned i = 0; i < WHEEL_SLOTS; i++)
		w->slot[i].next = w->slot[i].prev = &w->slot[i];
	w->done = tick_of(now);
	w->count = 0;
}

void wheel_timer_init(struct wheel_timer *t, wheel_fire fire, void *owner)
{
	t->next = t->prev = NULL;
	t->due = 0;
	t->fire = fire;
	t->owner = owner;
}

int64_t wheel_arm(struct wheel *w, struct wheel_timer *t, int64_t due)
{
	int64_t k = tick_of(due);

	if (wheel_armed(t))
		unlink_timer(t);
	else
		w->count++;
	/* A tick already expired is not visited again: a timer due in one
	 * goes into the next tick to be expired. */
	if (k < w->done)
		k = w->done;
	t->due = due;
	link_after(&w->slot[(uint64_t)k % WHEEL_SLOTS], t);
	return (k + 1) * WHEEL_TICK_NS;
}

void wheel_disarm(struct wheel *w, struct wheel_timer *t)
{
	if (!wheel_armed(t))
		return;
	unlink_timer(t);
	w->count--;
}

/* Fires what is due in one slot.  The slot's list is taken whole first, so
 * that fire callbacks may arm timers into this very slot. */
static unsigned expire_slot(struct wheel *w, struct wheel_timer *head, int64_t now)
{
	struct wheel_timer taken;
	unsigned fired = 0;

	if (head->next == head)
		return 0;
	taken.next = head->next;
	taken.prev = head->prev;
	taken.next->prev = &taken;
	taken.prev->next = &taken;
	head->next = head->prev = head;
	while (taken.next != &taken) {
		struct wheel_timer *t = taken.next;

		unlink_timer(t);
		if (t->due <= now) {
			w->count--;
			fired++;
			t->fire(t);
		} else {
			link_after(head, t); /* a later turn of the wheel */
		}
	}
	return fired;
}

unsigned wheel_expire(struct wheel *w, int64_t now)
{
	int64_t end = tick_of(now); /* ticks before this one have passed */
	unsigned fired = 0;

	if (w->count == 0 || end - w->done >= (int64_t)WHEEL_SLOTS) {
		/* Empty, or a whole turn passed since the last call: every
		 * slot is visited once.  (done moves first, here and below,
		 * so that a timer a callback arms lands in a tick still to
		 * be expired.) */
		if (end > w->done)
			w->done = end;
		for (unsigned i = 0; i < WHEEL_SLOTS && w->count > 0; i++)
			fired += expire_slot(w, &w->slot[i], now);
		return fired;
	}
	while (w->done < end) {
		int64_t k = w->done++;
		fired += expire_slot(w, &w->slot[(uint64_t)k % WHEEL_SLOTS], now);
	}
	return fired;
}

int64_t wheel_next(const struct wheel *w)
{
	if (w->count == 0)
		return INT64_MAX;
	for (int64_t k = w->done; k < w->done + (int64_t)WHEEL_SLOTS; k++) {
		const struct wheel_timer *head = &w->slot[(uint64_t)k % WHEEL_SLOTS];
		if (head->next != head)
			return (k + 1) * WHEEL_TICK_NS;
	}
	return INT64_MAX; /* not reached: count > 0 means some slot holds a timer */
}
