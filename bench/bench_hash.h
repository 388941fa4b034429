/* bench_hash: the 64-bit checksum of a message body in the X-Bench header.
 * An xxh64-like construction written for krelay-bench: four 64-bit lanes
 * over 32-byte stripes (several GB/s), streaming, so a receiver can feed the
 * body in any pieces and get the same value as the sender. */
#ifndef KRELAY_BENCH_HASH_H
#define KRELAY_BENCH_HASH_H

#include <stddef.h>
#include <stdint.h>

struct bench_hash {
	uint64_t lane[4];
	uint64_t total;
	unsigned char buf[32];
	size_t buf_len;
};

void bench_hash_init(struct bench_hash *h);
void bench_hash_update(struct bench_hash *h, const void *data, size_t len);
uint64_t bench_hash_final(const struct bench_hash *h);
/* One call: init, update, final. */
uint64_t bench_hash(const void *data, size_t len);

#endif
