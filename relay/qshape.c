/* qshape: see qshape.h. */
#include "qshape.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "safe.h"

const char *const qshape_bucket_names[QSHAPE_BUCKETS] = {"5",   "10",  "20",  "40",   "80",
                                                         "160", "320", "640", "1280", "1280+"};

struct row {
	char *domain; /* lower case */
	uint64_t total, age[QSHAPE_BUCKETS];
};

struct qshape {
	struct row *r;
	size_t n, cap;
	struct row all;
};

struct qshape *qshape_new(void)
{
	return calloc(1, sizeof(struct qshape));
}

void qshape_free(struct qshape *q)
{
	if (q == NULL)
		return;
	for (size_t i = 0; i < q->n; i++)
		free(q->r[i].domain);
	free(q->r);
	free(q);
}

unsigned qshape_bucket(int64_t age_s)
{
	int64_t limit = 5 * 60;

	for (unsigned b = 0; b + 1 < QSHAPE_BUCKETS; b++, limit *= 2)
		if (age_s < limit)
			return b;
	return QSHAPE_BUCKETS - 1;
}

int qshape_add(struct qshape *q, const char *domain, int64_t age_s)
{
	unsigned b = qshape_bucket(age_s);
	struct row *r = NULL;

	for (size_t i = 0; i < q->n && r == NULL; i++)
		if (strcasecmp(q->r[i].domain, domain) == 0)
			r = &q->r[i];
	if (r == NULL) {
		if (q->n == q->cap) {
			size_t cap = q->cap ? q->cap * 2 : 16;
			struct row *nr = realloc(q->r, cap * sizeof(*nr));
			if (nr == NULL)
				return -1;
			q->r = nr;
			q->cap = cap;
		}
		r = &q->r[q->n];
		memset(r, 0, sizeof(*r));
		if ((r->domain = strdup(domain)) == NULL)
			return -1;
		for (char *p = r->domain; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		q->n++;
	}
	r->total++;
	r->age[b]++;
	q->all.total++;
	q->all.age[b]++;
	return 0;
}

static int by_total(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->total != y->total)
		return x->total > y->total ? -1 : 1;
	return strcmp(x->domain, y->domain);
}

/* The rows in order (a sorted copy of the pointers' targets). */
static struct row *sorted(const struct qshape *q)
{
	struct row *s = malloc((q->n ? q->n : 1) * sizeof(*s));

	if (s != NULL) {
		if (q->n > 0)
			memcpy(s, q->r, q->n * sizeof(*s));
		qsort(s, q->n, sizeof(*s), by_total);
	}
	return s;
}

static void print_row(const char *name, const struct row *r, int w, FILE *out)
{
	fprintf(out, "%*s %6" PRIu64, w, name, r->total);
	for (unsigned b = 0; b < QSHAPE_BUCKETS; b++)
		fprintf(out, " %*" PRIu64, b + 1 < QSHAPE_BUCKETS ? 5 : 6, r->age[b]);
	fputc('\n', out);
}

void qshape_print(const struct qshape *q, size_t top, FILE *out)
{
	struct row *s = sorted(q);
	size_t n = top && top < q->n ? top : q->n;
	int w = 5;
	char name[SAFE_LEN(256)];

	if (s == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		int l = (int)strlen(safe_log(name, sizeof(name), s[i].domain));
		w = l > w ? l : w;
	}
	fprintf(out, "%*s %6s", w, "", "T");
	for (unsigned b = 0; b < QSHAPE_BUCKETS; b++)
		fprintf(out, " %*s", b + 1 < QSHAPE_BUCKETS ? 5 : 6, qshape_bucket_names[b]);
	fputc('\n', out);
	print_row("TOTAL", &q->all, w, out);
	for (size_t i = 0; i < n; i++)
		print_row(safe_log(name, sizeof(name), s[i].domain), &s[i], w, out);
	free(s);
}

static void json_row(const struct row *r, FILE *out)
{
	fprintf(out, "\"total\": %" PRIu64 ", \"ages\": [", r->total);
	for (unsigned b = 0; b < QSHAPE_BUCKETS; b++)
		fprintf(out, "%s%" PRIu64, b ? ", " : "", r->age[b]);
	fputc(']', out);
}

void qshape_json(const struct qshape *q, size_t top, FILE *out)
{
	struct row *s = sorted(q);
	size_t n = top && top < q->n ? top : q->n;

	if (s == NULL)
		return;
	fputs("{\"buckets\": [", out);
	for (unsigned b = 0; b < QSHAPE_BUCKETS; b++)
		fprintf(out, "%s\"%s\"", b ? ", " : "", qshape_bucket_names[b]);
	fputs("], \"total\": {", out);
	json_row(&q->all, out);
	fputs("}, \"domains\": [", out);
	for (size_t i = 0; i < n; i++) {
		fputs(i ? ", {\"domain\": \"" : "{\"domain\": \"", out);
		for (const char *p = s[i].domain; *p; p++) {
			unsigned char c = (unsigned char)*p;
			if (c == '"' || c == '\\')
				fprintf(out, "\\%c", c);
			else if (c < 0x20 || c == 0x7f)
				fprintf(out, "\\u%04x", c);
			else
				fputc(c, out);
		}
		fputs("\", ", out);
		json_row(&s[i], out);
		fputc('}', out);
	}
	fputs("]}\n", out);
	free(s);
}
