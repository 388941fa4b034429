/* fuzz_seg_format: a spool segment read back at start-up.  Oracle: every
 * record seg_scan reports lies inside the valid prefix it returns, in
 * order, and that prefix scanned alone reports the same records. */
#include "fuzz.h"
#include "seg_format.h"

struct seen {
	size_t n, last_end;
	int bad;
};

static void cb(void *arg, enum seg_rec_type type, const char *id, size_t off, uint32_t len)
{
	struct seen *s = arg;

	if (off < s->last_end + SEG_REC_HDR_LEN || !spool_id_valid(id) ||
	    (type != SEG_MSG && type != SEG_DONE))
		s->bad = 1;
	s->last_end = off + len;
	s->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seen a = {0, SEG_HEADER_LEN - SEG_REC_HDR_LEN, 0}, b = a;
	char *copy = malloc(size + SEG_HEADER_LEN);
	long n;

	/* half the inputs get a valid header, so the records are reached */
	if (size > 0 && data[0] & 1) {
		seg_header_format(copy, 0, 0);
		memcpy(copy + SEG_HEADER_LEN, data, size);
		size += SEG_HEADER_LEN;
	} else {
		memcpy(copy, data, size);
	}
	n = seg_scan(copy, size, cb, &a);
	FUZZ_CHECK(!a.bad);
	if (n >= 0) {
		FUZZ_CHECK((size_t)n <= size && a.last_end <= (size_t)n);
		FUZZ_CHECK(seg_scan(copy, (size_t)n, cb, &b) == n && b.n == a.n);
	}
	free(copy);
	return 0;
}
