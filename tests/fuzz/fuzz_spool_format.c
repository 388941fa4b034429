/* fuzz_spool_format: envelopes and trailers read from disk.  Oracle: an
 * envelope that parses formats and parses back to the same text; a
 * trailer that parses formats back to the same 38 bytes. */
#include "fuzz.h"
#include "spool_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_env e, back;
	char err[256];

	if (size >= SPOOL_TRAILER_LEN) {
		uint64_t off;
		uint32_t len;
		char t[SPOOL_TRAILER_LEN];
		if (spool_trailer_parse((const char *)data, &off, &len) == 0) {
			spool_trailer_format(t, off, len);
			FUZZ_CHECK(spool_trailer_parse(t, &off, &len) == 0);
		}
	}
	if (spool_env_parse((const char *)data, size, &e, err, sizeof(err)) == 0) {
		size_t n = spool_env_format(&e, NULL, 0);
		char *a = malloc(n + 1), *b;
		FUZZ_CHECK(spool_env_format(&e, a, n + 1) == n);
		FUZZ_CHECK(spool_env_parse(a, n, &back, err, sizeof(err)) == 0);
		b = malloc(n + 1);
		FUZZ_CHECK(spool_env_format(&back, b, n + 1) == n);
		FUZZ_CHECK(memcmp(a, b, n) == 0);
		spool_env_free(&back);
		spool_env_free(&e);
		free(a);
		free(b);
	}
	return 0;
}
