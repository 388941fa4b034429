/* Unit tests: spool_format (envelope text, trailer, queue IDs). */
#include <stdlib.h>
#include <string.h>

#include "spool_format.h"
#include "unit.h"

static struct spool_rcpt rcpts[] = {
    {"a@example.com", SPOOL_RCPT_PENDING},
    {"\"odd %local\r\n\"@example.org", SPOOL_RCPT_DELIVERED},
    {"x@[127.0.0.1]", SPOOL_RCPT_FAILED},
};

static struct spool_env sample(void)
{
	struct spool_env e = {
	    .id = "0CFF5CE500C82F31",
	    .arrival = 1795898853,
	    .body_size = 123456789012ull,
	    .dot_lines = true,
	    .eight_bit = true,
	    .smtputf8 = false,
	    .body_type = 8,
	    .sender = "s@example.net",
	    .rcpts = rcpts,
	    .rcpt_count = 3,
	    .client = "::1",
	    .helo = "client with spaces % and \x01 ctl",
	    .tls = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
	    .client_cert = "verified 00ff",
	};
	return e;
}

/* The envelope as the README documents it, pinned byte for byte: a file
 * written by an older krelay must still parse, and what krelay writes must
 * not drift from what tools (and the README) expect. */
static const char golden[] = "krelay-envelope 1\n"
                             "id 0CFF5CE500C82F31\n"
                             "arrival 1795898853\n"
                             "size 496\n"
                             "dotlines 1\n"
                             "crlf 1\n"
                             "8bit 0\n"
                             "smtputf8 0\n"
                             "body -\n"
                             "client 127.0.0.1\n"
                             "helo client.test\n"
                             "tls TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)\n"
                             "clientcert verified 939adf\n"
                             "attempts 2\n"
                             "next 1795899000\n"
                             "error 451 4.3.0 try again%0D%0A\n"
                             "sender root@vm\n"
                             "rcpt P a@example.com\n"
                             "rcpt D \"odd %25local%0D%0A\"@example.org\n"
                             "rcpt F x@[127.0.0.1]\n"
                             "rcpt B b@example.com\n"
                             "end\n";

TEST(golden_envelope)
{
	static struct spool_rcpt r[] = {
	    {"a@example.com", SPOOL_RCPT_PENDING},
	    {"\"odd %local\r\n\"@example.org", SPOOL_RCPT_DELIVERED},
	    {"x@[127.0.0.1]", SPOOL_RCPT_FAILED},
	    {"b@example.com", SPOOL_RCPT_BOUNCED},
	};
	struct spool_env e = {
	    .id = "0CFF5CE500C82F31",
	    .arrival = 1795898853,
	    .body_size = 496,
	    .dot_lines = true,
	    .final_crlf = true,
	    .sender = "root@vm",
	    .rcpts = r,
	    .rcpt_count = 4,
	    .client = "127.0.0.1",
	    .helo = "client.test",
	    .tls = "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)",
	    .client_cert = "verified 939adf",
	    .attempts = 2,
	    .next_attempt = 1795899000,
	    .last_error = "451 4.3.0 try again\r\n",
	};
	struct spool_env back;
	char buf[4096], err[128];
	size_t n = spool_env_format(&e, buf, sizeof(buf));

	CHECK(n == sizeof(golden) - 1 && memcmp(buf, golden, n) == 0);
	CHECK(spool_env_parse(golden, sizeof(golden) - 1, &back, err, sizeof(err)) == 0);
	CHECK_STR(back.id, "0CFF5CE500C82F31");
	CHECK(back.arrival == 1795898853 && back.body_size == 496);
	CHECK(back.dot_lines && back.final_crlf && !back.eight_bit && !back.smtputf8);
	CHECK(back.body_type == 0);
	CHECK_STR(back.client, "127.0.0.1");
	CHECK_STR(back.helo, "client.test");
	CHECK_STR(back.tls, "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)");
	CHECK_STR(back.client_cert, "verified 939adf");
	CHECK(back.attempts == 2 && back.next_attempt == 1795899000);
	CHECK_STR(back.last_error, "451 4.3.0 try again\r\n");
	CHECK_STR(back.sender, "root@vm");
	CHECK(back.rcpt_count == 4);
	for (size_t i = 0; i < 4 && i < back.rcpt_count; i++) {
		CHECK_STR(back.rcpts[i].addr, r[i].addr);
		CHECK(back.rcpts[i].state == r[i].state);
	}
	spool_env_free(&back);
}

TEST(requiretls_round_trip)
{
	struct spool_env e = sample(), back;
	char buf[4096], err[128];
	size_t n;

	/* absent unless set: envelopes without it read as before */
	n = spool_env_format(&e, buf, sizeof(buf));
	CHECK(n < sizeof(buf) && strstr(buf, "requiretls") == NULL);
	CHECK(spool_env_parse(buf, n, &back, err, sizeof(err)) == 0 && !back.requiretls);
	spool_env_free(&back);
	e.requiretls = true;
	n = spool_env_format(&e, buf, sizeof(buf));
	CHECK(n < sizeof(buf) && strstr(buf, "\nrequiretls 1\n") != NULL);
	CHECK(spool_env_parse(buf, n, &back, err, sizeof(err)) == 0 && back.requiretls);
	spool_env_free(&back);
}

TEST(round_trip)
{
	struct spool_env e = sample(), back;
	char buf[4096], err[128];
	size_t n = spool_env_format(&e, buf, sizeof(buf));

	CHECK(n < sizeof(buf));
	CHECK(spool_env_parse(buf, n, &back, err, sizeof(err)) == 0);
	CHECK_STR(back.id, e.id);
	CHECK(back.arrival == e.arrival);
	CHECK(back.body_size == e.body_size);
	CHECK(back.dot_lines && back.eight_bit && !back.smtputf8);
	CHECK(!back.final_crlf);
	CHECK(back.body_type == 8);
	CHECK_STR(back.sender, e.sender);
	CHECK(back.rcpt_count == 3);
	for (size_t i = 0; i < 3 && i < back.rcpt_count; i++) {
		CHECK_STR(back.rcpts[i].addr, rcpts[i].addr);
		CHECK(back.rcpts[i].state == rcpts[i].state);
	}
	CHECK_STR(back.client, "::1");
	CHECK_STR(back.helo, e.helo);
	CHECK_STR(back.tls, e.tls);
	CHECK_STR(back.client_cert, e.client_cert);
	spool_env_free(&back);
}

TEST(null_sender_round_trip)
{
	struct spool_env e = sample(), back;
	char buf[4096], err[128];
	size_t n;

	e.sender = "";
	n = spool_env_format(&e, buf, sizeof(buf));
	CHECK(spool_env_parse(buf, n, &back, err, sizeof(err)) == 0);
	CHECK_STR(back.sender, "");
	spool_env_free(&back);
}

TEST(escapes_keep_one_line_per_field)
{
	struct spool_env e = sample();
	char buf[4096];
	size_t n = spool_env_format(&e, buf, sizeof(buf)), lines = 0;

	for (size_t i = 0; i < n; i++)
		lines += buf[i] == '\n';
	/* magic + 13 fields + 3 recipients + end */
	CHECK(lines == 18);
	CHECK(strstr(buf, "%0D%0A") != NULL);
	CHECK(strstr(buf, "%25") != NULL);
}

TEST(format_reports_needed_length)
{
	struct spool_env e = sample();
	char small[16], big[4096];
	size_t need = spool_env_format(&e, small, sizeof(small));

	CHECK(need == spool_env_format(&e, big, sizeof(big)));
	CHECK(need > sizeof(small));
}

TEST(truncated_envelope_is_rejected)
{
	struct spool_env e = sample(), back;
	char buf[4096], err[128];
	size_t n = spool_env_format(&e, buf, sizeof(buf));

	/* every proper prefix lacks "end": never a whole envelope */
	for (size_t cut = 0; cut < n - 1; cut += 7)
		CHECK(spool_env_parse(buf, cut, &back, err, sizeof(err)) == -1);
}

TEST(bad_fields_are_rejected)
{
	struct spool_env back;
	char err[128];
	const char *bad[] = {
	    "nope\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsender a@b\nend\n", /* no rcpt */
	    "krelay-envelope 1\nid XYZ\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsize -1\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsender a@b\nrcpt Q a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsender a@b\nrcpt P a@b\nbogus 1\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\ndotlines 2\nsender a@b\nrcpt P a@b\nend\n",
	    /* numbers are plain decimal digits: no sign, space or base */
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsize +5\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nsize  5\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nattempts -1\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\narrival 0x10\nsender a@b\nrcpt P a@b\nend\n",
	    "krelay-envelope 1\nid 0CFF5CE500C82F31\nnext 1e9\nsender a@b\nrcpt P a@b\nend\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(spool_env_parse(bad[i], strlen(bad[i]), &back, err, sizeof(err)) == -1);
}

TEST(trailer_round_trip)
{
	char t[SPOOL_TRAILER_LEN];
	uint64_t off;
	uint32_t len;

	spool_trailer_format(t, 0x123456789aull, 0xabcdef);
	CHECK(t[0] == '\n' && t[SPOOL_TRAILER_LEN - 1] == '\n');
	CHECK(spool_trailer_parse(t, &off, &len) == 0);
	CHECK(off == 0x123456789aull && len == 0xabcdef);
	t[3] = 'X';
	CHECK(spool_trailer_parse(t, &off, &len) == -1);
	/* a sign, a base or a space inside a number: not a trailer */
	static const char *const bad[] = {
	    "\nKRELAY-ENV +00000000000001a 000000ff\n",
	    "\nKRELAY-ENV 0x0000000000001a 000000ff\n",
	    "\nKRELAY-ENV 000000000000001a -00000ff\n",
	    "\nKRELAY-ENV  00000000000001a 000000ff\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(spool_trailer_parse(bad[i], &off, &len) == -1);
	CHECK(spool_trailer_parse("\nKRELAY-ENV 000000000000001a 000000ff\n", &off, &len) == 0);
	CHECK(off == 0x1a && len == 0xff);
}

TEST(queue_ids)
{
	CHECK(spool_id_valid("0CFF5CE500C82F31"));
	CHECK(!spool_id_valid("0cff5ce500c82f31"));
	CHECK(!spool_id_valid("0CFF5CE500C82F3"));
	CHECK(!spool_id_valid("0CFF5CE500C82F311"));
	CHECK(!spool_id_valid("../../etc/passwd"));
}

int main(void)
{
	RUN(golden_envelope);
	RUN(round_trip);
	RUN(requiretls_round_trip);
	RUN(null_sender_round_trip);
	RUN(escapes_keep_one_line_per_field);
	RUN(format_reports_needed_length);
	RUN(truncated_envelope_is_rejected);
	RUN(bad_fields_are_rejected);
	RUN(trailer_round_trip);
	RUN(queue_ids);
	UNIT_END("test_spool_format");
}
