/* bench_scan: see bench_scan.h. */
#include "bench_scan.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void dscan_reset(struct dscan *s)
{
	s->bol = true;
	s->bytes = 0;
}

static void emit(struct dscan *s, const char *p, size_t n, scan_piece_fn piece, void *arg)
{
	if (n == 0)
		return;
	s->bytes += n;
	if (piece != NULL)
		piece(arg, p, n);
}

size_t dscan_feed(struct dscan *s, const char *p, size_t n, bool *done, scan_piece_fn piece,
                  void *arg)
{
	size_t i = 0, start = 0;

	/* Only a "." can start the terminator or need un-stuffing, and dots are
	 * rarer than line ends: look for dots, then ask whether each one starts
	 * a line. */
	*done = false;
	while (i < n) {
		const char *dot = memchr(p + i, '.', n - i);
		size_t j;

		if (dot == NULL)
			break;
		j = (size_t)(dot - p);
		i = j + 1;
		if (!(j == 0 ? s->bol : p[j - 1] == '\n'))
			continue;
		if (n - j < 3 && (n - j < 2 || p[j + 1] == '\r')) {
			/* ".", ".\r": the next bytes decide; keep them for later */
			emit(s, p + start, j - start, piece, arg);
			s->bol = true;
			return j;
		}
		emit(s, p + start, j - start, piece, arg);
		if (p[j + 1] == '\r' && p[j + 2] == '\n') {
			*done = true;
			return j + 3;
		}
		start = j + 1; /* a stuffed dot: the content is what follows it */
	}
	emit(s, p + start, n - start, piece, arg);
	if (n > 0)
		s->bol = p[n - 1] == '\n';
	return n;
}

void vmsg_reset(struct vmsg *v)
{
	v->in_body = false;
	v->hdr_overflow = false;
	memcpy(v->hdr, "\r\n", 2); /* so an empty header section is found the same way */
	v->hdr_len = 2;
	bench_hash_init(&v->hash);
	v->body_len = 0;
	v->have_xbench = false;
	v->seq = v->want_len = v->want_sum = 0;
}

static void parse_xbench(struct vmsg *v)
{
	const char *p = v->hdr, *end = v->hdr + v->hdr_len;

	/* Every header line starts after a CRLF (the buffer starts with one). */
	while ((p = memmem(p, (size_t)(end - p), "\r\n", 2)) != NULL) {
		unsigned long long seq, len, sum;
		char tail;

		p += 2;
		if (end - p > 8 && strncasecmp(p, "X-Bench:", 8) == 0 &&
		    sscanf(p + 8, " %llu %llu %16llx%c", &seq, &len, &sum, &tail) == 4 &&
		    tail == '\r') {
			v->have_xbench = true;
			v->seq = seq;
			v->want_len = len;
			v->want_sum = sum;
			return;
		}
	}
}

void vmsg_feed(void *arg, const char *p, size_t n)
{
	struct vmsg *v = arg;

	if (!v->in_body && !v->hdr_overflow) {
		size_t old = v->hdr_len, room = sizeof(v->hdr) - old, take = n < room ? n : room;
		size_t from = old >= 3 ? old - 3 : 0;
		const char *end;

		memcpy(v->hdr + old, p, take);
		v->hdr_len += take;
		end = memmem(v->hdr + from, v->hdr_len - from, "\r\n\r\n", 4);
		if (end == NULL) {
			if (take < n)
				v->hdr_overflow = true;
			return;
		}
		/* The body starts right after the blank line, in this piece. */
		size_t used = (size_t)(end + 4 - v->hdr) - old;
		v->hdr_len = (size_t)(end + 2 - v->hdr);
		v->in_body = true;
		parse_xbench(v);
		p += used;
		n -= used;
	}
	if (v->in_body) {
		bench_hash_update(&v->hash, p, n);
		v->body_len += n;
	}
}

int vmsg_check(struct vmsg *v, char *why, size_t len)
{
	uint64_t sum;

	if (!v->in_body) {
		snprintf(why, len, "%s", v->hdr_overflow ? "header section over 8 KiB" : "no body");
		return -1;
	}
	if (!v->have_xbench) {
		snprintf(why, len, "no X-Bench header");
		return -1;
	}
	if (v->body_len != v->want_len) {
		snprintf(why, len,
		         "seq %" PRIu64 ": body is %" PRIu64 " bytes, X-Bench says %" PRIu64,
		         v->seq, v->body_len, v->want_len);
		return -1;
	}
	sum = bench_hash_final(&v->hash);
	if (sum != v->want_sum) {
		snprintf(why, len,
		         "seq %" PRIu64 ": body checksum %016" PRIx64 ", X-Bench says %016" PRIx64,
		         v->seq, sum, v->want_sum);
		return -1;
	}
	return 0;
}
