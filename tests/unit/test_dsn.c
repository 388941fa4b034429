/* Unit tests: dsn (RFC 3464 bounce format). */
#include <stdlib.h>

#include "dsn.h"
#include "unit.h"

static const char headers[] = "Received: from a\r\nFrom: s@example.org\r\nSubject: hi\r\n\r\n";

static size_t make(char *buf, size_t cap, size_t nrcpt)
{
	static const struct dsn_rcpt r[] = {
	    {"x@example.com", "5.7.1", "550 5.7.1 relay access denied", "mx.example.com"},
	    {"y@example.net", "4.4.7", "expired: 451 4.4.0 try later", NULL},
	};
	struct dsn_info in = {
	    .reporting_mta = "relay.test",
	    .queue_id = "0CFF5CE500C82F31",
	    .sender = "s@example.org",
	    .arrival = 1795898853,
	    .now = 1795898900,
	    .rcpts = r,
	    .nrcpt = nrcpt,
	    .headers = headers,
	    .headers_len = dsn_header_len(headers, sizeof(headers) - 1),
	    .boundary = "0CFF5CE500C82F31/relay.test",
	};
	return dsn_format(&in, buf, cap);
}

TEST(report_structure)
{
	char buf[8192];
	size_t n = make(buf, sizeof(buf), 2);

	CHECK(n < sizeof(buf));
	CHECK(unit_prefix(buf, "From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\n"));
	CHECK(strstr(buf, "To: <s@example.org>\r\n") != NULL);
	CHECK(strstr(buf, "Content-Type: multipart/report; report-type=delivery-status;") != NULL);
	CHECK(strstr(buf, "Auto-Submitted: auto-replied\r\n") != NULL);
	CHECK(strstr(buf, "Content-Type: message/delivery-status\r\n") != NULL);
	CHECK(strstr(buf, "Reporting-MTA: dns; relay.test\r\n") != NULL);
	CHECK(strstr(buf,
	             "Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.7.1\r\n"
	             "Remote-MTA: dns; mx.example.com\r\n"
	             "Diagnostic-Code: smtp; 550 5.7.1 relay access denied\r\n") != NULL);
	CHECK(strstr(buf,
	             "Final-Recipient: rfc822; y@example.net\r\nAction: failed\r\nStatus: 4.4.7\r\n"
	             "Diagnostic-Code:") != NULL);
	CHECK(strstr(buf, "Content-Type: text/rfc822-headers\r\n\r\nReceived: from a\r\n") != NULL);
	CHECK(strstr(buf, "\r\n--0CFF5CE500C82F31/relay.test--\r\n") != NULL);
}

TEST(crlf_only)
{
	char buf[8192];
	size_t n = make(buf, sizeof(buf), 2);

	for (size_t i = 0; i < n; i++)
		if (buf[i] == '\n')
			CHECK(i > 0 && buf[i - 1] == '\r');
}

TEST(needed_length)
{
	char small[32], big[8192];

	CHECK(make(small, sizeof(small), 1) == make(big, sizeof(big), 1));
}

TEST(header_len)
{
	CHECK(dsn_header_len(headers, sizeof(headers) - 1) == sizeof(headers) - 1);
	CHECK(dsn_header_len("a: b\r\n\r\nbody", 12) == 8);
	CHECK(dsn_header_len("no end", 6) == 6);
}

int main(void)
{
	RUN(report_structure);
	RUN(crlf_only);
	RUN(needed_length);
	RUN(header_len);
	UNIT_END("test_dsn");
}
