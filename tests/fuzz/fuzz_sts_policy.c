/* fuzz_sts_policy: MTA-STS text from a hostile domain: its policy file and
 * its _mta-sts TXT record (the input split at its first NUL: policy, then
 * TXT).  Oracles: a parsed policy holds only what a policy may (a mode,
 * max_age at most a year, at most STS_MX_MAX patterns, each lower case,
 * NUL-terminated, without a trailing dot, matching themselves unless a
 * wildcard); a TXT id is 1 to 32 letters and digits. */
#include "fuzz.h"
#include "sts_policy.h"

#include <ctype.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data, *nul = memchr(data, '\0', size);
	size_t plen = nul ? (size_t)(nul - text) : size;
	struct sts_policy p;
	char err[200], id[STS_ID_MAX + 1];

	if (sts_policy_parse(text, plen, &p, err, sizeof(err)) == 0) {
		FUZZ_CHECK(p.mode == STS_MODE_NONE || p.mode == STS_MODE_TESTING ||
		           p.mode == STS_MODE_ENFORCE);
		FUZZ_CHECK(p.max_age <= STS_MAX_AGE);
		FUZZ_CHECK(p.nmx <= STS_MX_MAX);
		FUZZ_CHECK(p.mode == STS_MODE_NONE || p.nmx > 0);
		for (size_t i = 0; i < p.nmx; i++) {
			size_t n = strnlen(p.mx[i], sizeof(p.mx[i]));
			FUZZ_CHECK(n > 0 && n < sizeof(p.mx[i]));
			FUZZ_CHECK(p.mx[i][n - 1] != '.');
			for (size_t k = 0; k < n; k++)
				FUZZ_CHECK(!isupper((unsigned char)p.mx[i][k]));
			if (p.mx[i][0] != '*')
				FUZZ_CHECK(sts_mx_match(&p, p.mx[i]));
		}
	}
	if (nul != NULL) {
		int k = sts_txt_parse(nul + 1, size - plen - 1, id);
		FUZZ_CHECK(k >= -1 && k <= 1);
		if (k == 1) {
			size_t n = strlen(id);
			FUZZ_CHECK(n >= 1 && n <= STS_ID_MAX);
			for (size_t i = 0; i < n; i++)
				FUZZ_CHECK(isalnum((unsigned char)id[i]));
		}
	}
	return 0;
}
