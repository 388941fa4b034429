/* bench_hash: see bench_hash.h. */
#include "bench_hash.h"

#include <endian.h>
#include <string.h>

#define K1 0x9E3779B185EBCA87ull
#define K2 0xC2B2AE3D27D4EB4Full
#define K3 0x165667B19E3779F9ull
#define K4 0x85EBCA77C2B2AE63ull

static inline uint64_t rotl(uint64_t v, unsigned r)
{
	return (v << r) | (v >> (64 - r));
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v); /* little-endian words on every machine */
}

static inline uint64_t mix(uint64_t acc, uint64_t word)
{
	return rotl(acc + word * K2, 31) * K1;
}

static void stripe(uint64_t lane[4], const unsigned char *p)
{
	lane[0] = mix(lane[0], load64(p));
	lane[1] = mix(lane[1], load64(p + 8));
	lane[2] = mix(lane[2], load64(p + 16));
	lane[3] = mix(lane[3], load64(p + 24));
}

void bench_hash_init(struct bench_hash *h)
{
	h->lane[0] = K1 + K2;
	h->lane[1] = K2;
	h->lane[2] = 0;
	h->lane[3] = 0 - K1;
	h->total = 0;
	h->buf_len = 0;
}

void bench_hash_update(struct bench_hash *h, const void *data, size_t len)
{
	const unsigned char *p = data;

	h->total += len;
	if (h->buf_len > 0) {
		size_t take = 32 - h->buf_len < len ? 32 - h->buf_len : len;
		memcpy(h->buf + h->buf_len, p, take);
		h->buf_len += take;
		p += take;
		len -= take;
		if (h->buf_len < 32)
			return;
		stripe(h->lane, h->buf);
		h->buf_len = 0;
	}
	for (; len >= 32; p += 32, len -= 32)
		stripe(h->lane, p);
	memcpy(h->buf, p, len);
	h->buf_len = len;
}

uint64_t bench_hash_final(const struct bench_hash *h)
{
	const unsigned char *p = h->buf;
	size_t left = h->buf_len;
	uint64_t v =
	    rotl(h->lane[0], 1) + rotl(h->lane[1], 7) + rotl(h->lane[2], 12) + rotl(h->lane[3], 18);

	for (unsigned i = 0; i < 4; i++)
		v = (v ^ mix(0, h->lane[i])) * K1 + K4;
	v += h->total;
	for (; left >= 8; p += 8, left -= 8)
		v = rotl(v ^ mix(0, load64(p)), 27) * K1 + K4;
	for (; left > 0; p++, left--)
		v = rotl(v ^ (*p * K3), 11) * K1;
	v ^= v >> 33;
	v *= K2;
	v ^= v >> 29;
	v *= K3;
	v ^= v >> 32;
	return v;
}

uint64_t bench_hash(const void *data, size_t len)
{
	struct bench_hash h;

	bench_hash_init(&h);
	bench_hash_update(&h, data, len);
	return bench_hash_final(&h);
}
