/* bench_msg: see bench_msg.h. */
#include "bench_msg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_hash.h"

#define LINE_MAX_CHARS 78
#define POOL_MARGIN    (256u << 10)
#define POOL_MIN       (1u << 20)

uint64_t bench_mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* ---- sizes ---------------------------------------------------------------- */

int size_dist_parse(const char *text, struct size_dist *d, char *err, size_t errlen)
{
	char buf[160], *save = NULL, *tok;

	memset(d, 0, sizeof(*d));
	if (strlen(text) >= sizeof(buf))
		goto bad;
	snprintf(d->text, sizeof(d->text), "%s", text);
	if (strncmp(text, "mix:", 4) != 0) {
		if (bench_parse_bytes(text, &d->size[0]) < 0)
			goto bad;
		d->n = 1;
		d->weight[0] = d->total = 1;
		d->max = d->size[0];
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", text + 4);
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		uint64_t w;

		if (eq == NULL || d->n == SIZE_DIST_MAX)
			goto bad;
		*eq = '\0';
		if (bench_parse_bytes(tok, &d->size[d->n]) < 0 ||
		    bench_parse_count(eq + 1, 1000000, &w) < 0 || w == 0)
			goto bad;
		d->weight[d->n] = (unsigned)w;
		d->total += (unsigned)w;
		if (d->size[d->n] > d->max)
			d->max = d->size[d->n];
		d->n++;
	}
	if (d->n == 0)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen,
	         "bad size \"%s\": use bytes (4096), KiB or MiB (4k, 1m; at most 1024m), or "
	         "weighted sizes (mix:4k=70,100k=25,1m=5)",
	         text);
	return -1;
}

uint64_t size_dist_pick(const struct size_dist *d, uint64_t seq)
{
	unsigned r;

	if (d->n == 1)
		return d->size[0];
	r = (unsigned)(bench_mix64(seq ^ 0x5157A11E5EEDull) % d->total);
	for (unsigned i = 0; i < d->n; i++) {
		if (r < d->weight[i])
			return d->size[i];
		r -= d->weight[i];
	}
	return d->size[d->n - 1];
}

/* ---- the pool of body lines ------------------------------------------------ */

static const char *const words[] = {
    "relay",     "queue",    "message", "kernel",     "ring",    "socket",   "cipher",
    "record",    "splice",   "buffer",  "header",     "body",    "sender",   "mail",
    "host",      "route",    "a",       "the",        "of",      "to",       "and",
    "in",        "is",       "with",    "throughput", "latency", "checksum", "envelope",
    "transport", "delivery", "bench",   "0123456789",
};

/* One line of text (no CRLF) into out; returns its length (<= 78). */
static size_t make_line(uint64_t *state, char *out)
{
	uint64_t r = bench_mix64((*state)++);
	unsigned kind = (unsigned)(r % 64),
	         target = 8 + (unsigned)((r >> 8) % (LINE_MAX_CHARS - 7));
	size_t n = 0;

	if (kind == 0) {
		out[0] = '.'; /* a line holding only "." : stuffed to ".." on the wire */
		return 1;
	}
	if (kind == 1) {
		memcpy(out, "..", 2);
		return 2;
	}
	if (kind < 4)
		return 0; /* empty line */
	if (kind < 8)
		out[n++] = '.';
	for (unsigned i = 0;; i++) {
		const char *w = words[bench_mix64(r + i) % (sizeof(words) / sizeof(words[0]))];
		size_t wl = strlen(w);

		if (n + wl + (n > 0) > target)
			break;
		if (n > 0 && out[n - 1] != '.')
			out[n++] = ' ';
		memcpy(out + n, w, wl);
		n += wl;
	}
	return n;
}

int body_pool_init(struct body_pool *p, uint64_t max_body)
{
	size_t want = max_body + POOL_MARGIN < POOL_MIN ? POOL_MIN : (size_t)max_body + POOL_MARGIN;
	size_t cap_lines = want / 2 + 2, so = 0;
	uint64_t state = 0x6B72656C6179ull; /* the same pool on every run */
	char line[LINE_MAX_CHARS + 1];

	memset(p, 0, sizeof(*p));
	p->text = malloc(want + LINE_MAX_CHARS + 2);
	p->stuffed = malloc(want + want / 2 + LINE_MAX_CHARS + 3);
	p->line_off = malloc(cap_lines * sizeof(*p->line_off));
	p->dots_before = malloc(cap_lines * sizeof(*p->dots_before));
	if (p->text == NULL || p->stuffed == NULL || p->line_off == NULL ||
	    p->dots_before == NULL) {
		body_pool_free(p);
		return -ENOMEM;
	}
	p->dots_before[0] = 0;
	while (p->len < want) {
		size_t n = make_line(&state, line);
		bool dot = n > 0 && line[0] == '.';

		p->line_off[p->nlines] = (uint32_t)p->len;
		p->dots_before[p->nlines + 1] = p->dots_before[p->nlines] + dot;
		p->nlines++;
		memcpy(p->text + p->len, line, n);
		memcpy(p->text + p->len + n, "\r\n", 2);
		p->len += n + 2;
		if (dot)
			p->stuffed[so++] = '.';
		memcpy(p->stuffed + so, line, n);
		memcpy(p->stuffed + so + n, "\r\n", 2);
		so += n + 2;
	}
	p->line_off[p->nlines] = (uint32_t)p->len;
	return 0;
}

void body_pool_free(struct body_pool *p)
{
	free(p->text);
	free(p->stuffed);
	free(p->line_off);
	free(p->dots_before);
	memset(p, 0, sizeof(*p));
}

/* ---- one message ----------------------------------------------------------- */

void bench_rcpt(char *buf, size_t len, const struct msg_params *mp, unsigned j)
{
	snprintf(buf, len, "rcpt%u@%s", j + 1, mp->rcpt_domain);
}

static size_t format_hdr(struct bench_msg *m, const struct msg_params *mp, uint64_t body_len)
{
	char rcpt[300];
	int n;

	bench_rcpt(rcpt, sizeof(rcpt), mp, 0);
	n = snprintf(m->hdr, sizeof(m->hdr),
	             "From: <%s>\r\nTo: <%s>\r\nSubject: krelay-bench message %" PRIu64
	             "\r\nMessage-ID: <%" PRIu64 ".%s@krelay-bench>\r\nX-Bench: %" PRIu64
	             " %" PRIu64 " %016" PRIx64 "\r\n\r\n",
	             mp->from, rcpt, m->seq, m->seq, mp->run_id, m->seq, body_len, m->sum);
	m->hdr_len = n < 0 ? 0 : (size_t)n < sizeof(m->hdr) ? (size_t)n : sizeof(m->hdr) - 1;
	return m->hdr_len;
}

/* Largest line index i in [lo, hi] with key(i) <= limit (key ascending). */
static size_t last_le(const uint32_t *off, size_t lo, size_t hi, uint64_t base, uint64_t limit)
{
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2;
		if (off[mid] - base <= limit)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* Fill of exactly r >= 2 bytes: one or two lines of 'f', CRLF each. */
static size_t make_fill(char *out, size_t r)
{
	size_t first = r > LINE_MAX_CHARS + 2 ? 42 : r, n = 0;

	memset(out, 'f', first - 2);
	memcpy(out + first - 2, "\r\n", 2);
	n = first;
	if (r > first) {
		memset(out + n, 'f', r - first - 2);
		memcpy(out + r - 2, "\r\n", 2);
		n = r;
	}
	return n;
}

void bench_msg_make(struct bench_msg *m, const struct body_pool *p, const struct msg_params *mp,
                    uint64_t seq, uint64_t size)
{
	uint64_t target, r;
	size_t a, b, starts;
	struct bench_hash h;

	m->seq = seq;
	m->sum = 0;
	/* The header's length depends on the digits of the body's: settle it. */
	target = size;
	for (int i = 0; i < 3; i++) {
		size_t hl = format_hdr(m, mp, target);
		target = size > hl ? size - hl : 0;
	}
	/* Cut whole lines from a start that depends on seq, then fill the rest. */
	starts = last_le(p->line_off, 0, p->nlines, 0, p->len - target) + 1;
	a = (size_t)(bench_mix64(seq) % starts);
	b = last_le(p->line_off, a, p->nlines, p->line_off[a], target);
	r = target - (p->line_off[b] - p->line_off[a]);
	if (r == 1 && b > a) {
		b--;
		r = target - (p->line_off[b] - p->line_off[a]);
	}
	m->body = p->text + p->line_off[a];
	m->body_len = p->line_off[b] - p->line_off[a];
	m->sbody = p->stuffed + p->line_off[a] + p->dots_before[a];
	m->sbody_len = (p->line_off[b] + p->dots_before[b]) - (p->line_off[a] + p->dots_before[a]);
	m->fill_len = r >= 2 ? make_fill(m->fill, (size_t)r) : 0;
	bench_hash_init(&h);
	bench_hash_update(&h, m->body, m->body_len);
	bench_hash_update(&h, m->fill, m->fill_len);
	m->sum = bench_hash_final(&h);
	format_hdr(m, mp, m->body_len + m->fill_len);
}
