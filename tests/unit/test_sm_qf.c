/* test_sm_qf: Sendmail qf (version 8) reading (relay/sm_qf.c), on files as
 * Sendmail 8.17.1.9 wrote them (../shared/sendmail-facts.md §3). */
#include "sm_qf.h"
#include "unit.h"

static struct smqf q;
static char err[512];

static int parse(const char *text)
{
	smqf_free(&q);
	err[0] = '\0';
	return smqf_parse(text, strlen(text), "relay.lab.test", &q, err, sizeof(err));
}

/* The facts' sample qf6ASJ8mWv023539: STARTTLS in, DSN, two recipients. */
static const char sample[] =
    "V8\nT1795892928\nK0\nN0\nP60291\nB8BITMIME\nF8bdns\n"
    "$_localhost [127.0.0.1]\n$rESMTPS\n$sclient.lab.test\n${daemon_flags}\n"
    "S<alice@client.lab.test>\nZlab-envid-0004\n"
    "Qrfc822;bob@sink.lab.test\nrRFC822; bob@sink.lab.test\nRPNSF:<bob@sink.lab.test>\n"
    "rRFC822; carol@sink.lab.test\nRPN:<carol@sink.lab.test>\n"
    "H?P?Return-Path: <\201g>\n"
    "H??Received: from client.lab.test (localhost [127.0.0.1])\n"
    "\tby relay.lab.test (8.17.1.9/8.17.1.9) with ESMTPS id 6ASJ8mWv023539\n"
    "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK);\n"
    "\tSat, 28 Nov 2026 19:08:48 GMT\n"
    "H?D?Date: Sat, 28 Nov 2026 19:08:48 GMT\n"
    "H?M?Message-Id: <202611281908.6ASJ8mWv023539@relay.lab.test>\n"
    "H??From: Alice <alice@client.lab.test>\n"
    "H??To: bob@sink.lab.test, carol@sink.lab.test\n"
    "H??Bcc: dave@sink.lab.test\n"
    "H??Content-Transfer-Encoding: 8bit\n"
    ".\n";

TEST(sample_envelope)
{
	CHECK(parse(sample) == 0);
	CHECK(q.created == 1795892928 && q.attempts == 0 && q.last_try == 0);
	CHECK(q.body_type == 8 && q.eight_bit && q.delete_bcc && !q.smtputf8);
	CHECK(q.ret == 'H'); /* F n: RET=HDRS */
	CHECK(strcmp(q.sender, "alice@client.lab.test") == 0);
	CHECK(q.envid && strcmp(q.envid, "lab-envid-0004") == 0);
	CHECK(q.rcpt_count == 2);
	CHECK(strcmp(q.rcpts[0].addr, "bob@sink.lab.test") == 0);
	CHECK(strcmp(q.rcpts[0].flags, "PNSF") == 0);
	CHECK(q.rcpts[0].orcpt && strcmp(q.rcpts[0].orcpt, "rfc822;bob@sink.lab.test") == 0);
	CHECK(strcmp(q.rcpts[1].addr, "carol@sink.lab.test") == 0 && q.rcpts[1].orcpt == NULL);
	CHECK(strcmp(smqf_macro(&q, "_"), "localhost [127.0.0.1]") == 0);
	CHECK(strcmp(smqf_macro(&q, "{daemon_flags}"), "") == 0);
	CHECK(smqf_macro(&q, "x") == NULL);
}

TEST(sample_headers_as_the_relay_mailer_writes_them)
{
	CHECK(parse(sample) == 0);
	/* Return-Path (?P?) and Bcc (F b) dropped; folding kept; CRLF */
	CHECK(strcmp(q.headers,
	             "Received: from client.lab.test (localhost [127.0.0.1])\r\n"
	             "\tby relay.lab.test (8.17.1.9/8.17.1.9) with ESMTPS id 6ASJ8mWv023539\r\n"
	             "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK);\r\n"
	             "\tSat, 28 Nov 2026 19:08:48 GMT\r\n"
	             "Date: Sat, 28 Nov 2026 19:08:48 GMT\r\n"
	             "Message-Id: <202611281908.6ASJ8mWv023539@relay.lab.test>\r\n"
	             "From: Alice <alice@client.lab.test>\r\n"
	             "To: bob@sink.lab.test, carol@sink.lab.test\r\n"
	             "Content-Transfer-Encoding: 8bit\r\n"
	             "\r\n") == 0);
	CHECK(q.headers_len == strlen(q.headers));
	CHECK(q.header_count == 8 && q.headers_dropped == 2);
}

TEST(macros_and_quoting)
{
	/* \201 expands a macro; \377 quotes the byte after it (Sendmail writes
	 * U+00C1, C3 81, as C3 FF 81); ?$x? asks whether x is set */
	CHECK(parse("V8\nT1\nK0\nN2\n$sclient.example\n${auth_type}\nS<>\nRPF:<b@example.org>\n"
	            "H??X-Helo: \201s on \201j for \201{auth_type}\201{unset}.\n"
	            "H??Subject: \303\377\201 \303\377\377 x\n"
	            "H?$s?X-If-S: yes\n"
	            "H?${auth_type}?X-If-Auth: no (empty)\n"
	            "H?$z?X-If-Z: no\n"
	            "H?x?Full-Name: not for the relay mailer\n"
	            "H?Fx?From: a@example.org\n"
	            "HBcc: kept (no F b)\n"
	            ".\n") == 0);
	CHECK(strcmp(q.sender, "") == 0 && q.attempts == 2);
	CHECK(strcmp(q.headers, "X-Helo: client.example on relay.lab.test for .\r\n"
	                        "Subject: \303\201 \303\377 x\r\n"
	                        "X-If-S: yes\r\n"
	                        "From: a@example.org\r\n"
	                        "Bcc: kept (no F b)\r\n"
	                        "\r\n") == 0);
}

TEST(no_header_made_from_a_value)
{
	/* a folded macro value is spaced out, a quoted line end refused: what
	 * the file holds never ends a header or adds one */
	CHECK(parse("V8\n$sline one\n\tBcc: evil@example.net\nSa@b.c\nRP:x@y.z\n"
	            "H??X-Helo: \201s\n.\n") == 0);
	CHECK(strcmp(q.headers, "X-Helo: line one \tBcc: evil@example.net\r\n\r\n") == 0);
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nH??X-A: a\377\n\tb\n.\n") < 0 &&
	      strstr(err, "line end"));
}

TEST(partially_delivered_file)
{
	/* the facts' qf6ASJ8g0v023123 after a partial delivery: only carol is
	 * left (delivered recipients are gone from the file) */
	CHECK(parse("V8\nT1795892620\nK1795892700\nN2\nP120219\nF8bs\n"
	            "$_root@localhost\nSalice@client.lab.test\n"
	            "MDeferred: 403 4.7.0 encryption too weak 0 less than 256\n"
	            "rRFC822; carol@sink.lab.test\nRPFD:carol@sink.lab.test\n"
	            "H??Subject: partial\n.\n") == 0);
	CHECK(q.rcpt_count == 1 && strcmp(q.rcpts[0].addr, "carol@sink.lab.test") == 0);
	CHECK(q.attempts == 2 && q.last_try == 1795892700);
}

TEST(refused_files)
{
	CHECK(parse("V7\nSa@b.c\nRP:x@y.z\n.\n") < 0 && strstr(err, "V8"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\n") < 0 && strstr(err, "cut short"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\n.\nRP:evil@y.z\n") < 0 && strstr(err, "after the '.'"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nWwhat\n.\n") < 0 && strstr(err, "unknown record 'W'"));
	CHECK(parse("V8\nSa@b.c\n.\n") < 0 && strstr(err, "no R record"));
	CHECK(parse("V8\nRP:x@y.z\n.\n") < 0 && strstr(err, "no S record"));
	CHECK(parse("V8\nSa@b.c\nRP:|/usr/bin/prog\n.\n") < 0 && strstr(err, "local"));
	CHECK(parse("V8\nSa@b.c\nRP:/var/mail/file\n.\n") < 0 && strstr(err, "local"));
	CHECK(parse("V8\nSa@b.c\nRP:root\n.\n") < 0 && strstr(err, "local"));
	CHECK(parse("V8\nSa@b.c\nRP x@y.z\n.\n") < 0 && strstr(err, "flags"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nqspam\n.\n") < 0 && strstr(err, "quarantined"));
	CHECK(parse("V8\nSa@b.c\nRP:x y@z.z\n.\n") < 0 && strstr(err, "not an address"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nH??Subject: a\202b\n.\n") < 0 &&
	      strstr(err, "internal code"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nH??Subject: a\r\n.\n") < 0);
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nH?P Subject: a\n.\n") < 0 && strstr(err, "'?'"));
	CHECK(parse("V8\nSa@b.c\nRP:x@y.z\nHNo colon\n.\n") < 0 && strstr(err, "Name:"));
	CHECK(parse("V8\nTsoon\nSa@b.c\nRP:x@y.z\n.\n") < 0 && strstr(err, "not a number"));
	CHECK(parse("V8\nBBINARY\nSa@b.c\nRP:x@y.z\n.\n") < 0 && strstr(err, "body type"));
	CHECK(parse("\tV8\n.\n") < 0);
	CHECK(parse("V8\n\nSa@b.c\nRP:x@y.z\n.\n") < 0 && strstr(err, "empty line"));
	{
		static const char nul[] = "V8\nSa@b\0.c\nRP:x@y.z\n.\n";
		smqf_free(&q);
		CHECK(smqf_parse(nul, sizeof(nul) - 1, "h", &q, err, sizeof(err)) < 0 &&
		      strstr(err, "NUL"));
	}
}

TEST(names)
{
	CHECK(smqf_name_id("qf6ASJ8mWv023539", "qf") != NULL);
	CHECK(strcmp(smqf_name_id("qf6ASJ8mWv023539", "qf"), "6ASJ8mWv023539") == 0);
	CHECK(smqf_name_id("df6ASJ8mWv023539", "qf") == NULL);
	CHECK(smqf_name_id("qf6ASJ", "qf") == NULL);
	CHECK(smqf_name_id("qf6ASJ8mWv02353.9", "qf") == NULL);
	CHECK(smqf_name_id("qf../../etc/passwd", "qf") == NULL);
}

int main(void)
{
	RUN(sample_envelope);
	RUN(sample_headers_as_the_relay_mailer_writes_them);
	RUN(macros_and_quoting);
	RUN(no_header_made_from_a_value);
	RUN(partially_delivered_file);
	RUN(refused_files);
	RUN(names);
	smqf_free(&q);
	UNIT_END("test_sm_qf");
}
