/* bench_stats: see bench_stats.h. */
#include "bench_stats.h"

#include <math.h>
#include <stdlib.h>

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

static double rank(const float *sorted, size_t n, double p)
{
	size_t i = (size_t)ceil(p * (double)n);

	return sorted[i == 0 ? 0 : i - 1];
}

void lat_compute(float *ms, size_t n, struct lat_stats *out)
{
	out->p50 = out->p90 = out->p99 = out->max = 0;
	if (n == 0)
		return;
	qsort(ms, n, sizeof(*ms), cmp_float);
	out->p50 = rank(ms, n, 0.50);
	out->p90 = rank(ms, n, 0.90);
	out->p99 = rank(ms, n, 0.99);
	out->max = ms[n - 1];
}
