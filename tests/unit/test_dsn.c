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

TEST(bare_cr_and_lines_from_the_peer_are_escaped)
{
	static const struct dsn_rcpt r[] = {
	    {"x@example.com", "5.7.1", "550 5.7.1 no\rSubject: forged\r\n.\r\nmore",
	     "mx\r.example"},
	};
	struct dsn_info in = {.reporting_mta = "relay.test",
	                      .queue_id = "0CFF5CE500C82F31",
	                      .sender = "s@example.org",
	                      .rcpts = r,
	                      .nrcpt = 1,
	                      .headers = headers,
	                      .headers_len = sizeof(headers) - 1,
	                      .boundary = "b/relay.test"};
	char buf[8192];
	size_t n = dsn_format(&in, buf, sizeof(buf));

	CHECK(n < sizeof(buf));
	/* every CR is part of a CRLF, and the reply stays on its line */
	for (size_t i = 0; i < n; i++)
		CHECK(buf[i] != '\r' || buf[i + 1] == '\n');
	CHECK(strstr(buf, "550 5.7.1 no\\x0DSubject: forged\\x0D\\x0A.\\x0D\\x0Amore") != NULL);
	CHECK(strstr(buf, "\r\nSubject: forged") == NULL);
	CHECK(strstr(buf, "Remote-MTA: dns; mx\\x0D.example") != NULL);
}

TEST(boundary_never_in_what_is_quoted)
{
	/* the original headers hold the boundary krelay would use: it takes
	 * another one, which occurs nowhere in the bounce's parts */
	static const char h[] = "Subject: x\r\nX-Trick: --0CFF5CE500C82F31/relay.test--\r\n\r\n";
	static const struct dsn_rcpt r[] = {{"x@example.com", "5.0.0", "550 no", NULL}};
	struct dsn_info in = {.reporting_mta = "relay.test",
	                      .queue_id = "0CFF5CE500C82F31",
	                      .sender = "s@example.org",
	                      .rcpts = r,
	                      .nrcpt = 1,
	                      .headers = h,
	                      .headers_len = sizeof(h) - 1,
	                      .boundary = "0CFF5CE500C82F31/relay.test"};
	char buf[8192], b[128];
	size_t n = dsn_format(&in, buf, sizeof(buf));
	const char *p = strstr(buf, "boundary=\"");

	CHECK(n < sizeof(buf) && p != NULL);
	if (p == NULL)
		return;
	p += strlen("boundary=\"");
	snprintf(b, sizeof(b), "%.*s", (int)(strchr(p, '"') - p), p);
	CHECK(strcmp(b, "0CFF5CE500C82F31/relay.test") != 0);
	CHECK(strstr(h, b) == NULL);
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
	RUN(bare_cr_and_lines_from_the_peer_are_escaped);
	RUN(boundary_never_in_what_is_quoted);
	RUN(crlf_only);
	RUN(needed_length);
	RUN(header_len);
	UNIT_END("test_dsn");
}
