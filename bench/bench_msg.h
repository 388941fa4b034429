/* bench_msg: the messages krelay-bench's source sends.  Each is headers
 * (From, To, Subject, Message-ID, X-Bench: <seq> <bodylen> <hex checksum>),
 * a blank line and a body of text lines (at most 78 characters, CRLF; some
 * start with "." so dot-stuffing is exercised), about SIZE bytes in all.
 * Bodies are slices of one pool of lines made at start, held twice: as the
 * message says (for BDAT and the checksum) and dot-stuffed (for DATA), so
 * sending never transforms a body. */
#ifndef KRELAY_BENCH_MSG_H
#define KRELAY_BENCH_MSG_H

#include <stddef.h>
#include <stdint.h>

#define SIZE_DIST_MAX 16

/* A fixed size ("4k") or weighted sizes ("mix:4k=70,100k=25,1m=5"). */
struct size_dist {
	unsigned n;
	uint64_t size[SIZE_DIST_MAX];
	unsigned weight[SIZE_DIST_MAX];
	unsigned total; /* sum of weights */
	uint64_t max;
	char text[160]; /* as given */
};

int size_dist_parse(const char *text, struct size_dist *d, char *err, size_t errlen);
/* The size of message seq: the same for the same seq on every run. */
uint64_t size_dist_pick(const struct size_dist *d, uint64_t seq);

struct body_pool {
	char *text;            /* lines as the message holds them */
	char *stuffed;         /* the same lines, dot-stuffed */
	size_t len;            /* bytes of text */
	uint32_t *line_off;    /* nlines + 1: offset of line i in text */
	uint32_t *dots_before; /* nlines + 1: lines starting with "." before line i */
	size_t nlines;
};

/* Makes a pool from which any body up to max_body bytes can be cut. */
int body_pool_init(struct body_pool *p, uint64_t max_body);
void body_pool_free(struct body_pool *p);

struct msg_params {
	const char *from;
	const char *rcpt_domain;
	const char *run_id; /* makes Message-IDs unique across runs */
};

struct bench_msg {
	uint64_t seq;
	char hdr[1024];
	size_t hdr_len;
	const char *body; /* pool lines, as in the message */
	size_t body_len;
	const char *sbody; /* the same lines dot-stuffed */
	size_t sbody_len;
	char fill[96]; /* last line(s) that bring the message to its size; never start with "." */
	size_t fill_len;
	uint64_t sum; /* bench_hash of body + fill */
};

/* Makes message seq of about size bytes. */
void bench_msg_make(struct bench_msg *m, const struct body_pool *p, const struct msg_params *mp,
                    uint64_t seq, uint64_t size);
/* Bytes of the message (headers, blank line, body), not stuffed. */
static inline uint64_t bench_msg_len(const struct bench_msg *m)
{
	return m->hdr_len + m->body_len + m->fill_len;
}
/* Recipient j (0-based) of every message: "rcptJ@domain". */
void bench_rcpt(char *buf, size_t len, const struct msg_params *mp, unsigned j);

/* A deterministic 64-bit mix of x (splitmix64's finalizer). */
uint64_t bench_mix64(uint64_t x);

#endif
