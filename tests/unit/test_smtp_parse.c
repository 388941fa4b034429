/* Unit tests for relay/smtp_parse.c: command parsing and line splitting. */
#include "smtp_parse.h"
#include "unit.h"

#include <stdint.h>

/* Parses a NUL-terminated command line. */
static const char *parse(const char *line, struct smtp_cmd *cmd)
{
	return smtp_parse_command(line, strlen(line), cmd);
}

/* Parses and expects success. */
static int ok(const char *line, struct smtp_cmd *cmd)
{
	const char *err = parse(line, cmd);

	if (err != NULL)
		printf("  unexpected error for \"%s\": %s\n", line, err);
	return err == NULL;
}

/* Parses and expects an error starting with prefix. */
static int fails(const char *line, const char *prefix)
{
	struct smtp_cmd cmd;
	const char *err = parse(line, &cmd);

	if (!unit_prefix(err, prefix)) {
		printf("  \"%s\": got \"%s\", want \"%s...\"\n", line, err ? err : "(null)",
		       prefix);
		return 0;
	}
	return 1;
}

static int contains(const char *s, const char *needle)
{
	return s != NULL && strstr(s, needle) != NULL;
}

#define MAIL_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define RCPT_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define BAD_SENDER  "501 5.1.7 Bad sender address syntax"
#define BAD_RCPT    "501 5.1.3 Bad recipient address syntax"
#define NON_ASCII   "553 5.6.7 "

/* ---- verbs ---- */

TEST(verb_names)
{
	CHECK_STR(smtp_verb_name(SMTP_UNKNOWN), "UNKNOWN");
	CHECK_STR(smtp_verb_name(SMTP_HELO), "HELO");
	CHECK_STR(smtp_verb_name(SMTP_STARTTLS), "STARTTLS");
	CHECK_STR(smtp_verb_name(SMTP_AUTH), "AUTH");
	CHECK_STR(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN");
	for (int v = SMTP_HELO; v < SMTP_VERB_COUNT; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		struct smtp_cmd cmd;

		/* every name parses back to its verb, whatever the reply */
		parse(name, &cmd);
		CHECK(cmd.verb == (enum smtp_verb)v);
	}
}

TEST(verbs_case_insensitive)
{
	struct smtp_cmd cmd;

	CHECK(ok("noop", &cmd) && cmd.verb == SMTP_NOOP);
	CHECK(ok("NoOp", &cmd) && cmd.verb == SMTP_NOOP);
	CHECK(ok("data", &cmd) && cmd.verb == SMTP_DATA);
	CHECK(ok("StartTLS", &cmd) && cmd.verb == SMTP_STARTTLS);
	CHECK(ok("quit", &cmd) && cmd.verb == SMTP_QUIT);
	CHECK(ok("rset", &cmd) && cmd.verb == SMTP_RSET);
	CHECK(ok("ehlo client.example", &cmd) && cmd.verb == SMTP_EHLO);
	CHECK(ok("auth PLAIN AGZvbwBiYXI=", &cmd) && cmd.verb == SMTP_AUTH);
}

TEST(unknown_verb)
{
	struct smtp_cmd cmd;

	CHECK_STR(parse("FOO bar", &cmd), "500 5.5.2 Error: command not recognized");
	CHECK(cmd.verb == SMTP_UNKNOWN);
	CHECK(fails("", "500 5.5.2 Error: command not recognized"));
	CHECK(fails(" NOOP", "500 5.5.2 Error: command not recognized"));
	CHECK(fails("NOOPX", "500 5.5.2 Error: command not recognized"));
	CHECK(fails("MAILFROM:<a@b>", "500 5.5.2 Error: command not recognized"));
	CHECK(fails("HEL", "500 5.5.2 Error: command not recognized"));
	CHECK(fails("GET / HTTP/1.1", "500 5.5.2 Error: command not recognized"));
	/* the unknown reply leaves arg empty */
	parse("XYZZY plugh", &cmd);
	CHECK(cmd.arg != NULL && cmd.arg_len == 0 && cmd.arg[0] == '\0');
}

TEST(control_characters)
{
	struct smtp_cmd cmd;
	static const char nul_line[] = "NOOP a\0b";

	CHECK_STR(parse("NOOP \x01", &cmd), "500 5.5.2 Error: bad character in command");
	CHECK(cmd.verb == SMTP_NOOP);
	CHECK(fails("MAIL FROM:<a@b>\t", "500 5.5.2 Error: bad character"));
	CHECK(fails("MAIL\tFROM:<a@b>", "500 5.5.2 Error: bad character"));
	CHECK(fails("HELO x\x7f", "500 5.5.2 Error: bad character"));
	CHECK(fails("HELO x\r", "500 5.5.2 Error: bad character"));
	CHECK(fails("HELO x\ny", "500 5.5.2 Error: bad character"));
	CHECK_STR(smtp_parse_command(nul_line, sizeof(nul_line) - 1, &cmd),
	          "500 5.5.2 Error: bad character in command");
	CHECK(cmd.verb == SMTP_NOOP);
	CHECK(parse("MAIL FROM:<a\x1b@b>", &cmd) != NULL && cmd.verb == SMTP_MAIL);
	CHECK_STR(parse("FOO\x01", &cmd), "500 5.5.2 Error: bad character in command");
	CHECK(cmd.verb == SMTP_UNKNOWN);
	/* 8-bit bytes are not control characters */
	CHECK(ok("NOOP \xc3\xa9", &cmd));
}

TEST(argument_bounds)
{
	struct smtp_cmd cmd;
	const char *line = "HELP    some topic   ";

	CHECK(ok(line, &cmd));
	CHECK(cmd.arg == line + 8);
	CHECK(cmd.arg_len == 10);
	CHECK(strncmp(cmd.arg, "some topic", cmd.arg_len) == 0);
	CHECK(ok("HELP", &cmd));
	CHECK(cmd.arg != NULL && cmd.arg_len == 0 && cmd.arg[0] == '\0');
	CHECK(ok("HELP    ", &cmd));
	CHECK(cmd.arg_len == 0 && cmd.arg[0] == '\0');
	/* the line need not be NUL-terminated */
	CHECK(smtp_parse_command("NOOP xyz", 6, &cmd) == NULL);
	CHECK(cmd.arg_len == 1 && cmd.arg[0] == 'x');
}

TEST(parse_zeroes_previous_state)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@b.example> SIZE=5 BODY=8BITMIME SMTPUTF8", &cmd));
	CHECK(cmd.has_size && cmd.smtputf8);
	CHECK(ok("BDAT 7 LAST", &cmd));
	CHECK(!cmd.has_size && cmd.size == 0 && cmd.body == SMTP_BODY_NONE && !cmd.smtputf8);
	CHECK(cmd.addr[0] == '\0' && cmd.domain == NULL);
	CHECK(ok("NOOP", &cmd));
	CHECK(cmd.chunk_size == 0 && !cmd.last);
}

TEST(helo_ehlo)
{
	struct smtp_cmd cmd;

	CHECK(ok("EHLO mail.example.com", &cmd) && cmd.verb == SMTP_EHLO);
	CHECK(cmd.arg_len == 16 && strncmp(cmd.arg, "mail.example.com", 16) == 0);
	CHECK(ok("HELO [192.0.2.1]", &cmd) && cmd.verb == SMTP_HELO);
	CHECK(ok("ehlo   x   ", &cmd) && cmd.arg_len == 1 && cmd.arg[0] == 'x');
	CHECK(ok("EHLO [IPv6:2001:db8::1]", &cmd));
	CHECK_STR(parse("EHLO", &cmd), "501 5.5.4 Syntax: EHLO hostname");
	CHECK(cmd.verb == SMTP_EHLO);
	CHECK_STR(parse("EHLO    ", &cmd), "501 5.5.4 Syntax: EHLO hostname");
	CHECK_STR(parse("HELO", &cmd), "501 5.5.4 Syntax: HELO hostname");
	CHECK(cmd.verb == SMTP_HELO);
}

TEST(verbs_without_argument)
{
	struct smtp_cmd cmd;

	CHECK(ok("DATA", &cmd) && cmd.verb == SMTP_DATA);
	CHECK(ok("DATA   ", &cmd));
	CHECK(ok("RSET", &cmd) && cmd.verb == SMTP_RSET);
	CHECK(ok("QUIT", &cmd) && cmd.verb == SMTP_QUIT);
	CHECK(ok("STARTTLS", &cmd) && cmd.verb == SMTP_STARTTLS);
	CHECK_STR(parse("DATA x", &cmd), "501 5.5.4 Syntax: DATA");
	CHECK(cmd.verb == SMTP_DATA);
	CHECK_STR(parse("RSET now", &cmd), "501 5.5.4 Syntax: RSET");
	CHECK_STR(parse("QUIT please", &cmd), "501 5.5.4 Syntax: QUIT");
	CHECK_STR(parse("STARTTLS x", &cmd), "501 5.5.4 Syntax: STARTTLS");
}

TEST(verbs_with_any_argument)
{
	struct smtp_cmd cmd;

	CHECK(ok("NOOP", &cmd) && cmd.verb == SMTP_NOOP);
	CHECK(ok("NOOP anything at all", &cmd));
	CHECK(ok("HELP", &cmd) && cmd.verb == SMTP_HELP);
	CHECK(ok("HELP MAIL", &cmd));
	CHECK(ok("AUTH", &cmd) && cmd.verb == SMTP_AUTH);
	CHECK(ok("AUTH LOGIN", &cmd));
}

TEST(vrfy_expn)
{
	struct smtp_cmd cmd;

	CHECK(ok("VRFY postmaster", &cmd) && cmd.verb == SMTP_VRFY);
	CHECK(ok("EXPN staff", &cmd) && cmd.verb == SMTP_EXPN);
	CHECK_STR(parse("VRFY", &cmd), "501 5.5.4 Syntax: VRFY address");
	CHECK(cmd.verb == SMTP_VRFY);
	CHECK_STR(parse("EXPN  ", &cmd), "501 5.5.4 Syntax: EXPN address");
}

/* ---- MAIL ---- */

TEST(mail_basic)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<user@example.com>", &cmd));
	CHECK(cmd.verb == SMTP_MAIL);
	CHECK_STR(cmd.addr, "user@example.com");
	CHECK_STR(cmd.domain, "example.com");
	CHECK(cmd.domain == cmd.addr + 5);
	CHECK(!cmd.has_size && cmd.body == SMTP_BODY_NONE && !cmd.smtputf8);
	CHECK(ok("MAIL FROM:<first.last+tag@sub.example.co.uk>", &cmd));
	CHECK_STR(cmd.addr, "first.last+tag@sub.example.co.uk");
	CHECK_STR(cmd.domain, "sub.example.co.uk");
	CHECK(ok("MAIL FROM:<!#$%&'*+-/=?^_`{|}~@x-1.example>", &cmd));
	CHECK_STR(cmd.domain, "x-1.example");
	CHECK(ok("MAIL FROM:<root@localhost>", &cmd));
	CHECK_STR(cmd.domain, "localhost");
	CHECK(ok("MAIL FROM:<a@123.example>", &cmd));
}

TEST(mail_case_and_spaces)
{
	struct smtp_cmd cmd;

	CHECK(ok("mail from:<a@b.example>", &cmd));
	CHECK_STR(cmd.addr, "a@b.example");
	CHECK(ok("MaIl FrOm:<a@b.example>", &cmd));
	CHECK(ok("MAIL FROM: <a@b.example>", &cmd));
	CHECK_STR(cmd.addr, "a@b.example");
	CHECK(ok("MAIL FROM:    <a@b.example>   ", &cmd));
	CHECK(ok("MAIL   FROM:<a@b.example>", &cmd));
	/* the address keeps its case */
	CHECK(ok("MAIL FROM:<John.Smith@Example.COM>", &cmd));
	CHECK_STR(cmd.addr, "John.Smith@Example.COM");
	CHECK_STR(cmd.domain, "Example.COM");
}

TEST(mail_syntax_errors)
{
	CHECK(fails("MAIL", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:a@b.example", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM :<a@b.example>", MAIL_SYNTAX));
	CHECK(fails("MAIL TO:<a@b.example>", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM<a@b.example>", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example>SIZE=10", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example>>", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:x<a@b.example>", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<\"unterminated@b.example>", MAIL_SYNTAX));
}

TEST(mail_null_sender)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<>", &cmd));
	CHECK_STR(cmd.addr, "");
	CHECK(cmd.domain == NULL);
	CHECK(ok("MAIL FROM:<> SIZE=1000 BODY=7BIT", &cmd));
	CHECK_STR(cmd.addr, "");
	CHECK(cmd.has_size && cmd.size == 1000 && cmd.body == SMTP_BODY_7BIT);
	CHECK(ok("mail from: <>", &cmd));
}

TEST(mail_bad_address)
{
	static const char *const bad[] = {
	    "MAIL FROM:<a>",
	    "MAIL FROM:<postmaster>",
	    "MAIL FROM:<@>",
	    "MAIL FROM:<a@>",
	    "MAIL FROM:<@b.example>",
	    "MAIL FROM:<a..b@c.example>",
	    "MAIL FROM:<.a@c.example>",
	    "MAIL FROM:<a.@c.example>",
	    "MAIL FROM:<a@b.example.>",
	    "MAIL FROM:<a@.b.example>",
	    "MAIL FROM:<a@b..example>",
	    "MAIL FROM:<a@-b.example>",
	    "MAIL FROM:<a@b-.example>",
	    "MAIL FROM:<a@b_c.example>",
	    "MAIL FROM:<a@@b.example>",
	    "MAIL FROM:<a b@c.example>",
	    "MAIL FROM:<a(b)@c.example>",
	    "MAIL FROM:<a@b.example@c.example>",
	    "MAIL FROM:<a,b@c.example>",
	    "MAIL FROM:<a@[1.2.3.4>",
	};
	struct smtp_cmd cmd;
	char label[80];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(fails(bad[i], BAD_SENDER));
	/* a 64-octet label is one too many */
	memset(label, 'x', 64);
	memcpy(label + 64, ".example", 9);
	char line[128];
	snprintf(line, sizeof(line), "MAIL FROM:<a@%s>", label);
	CHECK(fails(line, BAD_SENDER));
	snprintf(line, sizeof(line), "MAIL FROM:<a@%s>", label + 1);
	CHECK(ok(line, &cmd));
}

TEST(mail_quoted_local_part)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<\"john doe\"@example.com>", &cmd));
	CHECK_STR(cmd.addr, "\"john doe\"@example.com");
	CHECK_STR(cmd.domain, "example.com");
	CHECK(ok("MAIL FROM:<\"a>b@c\"@example.com>", &cmd));
	CHECK_STR(cmd.addr, "\"a>b@c\"@example.com");
	CHECK_STR(cmd.domain, "example.com");
	CHECK(ok("MAIL FROM:<\"a\\\"b\\\\c\"@example.com>", &cmd));
	CHECK_STR(cmd.addr, "\"a\\\"b\\\\c\"@example.com");
	CHECK(ok("MAIL FROM:<\"\"@example.com>", &cmd));
	CHECK(ok("MAIL FROM:<\"a..b.\"@example.com> SIZE=3", &cmd));
	CHECK(cmd.has_size && cmd.size == 3);
	CHECK(fails("MAIL FROM:<\"a\"b@example.com>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a\"b\"@example.com>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<\"a\".b@example.com>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<\"ab\">", BAD_SENDER));
}

TEST(mail_address_literal)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@[192.0.2.1]>", &cmd));
	CHECK_STR(cmd.domain, "[192.0.2.1]");
	CHECK(ok("MAIL FROM:<a@[0.0.0.0]>", &cmd));
	CHECK(ok("MAIL FROM:<a@[255.255.255.255]>", &cmd));
	CHECK(ok("MAIL FROM:<a@[IPv6:2001:db8::1]>", &cmd));
	CHECK_STR(cmd.domain, "[IPv6:2001:db8::1]");
	CHECK(ok("MAIL FROM:<a@[ipv6:::1]>", &cmd));
	CHECK(ok("MAIL FROM:<a@[IPv6:::ffff:192.0.2.1]>", &cmd));
	CHECK(ok("MAIL FROM:<a@[IPv6:2001:db8:0:0:0:0:0:1]>", &cmd));
	CHECK(fails("MAIL FROM:<a@[1.2.3]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[1.2.3.4.5]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[256.1.1.1]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[1.2.3.1000]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[1..3.4]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[IPv6:]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[IPv6:zz::1]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[IPv6:1::2::3]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[IPv6:fe80::1%eth0]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[IPv6:192.0.2.1]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[x-tag:foo]>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a@[1.2.3.4]x>", BAD_SENDER));
}

TEST(mail_source_route)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<@a.example,@b.example:user@d.example>", &cmd));
	CHECK_STR(cmd.addr, "user@d.example");
	CHECK_STR(cmd.domain, "d.example");
	CHECK(ok("MAIL FROM:<@relay.example:\"x y\"@d.example>", &cmd));
	CHECK_STR(cmd.addr, "\"x y\"@d.example");
	CHECK(fails("MAIL FROM:<@a.example>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<@a.example:>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<@:user@d.example>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<@a.example,user@d.example>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<@a.example,:user@d.example>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<@a..example:user@d.example>", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a.example:user@d.example>", BAD_SENDER));
}

TEST(mail_size)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@b.example> SIZE=0", &cmd));
	CHECK(cmd.has_size && cmd.size == 0);
	CHECK(ok("MAIL FROM:<a@b.example> size=12345", &cmd));
	CHECK(cmd.has_size && cmd.size == 12345);
	CHECK(ok("MAIL FROM:<a@b.example> SIZE=18446744073709551615", &cmd));
	CHECK(cmd.size == UINT64_MAX);
	CHECK(ok("MAIL FROM:<a@b.example> SIZE=00000000000000000001", &cmd)); /* 20 digits */
	CHECK(cmd.size == 1);
	/* valid 20-digit syntax past 2^64-1 saturates (the session says 552) */
	CHECK(ok("MAIL FROM:<a@b.example> SIZE=18446744073709551616", &cmd));
	CHECK(cmd.size == UINT64_MAX);
	CHECK(ok("MAIL FROM:<a@b.example> SIZE=99999999999999999999", &cmd));
	CHECK(cmd.size == UINT64_MAX);
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=000000000000000000001",
	            "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=", "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE", "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=-1", "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=+1", "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=10k", "501 5.5.4 Syntax: SIZE=<bytes>"));
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=1=2", "501 5.5.4 Syntax: SIZE=<bytes>"));
}

TEST(mail_body)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@b.example> BODY=7BIT", &cmd));
	CHECK(cmd.body == SMTP_BODY_7BIT);
	CHECK(ok("MAIL FROM:<a@b.example> body=8bitmime", &cmd));
	CHECK(cmd.body == SMTP_BODY_8BITMIME);
	CHECK(ok("MAIL FROM:<a@b.example> Body=8BitMime", &cmd));
	CHECK(cmd.body == SMTP_BODY_8BITMIME);
	CHECK(fails("MAIL FROM:<a@b.example> BODY=BINARYMIME",
	            "501 5.5.4 Error: BODY=7BIT or BODY=8BITMIME"));
	CHECK(fails("MAIL FROM:<a@b.example> BODY=", "501 5.5.4 Error: BODY=7BIT"));
	CHECK(fails("MAIL FROM:<a@b.example> BODY", "501 5.5.4 Error: BODY=7BIT"));
	CHECK(fails("MAIL FROM:<a@b.example> BODY=8BIT", "501 5.5.4 Error: BODY=7BIT"));
}

TEST(mail_smtputf8)
{
	struct smtp_cmd cmd;
	/* 用户@例子.广告 */
	const char *u = "MAIL FROM:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90."
	                "\xe5\xb9\xbf\xe5\x91\x8a> SMTPUTF8";

	CHECK(ok(u, &cmd));
	CHECK(cmd.smtputf8);
	CHECK_STR(cmd.domain, "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a");
	CHECK(ok("MAIL FROM:<j\xc3\xb6rg@example.com> smtputf8 BODY=8BITMIME", &cmd));
	CHECK_STR(cmd.addr, "j\xc3\xb6rg@example.com");
	CHECK(ok("MAIL FROM:<\"j\xc3\xb6 rg\"@example.com> SMTPUTF8", &cmd));
	CHECK(ok("MAIL FROM:<a@b.example> SMTPUTF8", &cmd));
	CHECK(cmd.smtputf8);
	CHECK(ok("MAIL FROM:<a@b.example>", &cmd));
	CHECK(!cmd.smtputf8);
	CHECK(fails("MAIL FROM:<j\xc3\xb6rg@example.com>", NON_ASCII));
	CHECK(fails("MAIL FROM:<jorg@ex\xc3\xa4mple.com>", NON_ASCII));
	CHECK(fails("MAIL FROM:<jorg@ex\xc3\xa4mple.com> BODY=8BITMIME", NON_ASCII));
	CHECK(fails("MAIL FROM:<a@b.example> SMTPUTF8=yes", "501 5.5.4 "));
	/* malformed UTF-8 is bad syntax even with SMTPUTF8 */
	CHECK(fails("MAIL FROM:<a\xff@b.example> SMTPUTF8", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a\xc3@b.example> SMTPUTF8", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a\xc0\xaf@b.example> SMTPUTF8", BAD_SENDER));
	CHECK(fails("MAIL FROM:<a\xed\xa0\x80@b.example> SMTPUTF8", BAD_SENDER));
}

TEST(mail_several_params)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8", &cmd));
	CHECK(cmd.has_size && cmd.size == 100);
	CHECK(cmd.body == SMTP_BODY_8BITMIME && cmd.smtputf8);
	CHECK_STR(cmd.addr, "a@b.example");
	CHECK(ok("MAIL FROM:<a@b.example>   SMTPUTF8    SIZE=7   ", &cmd));
	CHECK(cmd.smtputf8 && cmd.size == 7);
	CHECK(fails("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", "501 5.5.4 "));
	CHECK(fails("MAIL FROM:<a@b.example> BODY=7BIT body=7bit", "501 5.5.4 "));
	CHECK(fails("MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8", "501 5.5.4 "));
	/* parameter errors come before address errors */
	CHECK(fails("MAIL FROM:<bad> SIZE=x", "501 5.5.4 Syntax: SIZE"));
}

TEST(mail_requiretls)
{
	struct smtp_cmd cmd;

	CHECK(ok("MAIL FROM:<a@b.example> REQUIRETLS", &cmd) && cmd.requiretls);
	CHECK(ok("MAIL FROM:<a@b.example> SIZE=5 requiretls SMTPUTF8", &cmd));
	CHECK(cmd.requiretls && cmd.smtputf8 && cmd.size == 5);
	CHECK(ok("MAIL FROM:<a@b.example>", &cmd) && !cmd.requiretls);
	CHECK(fails("MAIL FROM:<a@b.example> REQUIRETLS=yes",
	            "501 5.5.4 Syntax: REQUIRETLS takes no value"));
	CHECK(fails("MAIL FROM:<a@b.example> REQUIRETLS REQUIRETLS",
	            "501 5.5.4 Error: duplicate parameter"));
	/* a MAIL parameter only */
	CHECK(fails("RCPT TO:<a@b.example> REQUIRETLS", "555 5.5.4 "));
}

TEST(mail_unsupported_params)
{
	struct smtp_cmd cmd;
	const char *err;
	char line[200];

	err = parse("MAIL FROM:<a@b.example> AUTH=<>", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 "));
	CHECK(contains(err, "'AUTH'"));
	CHECK(cmd.verb == SMTP_MAIL);
	err = parse("MAIL FROM:<a@b.example> SIZE=5 RET=FULL", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 ") && contains(err, "'RET'"));
	err = parse("MAIL FROM:<a@b.example> ENVID=QQ314159", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 ") && contains(err, "'ENVID'"));
	snprintf(line, sizeof(line), "MAIL FROM:<a@b.example> X-%0100d=1", 0);
	err = parse(line, &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 "));
	CHECK(err != NULL && strlen(err) < 100);
	CHECK(contains(err, "'X-000"));
	/* not esmtp-keywords at all: a syntax error */
	CHECK(fails("MAIL FROM:<a@b.example> =1", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example> -X=1", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example> X_Y", MAIL_SYNTAX));
	CHECK(fails("MAIL FROM:<a@b.example> \xc3\xa9", MAIL_SYNTAX));
}

/* "<" + local + "@" + domain + ">" of exactly total octets. */
static void make_path(char *buf, size_t total, size_t local)
{
	size_t domain = total - 3 - local, i = 0, pos;

	buf[i++] = '<';
	memset(buf + i, 'l', local);
	i += local;
	buf[i++] = '@';
	pos = 0;
	while (pos < domain) {
		/* labels of up to 60 octets */
		size_t n = domain - pos > 61 ? 60 : domain - pos;

		if (pos > 0 && n > 1) {
			buf[i++] = '.';
			pos++;
			n--;
		}
		memset(buf + i, 'd', n);
		i += n;
		pos += n;
	}
	buf[i++] = '>';
	buf[i] = '\0';
}

TEST(path_length_limit)
{
	struct smtp_cmd cmd;
	char path[400], line[500];

	make_path(path, SMTP_PATH_MAX, 64);
	CHECK(strlen(path) == SMTP_PATH_MAX);
	snprintf(line, sizeof(line), "MAIL FROM:%s", path);
	CHECK(ok(line, &cmd));
	CHECK(strlen(cmd.addr) == SMTP_PATH_MAX - 2);
	snprintf(line, sizeof(line), "RCPT TO:%s", path);
	CHECK(ok(line, &cmd));
	CHECK(strlen(cmd.addr) == SMTP_PATH_MAX - 2);

	make_path(path, SMTP_PATH_MAX + 1, 64);
	CHECK(strlen(path) == SMTP_PATH_MAX + 1);
	snprintf(line, sizeof(line), "MAIL FROM:%s", path);
	CHECK(fails(line, BAD_SENDER));
	snprintf(line, sizeof(line), "RCPT TO:%s", path);
	CHECK(fails(line, BAD_RCPT));

	make_path(path, 390, 10);
	snprintf(line, sizeof(line), "MAIL FROM:%s SIZE=1", path);
	CHECK(fails(line, BAD_SENDER));
}

TEST(local_part_length_limit)
{
	struct smtp_cmd cmd;
	char path[100], line[200];

	make_path(path, 64 + 13, 64);
	snprintf(line, sizeof(line), "MAIL FROM:%s", path);
	CHECK(ok(line, &cmd));
	make_path(path, 65 + 13, 65);
	snprintf(line, sizeof(line), "MAIL FROM:%s", path);
	CHECK(fails(line, BAD_SENDER));
	snprintf(line, sizeof(line), "RCPT TO:%s", path);
	CHECK(fails(line, BAD_RCPT));
	/* a quoted local part counts its quotes: 62 + 2 is fine, 63 + 2 not */
	snprintf(line, sizeof(line), "MAIL FROM:<\"%062d\"@b.example>", 0);
	CHECK(ok(line, &cmd));
	snprintf(line, sizeof(line), "MAIL FROM:<\"%063d\"@b.example>", 0);
	CHECK(fails(line, BAD_SENDER));
}

/* ---- RCPT ---- */

TEST(rcpt_basic)
{
	struct smtp_cmd cmd;

	CHECK(ok("RCPT TO:<bob@example.org>", &cmd));
	CHECK(cmd.verb == SMTP_RCPT);
	CHECK_STR(cmd.addr, "bob@example.org");
	CHECK_STR(cmd.domain, "example.org");
	CHECK(!cmd.smtputf8);
	CHECK(ok("rcpt to: <bob@example.org>  ", &cmd));
	CHECK_STR(cmd.addr, "bob@example.org");
	CHECK(ok("RCPT TO:<@hop.example:bob@example.org>", &cmd));
	CHECK_STR(cmd.addr, "bob@example.org");
	CHECK(ok("RCPT TO:<bob@[192.0.2.7]>", &cmd));
	CHECK_STR(cmd.domain, "[192.0.2.7]");
	CHECK(ok("RCPT TO:<\"b o b\"@example.org>", &cmd));
	CHECK(fails("RCPT TO:<bob>", BAD_RCPT));
	CHECK(fails("RCPT TO:<bob@>", BAD_RCPT));
	CHECK(fails("RCPT TO:<b..ob@example.org>", BAD_RCPT));
}

TEST(rcpt_syntax_errors)
{
	CHECK(fails("RCPT", RCPT_SYNTAX));
	CHECK(fails("RCPT TO", RCPT_SYNTAX));
	CHECK(fails("RCPT TO:", RCPT_SYNTAX));
	CHECK(fails("RCPT FROM:<a@b.example>", RCPT_SYNTAX));
	CHECK(fails("RCPT TO:a@b.example", RCPT_SYNTAX));
	CHECK(fails("RCPT TO:<a@b.example", RCPT_SYNTAX));
	CHECK(fails("RCPT TO:<a@b.example>x", RCPT_SYNTAX));
}

TEST(rcpt_null_and_postmaster)
{
	struct smtp_cmd cmd;

	CHECK_STR(parse("RCPT TO:<>", &cmd), BAD_RCPT);
	CHECK(cmd.verb == SMTP_RCPT);
	CHECK(ok("RCPT TO:<postmaster>", &cmd));
	CHECK_STR(cmd.addr, "postmaster");
	CHECK(cmd.domain == NULL);
	CHECK(ok("RCPT TO:<PostMaster>", &cmd));
	CHECK_STR(cmd.addr, "PostMaster");
	CHECK(cmd.domain == NULL);
	CHECK(ok("RCPT TO:<postmaster@example.org>", &cmd));
	CHECK_STR(cmd.domain, "example.org");
	CHECK(fails("RCPT TO:<postmasters>", BAD_RCPT));
	CHECK(fails("RCPT TO:<abuse>", BAD_RCPT));
	CHECK(fails("RCPT TO:<@hop.example:postmaster>", BAD_RCPT));
}

TEST(rcpt_params_unsupported)
{
	struct smtp_cmd cmd;
	const char *err;

	err = parse("RCPT TO:<a@b.example> NOTIFY=NEVER", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 ") && contains(err, "'NOTIFY'"));
	err = parse("RCPT TO:<a@b.example> ORCPT=rfc822;a@b.example", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 ") && contains(err, "'ORCPT'"));
	err = parse("RCPT TO:<a@b.example> SIZE=1", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 ") && contains(err, "'SIZE'"));
	err = parse("RCPT TO:<a@b.example> SMTPUTF8", &cmd);
	CHECK(unit_prefix(err, "555 5.5.4 "));
	CHECK(fails("RCPT TO:<a@b.example> =x", RCPT_SYNTAX));
}

TEST(rcpt_utf8_marks_address)
{
	struct smtp_cmd cmd;

	/* SMTPUTF8 comes from MAIL FROM; RCPT only says the address needs it */
	CHECK(ok("RCPT TO:<j\xc3\xb6rg@example.com>", &cmd));
	CHECK(cmd.smtputf8);
	CHECK_STR(cmd.addr, "j\xc3\xb6rg@example.com");
	CHECK(ok("RCPT TO:<jorg@\xc3\xa4.example>", &cmd));
	CHECK(cmd.smtputf8);
	CHECK_STR(cmd.domain, "\xc3\xa4.example");
	CHECK(ok("RCPT TO:<jorg@example.com>", &cmd));
	CHECK(!cmd.smtputf8);
	CHECK(fails("RCPT TO:<j\xff@example.com>", BAD_RCPT));
}

/* ---- BDAT ---- */

TEST(bdat)
{
	struct smtp_cmd cmd;

	CHECK(ok("BDAT 0", &cmd) && cmd.verb == SMTP_BDAT);
	CHECK(cmd.chunk_size == 0 && !cmd.last);
	CHECK(ok("BDAT 1000 LAST", &cmd));
	CHECK(cmd.chunk_size == 1000 && cmd.last);
	CHECK(ok("bdat 5 last", &cmd));
	CHECK(cmd.chunk_size == 5 && cmd.last);
	CHECK(ok("BDAT   42    Last  ", &cmd));
	CHECK(cmd.chunk_size == 42 && cmd.last);
	CHECK(ok("BDAT 18446744073709551615", &cmd));
	CHECK(cmd.chunk_size == UINT64_MAX);
	CHECK_STR(parse("BDAT", &cmd), "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
	CHECK(cmd.verb == SMTP_BDAT);
	CHECK(fails("BDAT x", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT -1", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 1x", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 18446744073709551616", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 000000000000000000001", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT LAST", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 5 LASTX", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 5 LAST x", "501 5.5.4 Syntax: BDAT"));
	CHECK(fails("BDAT 1 2", "501 5.5.4 Syntax: BDAT"));
}

/* ---- line splitting ---- */

TEST(line_single)
{
	struct smtp_lines st = {0};
	size_t consumed = 99, len = 99;

	CHECK(smtp_line_next(&st, "EHLO x\r\n", 8, &consumed, &len) == SMTP_LINE_OK);
	CHECK(consumed == 8 && len == 6);
	CHECK(smtp_line_next(&st, "\r\n", 2, &consumed, &len) == SMTP_LINE_OK);
	CHECK(consumed == 2 && len == 0);
	CHECK(smtp_line_next(&st, "NOO", 3, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
	CHECK(smtp_line_next(&st, "", 0, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
	CHECK(smtp_line_next(&st, NULL, 0, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
	CHECK(!st.discarding);
}

TEST(line_pipelined)
{
	static const char buf[] = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nQU";
	static const char *const want[] = {"MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>",
	                                   "DATA"};
	struct smtp_lines st = {0};
	size_t off = 0, n = sizeof(buf) - 1;

	for (size_t k = 0; k < 3; k++) {
		size_t consumed, len;

		CHECK(smtp_line_next(&st, buf + off, n - off, &consumed, &len) == SMTP_LINE_OK);
		CHECK(len == strlen(want[k]) && memcmp(buf + off, want[k], len) == 0);
		CHECK(consumed == len + 2);
		off += consumed;
	}
	size_t consumed, len;
	CHECK(smtp_line_next(&st, buf + off, n - off, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
}

TEST(line_crlf_split)
{
	struct smtp_lines st = {0};
	size_t consumed, len;

	CHECK(smtp_line_next(&st, "NOOP\r", 5, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
	CHECK(smtp_line_next(&st, "NOOP\r\n", 6, &consumed, &len) == SMTP_LINE_OK);
	CHECK(consumed == 6 && len == 4);
}

TEST(line_bare_lf)
{
	struct smtp_lines st = {0};
	size_t consumed, len;
	static const char buf[] = "NOOP\nQUIT\r\n";

	CHECK(smtp_line_next(&st, buf, sizeof(buf) - 1, &consumed, &len) == SMTP_LINE_BARE_LF);
	CHECK(consumed == 5);
	CHECK(smtp_line_next(&st, buf + 5, sizeof(buf) - 6, &consumed, &len) == SMTP_LINE_OK);
	CHECK(consumed == 6 && len == 4);
	CHECK(smtp_line_next(&st, "\n", 1, &consumed, &len) == SMTP_LINE_BARE_LF);
	CHECK(consumed == 1);
	CHECK(smtp_line_next(&st, "\r\r\n", 3, &consumed, &len) == SMTP_LINE_OK);
	CHECK(consumed == 3 && len == 1);
}

TEST(line_length_limit)
{
	static char buf[1100];
	struct smtp_lines st = {0};
	size_t consumed, len;

	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 998, "\r\n", 2);
	CHECK(smtp_line_next(&st, buf, 1000, &consumed, &len) == SMTP_LINE_OK);
	CHECK(len == 998 && consumed == 1000);

	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 999, "\r\n", 2);
	CHECK(smtp_line_next(&st, buf, 1001, &consumed, &len) == SMTP_LINE_TOO_LONG);
	CHECK(consumed == 1001 && !st.discarding);

	/* 998 octets and a CR: the LF may still come */
	memset(buf, 'a', sizeof(buf));
	buf[998] = '\r';
	CHECK(smtp_line_next(&st, buf, 999, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0 && !st.discarding);
	/* 1000 octets without LF can never become a valid line */
	memset(buf, 'a', sizeof(buf));
	CHECK(smtp_line_next(&st, buf, 1000, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 1000 && st.discarding);
	CHECK(smtp_line_next(&st, "\r\n", 2, &consumed, &len) == SMTP_LINE_TOO_LONG);
	CHECK(consumed == 2 && !st.discarding);
}

/* Plays a caller that holds at most SMTP_LINE_MAX bytes and reads the
 * stream `chunk` bytes at a time; records each line result and OK line. */
struct feed_log {
	enum smtp_line_result res[16];
	char line[16][SMTP_LINE_MAX];
	size_t n;
	size_t max_held;
};

static void feed_lines(const char *stream, size_t len, size_t chunk, struct feed_log *log)
{
	char buf[SMTP_LINE_MAX];
	size_t held = 0, pos = 0;
	struct smtp_lines st = {0};
	size_t rounds = 0;

	memset(log, 0, sizeof(*log));
	for (;;) {
		size_t room = SMTP_LINE_MAX - held, n = len - pos;
		size_t consumed, line_len;
		enum smtp_line_result r;

		if (n > chunk)
			n = chunk;
		if (n > room)
			n = room;
		memcpy(buf + held, stream + pos, n);
		held += n;
		pos += n;
		if (held > log->max_held)
			log->max_held = held;
		for (;;) {
			r = smtp_line_next(&st, buf, held, &consumed, &line_len);
			if (r != SMTP_LINE_MORE && log->n < 16) {
				log->res[log->n] = r;
				if (r == SMTP_LINE_OK)
					memcpy(log->line[log->n], buf, line_len);
				log->n++;
			}
			memmove(buf, buf + consumed, held - consumed);
			held -= consumed;
			if (r == SMTP_LINE_MORE)
				break;
		}
		if (pos == len && (held == 0 || consumed == 0))
			break;
		if (++rounds > 2 * len + 10) {
			printf("  feed_lines: no progress with %zu bytes held\n", held);
			unit_cur_failed = 1;
			break;
		}
	}
}

TEST(line_discard_across_reads)
{
	static char stream[6000];
	size_t len = 0;
	static const size_t chunks[] = {1, 2, 7, 100, 512, 999, 1000, 4096};

	memset(stream, 'x', 5000);
	len = 5000;
	memcpy(stream + len, "\r\nNOOP\r\n", 8);
	len += 8;
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		static struct feed_log log;

		feed_lines(stream, len, chunks[c], &log);
		CHECK(log.n == 2);
		CHECK(log.res[0] == SMTP_LINE_TOO_LONG);
		CHECK(log.res[1] == SMTP_LINE_OK);
		CHECK(strcmp(log.line[1], "NOOP") == 0);
		CHECK(log.max_held <= SMTP_LINE_MAX);
	}
	/* the CRLF of the long line split exactly at a buffer boundary */
	memset(stream, 'y', sizeof(stream));
	len = 1999;
	memcpy(stream + len, "\r\nQUIT\r\n", 8);
	len += 8;
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		static struct feed_log log;

		feed_lines(stream, len, chunks[c], &log);
		CHECK(log.n == 2);
		CHECK(log.res[0] == SMTP_LINE_TOO_LONG);
		CHECK(log.res[1] == SMTP_LINE_OK && strcmp(log.line[1], "QUIT") == 0);
	}
}

TEST(line_discard_then_bare_lf)
{
	static char buf[SMTP_LINE_MAX];
	struct smtp_lines st = {0};
	size_t consumed, len;

	memset(buf, 'z', sizeof(buf));
	CHECK(smtp_line_next(&st, buf, sizeof(buf), &consumed, &len) == SMTP_LINE_MORE);
	CHECK(st.discarding && consumed == sizeof(buf));
	CHECK(smtp_line_next(&st, "zzz", 3, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(st.discarding && consumed == 3);
	/* a trailing CR is kept for the next read */
	CHECK(smtp_line_next(&st, "zz\r", 3, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(st.discarding && consumed == 2);
	CHECK(smtp_line_next(&st, "\r", 1, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 0);
	CHECK(smtp_line_next(&st, "\rz", 2, &consumed, &len) == SMTP_LINE_MORE);
	CHECK(consumed == 2);
	CHECK(smtp_line_next(&st, "z\nNOOP\r\n", 8, &consumed, &len) == SMTP_LINE_BARE_LF);
	CHECK(consumed == 2 && !st.discarding);
	CHECK(smtp_line_next(&st, "NOOP\r\n", 6, &consumed, &len) == SMTP_LINE_OK);
	CHECK(len == 4);
}

TEST(line_nul_passes_to_parser)
{
	static const char buf[] = "NO\0OP\r\n";
	struct smtp_lines st = {0};
	struct smtp_cmd cmd;
	size_t consumed, len;

	CHECK(smtp_line_next(&st, buf, sizeof(buf) - 1, &consumed, &len) == SMTP_LINE_OK);
	CHECK(len == 5 && consumed == 7);
	CHECK(unit_prefix(smtp_parse_command(buf, len, &cmd), "500 5.5.2 Error: bad character"));
}

int main(void)
{
	RUN(verb_names);
	RUN(verbs_case_insensitive);
	RUN(unknown_verb);
	RUN(control_characters);
	RUN(argument_bounds);
	RUN(parse_zeroes_previous_state);
	RUN(helo_ehlo);
	RUN(verbs_without_argument);
	RUN(verbs_with_any_argument);
	RUN(vrfy_expn);
	RUN(mail_basic);
	RUN(mail_case_and_spaces);
	RUN(mail_syntax_errors);
	RUN(mail_null_sender);
	RUN(mail_bad_address);
	RUN(mail_quoted_local_part);
	RUN(mail_address_literal);
	RUN(mail_source_route);
	RUN(mail_size);
	RUN(mail_body);
	RUN(mail_smtputf8);
	RUN(mail_several_params);
	RUN(mail_requiretls);
	RUN(mail_unsupported_params);
	RUN(path_length_limit);
	RUN(local_part_length_limit);
	RUN(rcpt_basic);
	RUN(rcpt_syntax_errors);
	RUN(rcpt_null_and_postmaster);
	RUN(rcpt_params_unsupported);
	RUN(rcpt_utf8_marks_address);
	RUN(bdat);
	RUN(line_single);
	RUN(line_pipelined);
	RUN(line_crlf_split);
	RUN(line_bare_lf);
	RUN(line_length_limit);
	RUN(line_discard_across_reads);
	RUN(line_discard_then_bare_lf);
	RUN(line_nul_passes_to_parser);
	UNIT_END("test_smtp_parse");
}
