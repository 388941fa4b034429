/* qshape: `krelay queue summary`, Postfix's qshape table: the recipients
 * still to be delivered, by recipient domain and by how long their message
 * has waited.  Pure code. */
#ifndef KRELAY_QSHAPE_H
#define KRELAY_QSHAPE_H

#include <stdint.h>
#include <stdio.h>

/* Age buckets in minutes, as qshape's: up to 5, 10, 20 ... 1280, then
 * older. */
#define QSHAPE_BUCKETS 10
extern const char *const qshape_bucket_names[QSHAPE_BUCKETS];

struct qshape;

struct qshape *qshape_new(void);
void qshape_free(struct qshape *q);
/* One pending recipient of a message that arrived age_s seconds ago (a
 * negative age, from a clock set back, counts as new).  domain: the
 * recipient's, compared without case.  -1 when out of memory. */
int qshape_add(struct qshape *q, const char *domain, int64_t age_s);
/* The bucket an age falls in. */
unsigned qshape_bucket(int64_t age_s);

/* The table: a TOTAL row, then the domains with the most recipients first
 * (at most top of them; 0: all), names made safe (safe.h). */
void qshape_print(const struct qshape *q, size_t top, FILE *out);
/* The same as one JSON object: {"buckets": [...], "total": {...},
 * "domains": [{"domain": ..., "total": N, "ages": [...]}, ...]}. */
void qshape_json(const struct qshape *q, size_t top, FILE *out);

#endif
