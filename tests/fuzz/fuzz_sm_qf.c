/* fuzz_sm_qf: a hostile Sendmail queue control file (qf).  Oracles: a file
 * that is read yields headers made of CRLF-ended lines only (no bare CR or
 * LF: no header can be added or cut by what the file holds), ending with
 * the empty line; a sender and recipients without spaces, controls or
 * angle brackets, every recipient with a domain; the length reported is
 * the length written. */
#include "fuzz.h"
#include "sm_qf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smqf q;
	char err[512];

	if (smqf_parse((const char *)data, size, "relay.test", &q, err, sizeof(err)) < 0) {
		FUZZ_CHECK(err[0] != '\0');
		return 0;
	}
	FUZZ_CHECK(q.headers != NULL && q.headers_len == strlen(q.headers));
	FUZZ_CHECK(q.headers_len >= 2 && memcmp(q.headers + q.headers_len - 2, "\r\n", 2) == 0);
	FUZZ_CHECK(q.headers_len == 2 || memcmp(q.headers + q.headers_len - 4, "\r\n\r\n", 4) == 0);
	for (size_t i = 0; i < q.headers_len; i++) {
		if (q.headers[i] == '\r')
			FUZZ_CHECK(i + 1 < q.headers_len && q.headers[i + 1] == '\n');
		if (q.headers[i] == '\n')
			FUZZ_CHECK(i > 0 && q.headers[i - 1] == '\r');
	}
	/* only the last line is empty */
	FUZZ_CHECK(strstr(q.headers, "\r\n\r\n") == NULL ||
	           strstr(q.headers, "\r\n\r\n") == q.headers + q.headers_len - 4);
	FUZZ_CHECK(q.sender != NULL && q.rcpt_count > 0);
	for (const char *s = q.sender; *s; s++)
		FUZZ_CHECK((unsigned char)*s > ' ' && *s != '<' && *s != '>' && *s != 0x7f);
	for (size_t i = 0; i < q.rcpt_count; i++) {
		const char *a = q.rcpts[i].addr, *at = strchr(a, '@');
		FUZZ_CHECK(at != NULL && at[1] != '\0');
		for (; *a; a++)
			FUZZ_CHECK((unsigned char)*a > ' ' && *a != '<' && *a != '>' && *a != 0x7f);
	}
	smqf_free(&q);
	return 0;
}
