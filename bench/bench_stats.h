/* bench_stats: latency percentiles of a run. */
#ifndef KRELAY_BENCH_STATS_H
#define KRELAY_BENCH_STATS_H

#include <stddef.h>

struct lat_stats {
	double p50, p90, p99, max; /* milliseconds; 0 without samples */
};

/* Nearest-rank percentiles of n samples (ms); sorts ms in place. */
void lat_compute(float *ms, size_t n, struct lat_stats *out);

#endif
