/* fuzz_tls_policy: a whole TLSPolicyTable.  Oracle: every level looked up
 * is one of the four. */
#include "config.h"
#include "fuzz.h"
#include "tls_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct tls_policy_table *t = tls_policy_load(fuzz_file(data, size), err, sizeof(err));

	if (t != NULL) {
		static const char *const names[] = {"example.com", "mx.example.com", ".", "a"};
		for (size_t i = 0; i < 4; i++) {
			int lv = tls_policy_lookup(t, names[i], TLS_POLICY_MAY);
			FUZZ_CHECK(lv >= TLS_POLICY_NONE && lv <= TLS_POLICY_VERIFY);
		}
		tls_policy_free(t);
	}
	return 0;
}
