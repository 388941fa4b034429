/* test_bench: krelay-bench's pure parts: the body checksum, sizes, the
 * generated messages, and the sink's DATA scanner and X-Bench check, fed in
 * every possible split. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_hash.h"
#include "bench_msg.h"
#include "bench_scan.h"
#include "unit.h"

static char *msg_bytes(const struct bench_msg *m, size_t *len)
{
	char *p = malloc(bench_msg_len(m) + 1);

	memcpy(p, m->hdr, m->hdr_len);
	memcpy(p + m->hdr_len, m->body, m->body_len);
	memcpy(p + m->hdr_len + m->body_len, m->fill, m->fill_len);
	*len = bench_msg_len(m);
	return p;
}

/* RFC 5321 4.5.2 by the book: a "." at the start of a line is doubled. */
static char *stuff(const char *p, size_t n, size_t *out_len)
{
	char *o = malloc(2 * n + 8);
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '.' && (i == 0 || p[i - 1] == '\n'))
			o[k++] = '.';
		o[k++] = p[i];
	}
	memcpy(o + k, ".\r\n", 3);
	*out_len = k + 3;
	return o;
}

TEST(hash_streaming_equals_one_shot)
{
	char buf[300];
	uint64_t whole;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 3);
	whole = bench_hash(buf, sizeof(buf));
	for (size_t a = 0; a < sizeof(buf); a += 7) {
		for (size_t b = a; b < sizeof(buf); b += 13) {
			struct bench_hash h;
			bench_hash_init(&h);
			bench_hash_update(&h, buf, a);
			bench_hash_update(&h, buf + a, b - a);
			bench_hash_update(&h, buf + b, sizeof(buf) - b);
			CHECK(bench_hash_final(&h) == whole);
		}
	}
	CHECK(bench_hash("", 0) != bench_hash("a", 1));
	buf[100] ^= 1;
	CHECK(bench_hash(buf, sizeof(buf)) != whole);
}

TEST(sizes_parse)
{
	struct size_dist d;
	char err[300];
	uint64_t v;

	CHECK(bench_parse_bytes("4096", &v) == 0 && v == 4096);
	CHECK(bench_parse_bytes("4k", &v) == 0 && v == 4096);
	CHECK(bench_parse_bytes("10m", &v) == 0 && v == 10u << 20);
	CHECK(bench_parse_bytes("0", &v) == 0 && v == 0);
	CHECK(bench_parse_bytes("4q", &v) < 0);
	CHECK(bench_parse_bytes("", &v) < 0);
	CHECK(bench_parse_bytes("-1", &v) < 0);
	CHECK(bench_parse_bytes("2048m", &v) < 0);
	CHECK(size_dist_parse("mix:4k=70,100k=25,1m=5", &d, err, sizeof(err)) == 0);
	CHECK(d.n == 3 && d.total == 100 && d.max == 1u << 20);
	CHECK(size_dist_parse("mix:4k", &d, err, sizeof(err)) < 0);
	CHECK(size_dist_parse("mix:", &d, err, sizeof(err)) < 0);
	CHECK(size_dist_parse("mix:4k=0", &d, err, sizeof(err)) < 0);
	CHECK(strstr(err, "mix:4k=70") != NULL);
	/* Picks follow the weights. */
	size_dist_parse("mix:1k=3,2k=1", &d, err, sizeof(err));
	unsigned small = 0;
	for (uint64_t seq = 0; seq < 4000; seq++)
		small += size_dist_pick(&d, seq) == 1024;
	CHECK(small > 2800 && small < 3200);
}

TEST(addresses_parse)
{
	struct bench_addr a;
	char err[300];

	CHECK(bench_parse_addr("127.0.0.1:2525", &a, err, sizeof(err)) == 0);
	CHECK(a.ss.ss_family == AF_INET);
	CHECK(bench_parse_addr("[::1]:25", &a, err, sizeof(err)) == 0);
	CHECK(a.ss.ss_family == AF_INET6);
	CHECK(bench_parse_addr("127.0.0.1", &a, err, sizeof(err)) < 0);
	CHECK(strstr(err, "not HOST:PORT") != NULL);
	CHECK(bench_parse_addr("127.0.0.1:99999", &a, err, sizeof(err)) < 0);
	CHECK(bench_parse_addr("::1:25", &a, err, sizeof(err)) < 0);
}

TEST(messages_have_their_size_lines_and_checksum)
{
	static const uint64_t sizes[] = {0, 1, 100, 300, 301, 302, 4096, 100000, 1u << 20};
	struct msg_params mp = {"a@b.example", "example.com", "t"};
	struct body_pool pool;
	static struct bench_msg m;
	unsigned dot_lines = 0;

	CHECK(body_pool_init(&pool, 1u << 20) == 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (uint64_t seq = 1; seq < 40; seq += 3) {
			size_t len, slen, line = 0;
			char *p, *s, *body;
			unsigned long long bseq, blen, sum;

			bench_msg_make(&m, &pool, &mp, seq, sizes[i]);
			p = msg_bytes(&m, &len);
			if (sizes[i] >= 400)
				CHECK(len == sizes[i]);
			body = strstr(p, "\r\n\r\n") + 4;
			CHECK(sscanf(strstr(p, "X-Bench: "), "X-Bench: %llu %llu %llx", &bseq,
			             &blen, &sum) == 3);
			CHECK(bseq == seq && blen == len - (size_t)(body - p));
			CHECK(sum == bench_hash(body, blen));
			for (size_t k = 0; k < len; k++) {
				if (p[k] == '\n') {
					CHECK(k > 0 && p[k - 1] == '\r');
					CHECK(line <= 78 + 1);
					line = 0;
					dot_lines += k + 1 < len && p[k + 1] == '.';
				} else {
					line++;
				}
			}
			CHECK(len == 0 || p[len - 1] == '\n');
			/* The stuffed copy is what stuffing the body gives. */
			s = stuff(m.body, m.body_len, &slen);
			CHECK(slen - 3 == m.sbody_len && memcmp(s, m.sbody, m.sbody_len) == 0);
			free(s);
			free(p);
		}
	}
	CHECK(dot_lines > 100);
	body_pool_free(&pool);
}

/* Feeds wire bytes to dscan + vmsg split at cut (and once more at cut2);
 * returns the content it handed out. */
static int scan_split(const char *wire, size_t n, size_t cut, size_t cut2, struct vmsg *v,
                      uint64_t *bytes, size_t *used_total)
{
	struct dscan s;
	char buf[1 << 17];
	size_t have = 0, off = 0, stops[3] = {cut, cut2, n};
	bool done = false;

	dscan_reset(&s);
	vmsg_reset(v);
	for (int k = 0; k < 3 && !done; k++) {
		size_t upto = stops[k] < off ? off : stops[k];
		memcpy(buf + have, wire + off, upto - off);
		have += upto - off;
		off = upto;
		size_t used = dscan_feed(&s, buf, have, &done, vmsg_feed, v);
		CHECK(used <= have);
		CHECK(done || have - used <= 2);
		memmove(buf, buf + used, have - used);
		have -= used;
		*used_total = off - have;
	}
	*bytes = s.bytes;
	return done ? 0 : -1;
}

TEST(dscan_finds_the_end_and_unstuffs_in_any_split)
{
	struct msg_params mp = {"a@b.example", "example.com", "t"};
	struct body_pool pool;
	static struct bench_msg m;
	static struct vmsg v;
	char why[200];

	CHECK(body_pool_init(&pool, 8192) == 0);
	bench_msg_make(&m, &pool, &mp, 5, 3000);
	size_t len, wlen;
	char *p = msg_bytes(&m, &len), *w = stuff(p, len, &wlen);
	char *wt = malloc(wlen + 10);
	memcpy(wt, w, wlen);
	memcpy(wt + wlen, "QUIT\r\n", 6); /* what follows is left alone */
	for (size_t cut = 0; cut <= wlen; cut++) {
		uint64_t bytes;
		size_t used;
		size_t cut2 = cut + (cut * 7) % (wlen - cut + 1);

		CHECK(scan_split(wt, wlen + 6, cut, cut2, &v, &bytes, &used) == 0);
		CHECK(bytes == len);
		CHECK(used == wlen);
		CHECK(vmsg_check(&v, why, sizeof(why)) == 0);
	}
	/* One changed body byte is found. */
	w[wlen - 20] ^= 0x20;
	{
		uint64_t bytes;
		size_t used;
		CHECK(scan_split(w, wlen, wlen / 2, wlen / 2, &v, &bytes, &used) == 0);
		CHECK(vmsg_check(&v, why, sizeof(why)) < 0 && strstr(why, "checksum") != NULL);
	}
	free(wt);
	free(w);
	free(p);
	body_pool_free(&pool);
}

TEST(dscan_edge_cases)
{
	static struct vmsg v;
	struct {
		const char *wire;
		uint64_t bytes;
	} cases[] = {
	    {".\r\n", 0},                 /* empty content */
	    {"..\r\n.\r\n", 3},           /* a line holding one dot */
	    {"a\r\n...\r\n.\r\n", 3 + 4}, /* ".." */
	    {"a\r\n.b\r\n.\r\n", 3 + 3},  /* a lenient unstuffed dot */
	    {"a.\r\n.\r\n", 4},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i].wire);
		for (size_t cut = 0; cut <= n; cut++) {
			uint64_t bytes;
			size_t used;
			CHECK(scan_split(cases[i].wire, n, cut, cut, &v, &bytes, &used) == 0);
			CHECK(bytes == cases[i].bytes);
			CHECK(used == n);
		}
	}
}

TEST(vmsg_needs_an_x_bench_header)
{
	static struct vmsg v;
	char why[200];
	const char *m1 = "Subject: x\r\n\r\nbody\r\n";
	char m2[200];

	vmsg_reset(&v);
	vmsg_feed(&v, m1, strlen(m1));
	CHECK(vmsg_check(&v, why, sizeof(why)) < 0 && strstr(why, "X-Bench") != NULL);
	snprintf(m2, sizeof(m2), "x-bench: 9 6 %016llx\r\n\r\nbody\r\n",
	         (unsigned long long)bench_hash("body\r\n", 6));
	vmsg_reset(&v);
	for (size_t i = 0; m2[i]; i++)
		vmsg_feed(&v, m2 + i, 1);
	CHECK(vmsg_check(&v, why, sizeof(why)) == 0);
	CHECK(v.seq == 9);
}

int main(void)
{
	RUN(hash_streaming_equals_one_shot);
	RUN(sizes_parse);
	RUN(addresses_parse);
	RUN(messages_have_their_size_lines_and_checksum);
	RUN(dscan_finds_the_end_and_unstuffs_in_any_split);
	RUN(dscan_edge_cases);
	RUN(vmsg_needs_an_x_bench_header);
	UNIT_END("test_bench");
}
