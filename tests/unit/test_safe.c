/* test_safe: the one place that makes outside values safe for logs,
 * headers and bounces. */
#include "safe.h"
#include "unit.h"

TEST(log_value_cannot_close_its_delimiter)
{
	char b[SAFE_LEN(128)];

	/* the forged key=value fields of a quoted local part */
	CHECK(strcmp(safe_log(b, sizeof(b), "\"x> status=sent to=<ceo@bank.example>\"@c.test"),
	             "\\x22x\\x3E\\x20status=sent\\x20to=\\x3Cceo@bank.example\\x3E\\x22@c.test") ==
	      0);
	CHECK(strcmp(safe_log(b, sizeof(b), "SRS0=ab=cd@x.example"), "SRS0=ab=cd@x.example") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "a\\b"), "a\\x5Cb") == 0);
}

TEST(log_keeps_utf8_text_not_tricks)
{
	char b[SAFE_LEN(128)];

	/* an SMTPUTF8 address reads as itself */
	CHECK(strcmp(safe_log(b, sizeof(b),
	                      "m\xc3\xbc"
	                      "ller@\xce\xb4.example"),
	             "m\xc3\xbc"
	             "ller@\xce\xb4.example") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xf0\x9f\x93\xa7@x"), "\xf0\x9f\x93\xa7@x") == 0);
	/* not: stray, overlong, surrogate, truncated, C1, separators, bidi */
	CHECK(strcmp(safe_log(b, sizeof(b),
	                      "a\xe9"
	                      "b"),
	             "a\\xE9b") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xc0\xbc"), "\\xC0\\xBC") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xe0\x80\xbc"), "\\xE0\\x80\\xBC") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xed\xa0\x80"), "\\xED\\xA0\\x80") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xce"), "\\xCE") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xc2\x85"), "\\xC2\\x85") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xe2\x80\xa8"), "\\xE2\\x80\\xA8") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b),
	                      "x\xe2\x80\xae"
	                      "gnp.exe"),
	             "x\\xE2\\x80\\xAEgnp.exe") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "\xf4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80") == 0);
	/* a sequence is never cut in two */
	char small[4];
	CHECK(strcmp(safe_log(small, sizeof(small), "ab\xc3\xbc"), "ab") == 0);
	/* a header comment keeps UTF-8 only in an SMTPUTF8 message */
	CHECK(strcmp(safe_comment(b, sizeof(b), "\xc3\xa5sa\r", true), "\xc3\xa5sa\\x0D") == 0);
	CHECK(strcmp(safe_comment(b, sizeof(b), "\xc3\xbc", false), "\\xC3\\xBC") == 0);
}

TEST(log_text_keeps_spaces_not_quotes_or_lines)
{
	char b[SAFE_LEN(128)];

	CHECK(strcmp(safe_log_text(b, sizeof(b), "550 5.1.1 no \"such\" user\r\nx"),
	             "550 5.1.1 no \\x22such\\x22 user\\x0D\\x0Ax") == 0);
	CHECK(strcmp(safe_log_text(b, sizeof(b), "\x1b[31m"), "\\x1B[31m") == 0);
}

TEST(comment_cannot_add_header_lines)
{
	char b[SAFE_LEN(128)];

	CHECK(strcmp(safe_comment(b, sizeof(b), "evil\r\n.\r\nMAIL FROM:<a@b>", false),
	             "evil\\x0D\\x0A.\\x0D\\x0AMAIL FROM:<a@b>") == 0);
	CHECK(strcmp(safe_comment(b, sizeof(b), "a) by x (b\"c\\", false),
	             "a\\x29 by x \\x28b\\x22c\\x5C") == 0);
	CHECK(strchr(safe_comment(b, sizeof(b), "\r\n\t\x7f\x80", false), '\r') == NULL);
}

TEST(body_text_keeps_tab_escapes_cr)
{
	char b[SAFE_LEN(64)];

	CHECK(strcmp(safe_body_text(b, sizeof(b), "450 a\tb\rc"), "450 a\tb\\x0Dc") == 0);
}

TEST(cut_short_never_overflows_or_splits_an_escape)
{
	char b[8];

	memset(b, 'Z', sizeof(b));
	CHECK(strcmp(safe_log(b, sizeof(b), "abcdefghij"), "abcdefg") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), "abcd\r"), "abcd") == 0); /* no half "\x0" */
	CHECK(strcmp(safe_log(b, 1, "abc"), "") == 0);
	CHECK(strcmp(safe_log(b, sizeof(b), ""), "") == 0);
}

TEST(helo_syntax)
{
	CHECK(safe_helo_valid("mail.example.org"));
	CHECK(safe_helo_valid("localhost"));
	CHECK(safe_helo_valid("a-b.c1"));
	CHECK(safe_helo_valid("[192.0.2.1]"));
	CHECK(safe_helo_valid("[IPv6:2001:db8::1]"));
	CHECK(!safe_helo_valid(""));
	CHECK(!safe_helo_valid("x (fake) by mx.google.com"));
	CHECK(!safe_helo_valid("-a.example"));
	CHECK(!safe_helo_valid("a-.example"));
	CHECK(!safe_helo_valid("a..example"));
	CHECK(!safe_helo_valid("a.example."));
	CHECK(!safe_helo_valid("under_score.example"));
	CHECK(!safe_helo_valid("h\xc3\xa9.example"));
	CHECK(!safe_helo_valid("[192.0.2.256]"));
	CHECK(!safe_helo_valid("[IPv6:192.0.2.1]"));
	CHECK(!safe_helo_valid("[2001:db8::1]"));
	CHECK(!safe_helo_valid("192.0.2.1]"));
	char long_label[80];
	memset(long_label, 'a', 64);
	long_label[64] = '\0';
	CHECK(!safe_helo_valid(long_label));
	long_label[63] = '\0';
	CHECK(safe_helo_valid(long_label));
}

int main(void)
{
	RUN(log_value_cannot_close_its_delimiter);
	RUN(log_keeps_utf8_text_not_tricks);
	RUN(log_text_keeps_spaces_not_quotes_or_lines);
	RUN(comment_cannot_add_header_lines);
	RUN(body_text_keeps_tab_escapes_cr);
	RUN(cut_short_never_overflows_or_splits_an_escape);
	RUN(helo_syntax);
	UNIT_END("test_safe");
}
