/* test_seg_format: spool segment records (relay/seg_format.c): CRC-32C,
 * the header, records, and what a reader does with a segment cut short,
 * torn or overwritten. */
#include "seg_format.h"
#include "unit.h"

#define ID1 "0D061A2B00B28432"
#define ID2 "0D061A2B00B28433"

struct seen {
	int n;
	enum seg_rec_type type[16];
	char id[16][SPOOL_ID_LEN + 1];
	size_t off[16];
	uint32_t len[16];
};

static void seen_cb(void *arg, enum seg_rec_type type, const char *id, size_t off, uint32_t len)
{
	struct seen *s = arg;

	if (s->n == 16)
		return;
	s->type[s->n] = type;
	memcpy(s->id[s->n], id, SPOOL_ID_LEN + 1);
	s->off[s->n] = off;
	s->len[s->n] = len;
	s->n++;
}

static char seg[4096];
static size_t seg_len;

static size_t add(enum seg_rec_type type, const char *id, const char *payload)
{
	size_t at = seg_len, n = payload ? strlen(payload) : 0;

	memcpy(seg + at + SEG_REC_HDR_LEN, payload ? payload : "", n);
	seg_rec_format(seg + at, type, id, seg + at + SEG_REC_HDR_LEN, (uint32_t)n);
	seg_len += SEG_REC_HDR_LEN + n;
	return at;
}

static void fresh(void)
{
	memset(seg, 0, sizeof(seg)); /* a preallocated file reads as zeros */
	seg_header_format(seg, 3, 1796000000);
	seg_len = SEG_HEADER_LEN;
}

TEST(crc32c_known_values)
{
	/* RFC 3720 B.4 and the usual check value */
	static const unsigned char zeros[32] = {0};
	unsigned char ones[32];
	memset(ones, 0xff, sizeof(ones));
	CHECK(crc32c(0, "123456789", 9) == 0xE3069283u);
	CHECK(crc32c(0, zeros, sizeof(zeros)) == 0x8A9136AAu);
	CHECK(crc32c(0, ones, sizeof(ones)) == 0x62A8AB43u);
	/* in pieces as at once */
	CHECK(crc32c(crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
	/* the instruction and the table agree, at every length and alignment */
	CHECK(crc32c_portable(0, "123456789", 9) == 0xE3069283u);
	{
		unsigned char buf[300];
		int same = 1;
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (unsigned char)(i * 131 + 7);
		for (size_t off = 0; off < 9; off++)
			for (size_t n = 0; off + n <= sizeof(buf); n += 13)
				same &= crc32c(5, buf + off, n) == crc32c_portable(5, buf + off, n);
		CHECK(same);
	}
}

TEST(header_round_trip)
{
	unsigned w;
	uint64_t t;
	fresh();
	CHECK(seg_header_parse(seg, SEG_HEADER_LEN, &w, &t) == 0);
	CHECK(w == 3 && t == 1796000000);
	CHECK(seg_header_parse(seg, SEG_HEADER_LEN - 1, &w, &t) < 0);
	seg[20] ^= 1; /* a bit flipped: the CRC says so */
	CHECK(seg_header_parse(seg, SEG_HEADER_LEN, &w, &t) < 0);
	memset(seg, 0, SEG_HEADER_LEN);
	CHECK(seg_header_parse(seg, SEG_HEADER_LEN, &w, &t) < 0);
}

TEST(records_in_order_then_zeros)
{
	struct seen s = {0};
	size_t a, b;
	fresh();
	a = add(SEG_MSG, ID1, "body one");
	b = add(SEG_MSG, ID2, "second body");
	add(SEG_DONE, ID1, NULL);
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)seg_len);
	CHECK(s.n == 3);
	CHECK(s.type[0] == SEG_MSG && strcmp(s.id[0], ID1) == 0);
	CHECK(s.off[0] == a + SEG_REC_HDR_LEN && s.len[0] == 8);
	CHECK(memcmp(seg + s.off[0], "body one", 8) == 0);
	CHECK(s.type[1] == SEG_MSG && strcmp(s.id[1], ID2) == 0 && s.off[1] == b + SEG_REC_HDR_LEN);
	CHECK(s.type[2] == SEG_DONE && strcmp(s.id[2], ID1) == 0 && s.len[2] == 0);
}

TEST(a_torn_record_ends_the_segment)
{
	struct seen s = {0};
	size_t b;
	fresh();
	add(SEG_MSG, ID1, "body one");
	b = add(SEG_MSG, ID2, "second body");
	add(SEG_DONE, ID1, NULL);
	seg[b + SEG_REC_HDR_LEN + 3] ^= 0x20; /* a payload byte never written */
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b);
	CHECK(s.n == 1 && strcmp(s.id[0], ID1) == 0);
}

TEST(a_record_cut_short_by_the_end_of_the_file)
{
	struct seen s = {0};
	size_t b;
	fresh();
	add(SEG_MSG, ID1, "body one");
	b = add(SEG_MSG, ID2, "second body");
	CHECK(seg_scan(seg, seg_len - 1, seen_cb, &s) == (long)b);
	CHECK(s.n == 1);
	s.n = 0;
	CHECK(seg_scan(seg, b + 5, seen_cb, &s) == (long)b);
	CHECK(s.n == 1);
}

TEST(refused_headers)
{
	struct seen s = {0};
	size_t b;
	fresh();
	b = add(SEG_MSG, ID1, "x");
	seg[b + 5] = 1; /* reserved bytes must be 0 */
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b && s.n == 0);
	fresh();
	b = add(SEG_DONE, ID1, "not empty"); /* a SEG_DONE carries nothing */
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b && s.n == 0);
	fresh();
	b = add(SEG_MSG, "0D061A2B00B2843/", "x"); /* not a queue ID */
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b && s.n == 0);
	fresh();
	b = add(SEG_MSG, ID1, "x");
	seg[b + 4] = 7; /* no such type */
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b && s.n == 0);
	fresh();
	b = add(SEG_MSG, ID1, "x");
	seg[b + 8] = (char)0xff; /* a length past the end */
	seg[b + 11] = 0x7f;
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == (long)b && s.n == 0);
	memset(seg, 0, SEG_HEADER_LEN);
	CHECK(seg_scan(seg, sizeof(seg), seen_cb, &s) == -1);
}

int main(void)
{
	RUN(crc32c_known_values);
	RUN(header_round_trip);
	RUN(records_in_order_then_zeros);
	RUN(a_torn_record_ends_the_segment);
	RUN(a_record_cut_short_by_the_end_of_the_file);
	RUN(refused_headers);
	UNIT_END("test_seg_format");
}
