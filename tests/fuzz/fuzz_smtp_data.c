/* fuzz_smtp_data: the content scanner, with a differential oracle.  The
 * input is scanned whole and in chunks (cut where its first bytes say), by
 * the scalar, SSE2 and (where the CPU has it) AVX2 paths, in DATA and BDAT
 * mode: every way must give the same output, the same bytes consumed and
 * the same flags. */
#include <stdbool.h>

#include "fuzz.h"
#include "smtp_data.h"

struct result {
	char *out;
	size_t out_len, used;
	struct smtp_data d;
};

static void scan(const uint8_t *in, size_t n, bool dot, const uint8_t *cuts, size_t ncuts,
                 struct result *r)
{
	size_t off = 0, k = 0;

	smtp_data_init(&r->d, dot);
	r->out = malloc(n + 1);
	r->out_len = 0;
	while (off < n && !r->d.done) {
		size_t chunk = n - off, w = 0, used;
		if (k < ncuts) {
			size_t c = 1 + cuts[k++] * 4u;
			chunk = c < chunk ? c : chunk;
		}
		used =
		    smtp_data_scan(&r->d, (const char *)in + off, chunk, r->out + r->out_len, &w);
		FUZZ_CHECK(used <= chunk);
		FUZZ_CHECK(w <= used || r->out_len + w <= off + used);
		r->out_len += w;
		off += used;
		if (used < chunk)
			FUZZ_CHECK(r->d.done);
	}
	r->used = off;
}

/* The end of data, and whether the content is refused (a bare CR or LF),
 * must agree always; content that is refused is never stored, so its bytes
 * and other flags need agree only when it is not. */
static void same(const struct result *a, const struct result *b)
{
	FUZZ_CHECK(a->used == b->used);
	FUZZ_CHECK(a->d.done == b->d.done && a->d.bare_cr == b->d.bare_cr);
	FUZZ_CHECK(a->d.bare_lf == b->d.bare_lf);
	if (a->d.bare_cr || a->d.bare_lf)
		return;
	FUZZ_CHECK(a->out_len == b->out_len);
	FUZZ_CHECK(memcmp(a->out, b->out, a->out_len) == 0);
	FUZZ_CHECK(a->d.long_line == b->d.long_line);
	FUZZ_CHECK(a->d.dot_lines == b->d.dot_lines && a->d.eight_bit == b->d.eight_bit);
	FUZZ_CHECK(a->d.line_len == b->d.line_len && a->d.size == b->d.size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum smtp_data_path paths[] = {SMTP_DATA_SCALAR, SMTP_DATA_SSE2,
	                                            SMTP_DATA_AVX2};
	size_t ncuts = size > 0 ? data[0] % 16 : 0;
	const uint8_t *cuts = data + (size > 0 ? 1 : 0);
	const uint8_t *in = data + (size > 0 ? 1 : 0);
	size_t n = size > 0 ? size - 1 : 0;

	ncuts = ncuts < n ? ncuts : n;
	for (int dot = 0; dot <= 1; dot++) {
		struct result ref, r;
		smtp_data_use(SMTP_DATA_SCALAR);
		scan(in, n, dot, NULL, 0, &ref);
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
			if (!smtp_data_use(paths[p]))
				continue;
			scan(in, n, dot, NULL, 0, &r);
			same(&ref, &r);
			free(r.out);
			scan(in, n, dot, cuts, ncuts, &r);
			same(&ref, &r);
			free(r.out);
		}
		free(ref.out);
	}
	smtp_data_use(SMTP_DATA_AUTO);
	return 0;
}
