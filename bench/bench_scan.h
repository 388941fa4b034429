/* bench_scan: the sink's view of message content, without copying it.
 *
 * dscan finds the end of DATA (<CRLF>.<CRLF>) and removes stuffed dots by
 * handing out the pieces between them: one memchr per dot, the body never
 * moves.  vmsg checks a message against its X-Bench header: it keeps the
 * header section (up to 8 KiB) and hashes the body as pieces arrive. */
#ifndef KRELAY_BENCH_SCAN_H
#define KRELAY_BENCH_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_hash.h"

typedef void (*scan_piece_fn)(void *arg, const char *p, size_t n);

struct dscan {
	bool bol;       /* the next byte starts a line */
	uint64_t bytes; /* content bytes handed out so far (un-stuffed) */
};

void dscan_reset(struct dscan *s);
/* Scans p[0..n).  Returns how many bytes were used; the rest (at most 2
 * bytes that may begin the terminator) must be offered again with more.
 * *done becomes true when the terminator was used.  Each piece of content
 * goes to piece (may be NULL). */
size_t dscan_feed(struct dscan *s, const char *p, size_t n, bool *done, scan_piece_fn piece,
                  void *arg);

#define VMSG_HDR_MAX 8192

struct vmsg {
	bool in_body;
	bool hdr_overflow;
	size_t hdr_len;
	char hdr[VMSG_HDR_MAX + 2]; /* "\r\n" + header section */
	struct bench_hash hash;
	uint64_t body_len;
	/* From the X-Bench header, once the header section is complete. */
	bool have_xbench;
	uint64_t seq, want_len, want_sum;
};

void vmsg_reset(struct vmsg *v);
/* Feeds content (un-stuffed) in any pieces; a scan_piece_fn. */
void vmsg_feed(void *v, const char *p, size_t n);
/* 0 when the body matches its X-Bench header, else -1 and why. */
int vmsg_check(struct vmsg *v, char *why, size_t len);

#endif
