/* client_count: see client_count.h.
 *
 * A fixed table made at start: STRIPES stripes, each an open-addressing
 * table of SLOTS slots behind its own mutex, so that workers accepting at
 * once seldom wait for each other and a lock is held for a few probes.
 * Linear probing with backward-shift deletion: no tombstones pile up, so a
 * lookup never walks more than the live entries of its stripe.  The hash is
 * keyed with a random seed, so a peer cannot choose addresses that all land
 * in one place.  The table holds far more addresses than MaxConnections
 * allows sessions; a stripe that is full leaves an address uncounted (let
 * in, never refused: MaxConnections still bounds the total). */
#include "client_count.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define STRIPES      64
#define SLOTS        1024 /* per stripe, a power of two */
#define SLOT_MASK    (SLOTS - 1)
#define STRIPE_SHIFT 58 /* top 6 bits of the hash pick the stripe */

struct slot {
	struct client_key key;
	unsigned count; /* 0: empty */
};

struct stripe {
	pthread_mutex_t lock;
	struct slot slot[SLOTS];
};

struct client_count {
	uint64_t seed[2];
	struct stripe stripe[STRIPES];
};

struct client_count *client_count_new(void)
{
	struct client_count *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	if (getrandom(t->seed, sizeof(t->seed), 0) != sizeof(t->seed))
		t->seed[0] = (uint64_t)(uintptr_t)t, t->seed[1] = ~t->seed[0];
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&t->stripe[i].lock, NULL);
	return t;
}

void client_count_free(struct client_count *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&t->stripe[i].lock);
	free(t);
}

bool client_key_of(const struct sockaddr_storage *ss, struct client_key *k)
{
	memset(k, 0, sizeof(*k));
	if (ss->ss_family == AF_INET6) {
		memcpy(k->a, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
		return true;
	}
	if (ss->ss_family == AF_INET) {
		k->a[10] = k->a[11] = 0xff;
		memcpy(k->a + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		return true;
	}
	return false;
}

void client_key_text(const struct client_key *k, char *buf, size_t len)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char text[INET6_ADDRSTRLEN];

	if (memcmp(k->a, mapped, sizeof(mapped)) == 0)
		inet_ntop(AF_INET, k->a + 12, text, sizeof(text));
	else
		inet_ntop(AF_INET6, k->a, text, sizeof(text));
	snprintf(buf, len, "%s", text);
}

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static uint64_t hash(const struct client_count *t, const struct client_key *k)
{
	uint64_t a, b;

	memcpy(&a, k->a, 8);
	memcpy(&b, k->a + 8, 8);
	return mix(mix(a ^ t->seed[0]) ^ b ^ t->seed[1]);
}

/* The slot holding k in s, or the empty slot where it would go; NULL when
 * k is absent and s is full.  Caller holds s->lock. */
static struct slot *find(struct stripe *s, const struct client_key *k, uint64_t h)
{
	unsigned i = (unsigned)h & SLOT_MASK;

	for (unsigned n = 0; n < SLOTS; n++, i = (i + 1) & SLOT_MASK) {
		struct slot *sl = &s->slot[i];
		if (sl->count == 0 || memcmp(&sl->key, k, sizeof(*k)) == 0)
			return sl;
	}
	return NULL;
}

unsigned client_count_add(struct client_count *t, const struct client_key *k)
{
	uint64_t h = hash(t, k);
	struct stripe *s = &t->stripe[h >> STRIPE_SHIFT];
	struct slot *sl;
	unsigned n = 0;

	pthread_mutex_lock(&s->lock);
	sl = find(s, k, h);
	if (sl != NULL) {
		sl->key = *k;
		n = ++sl->count;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Empties slot i and moves later entries of its probe run back into the
 * hole, so that every entry stays reachable from its home slot. */
static void remove_at(struct client_count *t, struct stripe *s, unsigned i)
{
	unsigned j = i;

	for (;;) {
		j = (j + 1) & SLOT_MASK;
		if (s->slot[j].count == 0)
			break;
		unsigned home = (unsigned)hash(t, &s->slot[j].key) & SLOT_MASK;
		/* j's entry may fill the hole at i unless its home lies
		 * cyclically in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (stays)
			continue;
		s->slot[i] = s->slot[j];
		i = j;
	}
	s->slot[i].count = 0;
}

void client_count_del(struct client_count *t, const struct client_key *k)
{
	uint64_t h = hash(t, k);
	struct stripe *s = &t->stripe[h >> STRIPE_SHIFT];
	struct slot *sl;

	pthread_mutex_lock(&s->lock);
	sl = find(s, k, h);
	assert(sl != NULL && sl->count > 0);
	if (sl != NULL && sl->count > 0 && --sl->count == 0)
		remove_at(t, s, (unsigned)(sl - s->slot));
	pthread_mutex_unlock(&s->lock);
}

unsigned client_count_get(struct client_count *t, const struct client_key *k)
{
	uint64_t h = hash(t, k);
	struct stripe *s = &t->stripe[h >> STRIPE_SHIFT];
	struct slot *sl;
	unsigned n;

	pthread_mutex_lock(&s->lock);
	sl = find(s, k, h);
	n = sl != NULL ? sl->count : 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}
