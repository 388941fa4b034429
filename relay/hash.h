/* hash: FNV-1a (32 bits), the string hash of the relay's tables: the
 * destinations by name, shaping's counters and site names, the tags of
 * Sendmail queue directories. */
#ifndef KRELAY_HASH_H
#define KRELAY_HASH_H

#include <stdint.h>

#define FNV1A_INIT 2166136261u

/* h carried on over the bytes of s (start from FNV1A_INIT). */
static inline uint32_t fnv1a_add(uint32_t h, const char *s)
{
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static inline uint32_t fnv1a(const char *s)
{
	return fnv1a_add(FNV1A_INIT, s);
}

#endif
