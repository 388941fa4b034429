/* test_submit: local submission's pure part (relay/submit.c). */
#include "submit.h"
#include "unit.h"

static const char *list(const char *value)
{
	static char out[2048];
	char *rcpts[SUBMIT_RCPT_MAX], err[256];
	size_t n = 0, len = 0;

	if (submit_addr_list(value, "host.test", rcpts, SUBMIT_RCPT_MAX, &n, err, sizeof(err)) <
	    0) {
		snprintf(out, sizeof(out), "error: %s", err);
		return out;
	}
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		len +=
		    (size_t)snprintf(out + len, sizeof(out) - len, "%s%s", i ? "," : "", rcpts[i]);
		free(rcpts[i]);
	}
	return out;
}

TEST(address_lists)
{
	CHECK_STR(list("a@example.org"), "a@example.org");
	CHECK_STR(list("a@example.org, b@example.net"), "a@example.org,b@example.net");
	CHECK_STR(list("Alice <a@example.org>, \"Bob, Jr.\" <b@example.net>"),
	          "a@example.org,b@example.net");
	CHECK_STR(list("a@example.org (Alice, the admin), b@x.test"), "a@example.org,b@x.test");
	CHECK_STR(list("(nested (comment)) <a@example.org>"), "a@example.org");
	CHECK_STR(list("friends: a@x.test, B <b@y.test>; c@z.test"), "a@x.test,b@y.test,c@z.test");
	CHECK_STR(list("undisclosed-recipients:;"), "");
	CHECK_STR(list("root"), "root@host.test");
	CHECK_STR(list("Root <root>"), "root@host.test");
	CHECK_STR(list("\"quoted local\"@example.org"), "\"quoted local\"@example.org");
	CHECK_STR(list("<@relay.test,@other.test:a@example.org>"), "a@example.org");
	CHECK_STR(list("a@example.org,, ,b@x.test"), "a@example.org,b@x.test");
	CHECK_STR(list(" a@example.org\r\n\tb@x.test"), "a@example.orgb@x.test");
	CHECK_STR(list("A <a@x.test"), "error: unbalanced '<' in 'A <a@x.test'");
	CHECK_STR(list("a@x.test>"), "error: '>' without '<' in 'a@x.test>'");
	CHECK_STR(list("\"open"), "error: unbalanced '\"' in '\"open'");
	CHECK_STR(list("(open"), "error: unbalanced '(' in '(open'");
	CHECK_STR(list("<>"), "error: empty address <>");
}

TEST(single_addresses)
{
	char err[128], *a;

	a = submit_addr("user", "host.test", err, sizeof(err));
	CHECK_STR(a, "user@host.test");
	free(a);
	a = submit_addr("<user@example.org>", "host.test", err, sizeof(err));
	CHECK_STR(a, "user@example.org");
	free(a);
	CHECK(submit_addr("a b@example.org", "h", err, sizeof(err)) == NULL);
	CHECK_STR(err, "'a b@example.org' is not an address");
	CHECK(submit_addr("a\n@x", "h", err, sizeof(err)) == NULL);
	CHECK(submit_addr("", "h", err, sizeof(err)) == NULL);
	CHECK_STR(err, "empty address");
}

static struct submit_opts opts(bool extract, bool dot_ends)
{
	struct submit_opts o = {.extract = extract,
	                        .dot_ends = dot_ends,
	                        .sender = "alice@host.test",
	                        .hostname = "host.test",
	                        .now = 1700000000,
	                        .unique = 42};
	return o;
}

/* The message with the Date: line (local time) taken out. */
static const char *prep(const char *in, struct submit_opts o, struct submit_msg *m)
{
	static char out[8192];
	char err[256];

	if (submit_prepare(in, strlen(in), &o, m, err, sizeof(err)) < 0) {
		snprintf(out, sizeof(out), "error: %s", err);
		return out;
	}
	const char *d = strstr(m->data, "Date: ");
	const char *e = d ? strstr(d, "\r\n") : NULL;
	if (d && e)
		snprintf(out, sizeof(out), "%.*s%s", (int)(d - m->data), m->data, e + 2);
	else
		snprintf(out, sizeof(out), "%s", m->data);
	return out;
}

TEST(headers_added_and_crlf)
{
	struct submit_msg m;

	CHECK_STR(prep("Subject: hi\nTo: bob@x.test\n\nline 1\nline 2\n", opts(false, true), &m),
	          "From: alice@host.test\r\n"
	          "Message-ID: <6553f100.2a.krelay@host.test>\r\n"
	          "Subject: hi\r\nTo: bob@x.test\r\n\r\nline 1\r\nline 2\r\n");
	CHECK(m.nrcpt == 0 && !m.eight_bit);
	submit_msg_free(&m);
	/* what the program gave is kept; -F names the sender */
	struct submit_opts o = opts(false, true);
	o.full_name = "Alice \"A\" Smith";
	CHECK_STR(prep("Date: x\r\nMessage-Id: <m@x>\r\n\r\nbody", o, &m),
	          "From: \"Alice \\\"A\\\" Smith\" <alice@host.test>\r\n"
	          "Message-Id: <m@x>\r\n\r\nbody\r\n");
	CHECK(strstr(m.data, "Date: x\r\n") != NULL);
	submit_msg_free(&m);
	/* no header block at all: all body */
	CHECK_STR(prep("just text\nmore\n", opts(false, true), &m),
	          "From: alice@host.test\r\nMessage-ID: <6553f100.2a.krelay@host.test>\r\n"
	          "\r\njust text\r\nmore\r\n");
	submit_msg_free(&m);
	/* a mbox "From " line is dropped; a header block ended by a text line */
	CHECK_STR(prep("From alice Thu Dec  3 09:00:00 2026\nFrom: a@x.test\nSubject: s\ntext\n",
	               opts(false, true), &m),
	          "Message-ID: <6553f100.2a.krelay@host.test>\r\n"
	          "From: a@x.test\r\nSubject: s\r\n\r\ntext\r\n");
	submit_msg_free(&m);
	/* an unauthorised -f is flagged */
	o = opts(false, true);
	o.auth_warning = "host.test: bob set sender to alice@host.test using -f";
	prep("From: x@y\n\nb\n", o, &m);
	{
		static const char want[] = "X-Authentication-Warning: host.test: bob set sender to "
		                           "alice@host.test using -f\r\n";
		CHECK(strncmp(m.data, want, sizeof(want) - 1) == 0);
	}
	submit_msg_free(&m);
}

TEST(dot_and_dash_i)
{
	struct submit_msg m;

	/* without -i a line "." ends the message */
	CHECK(strstr(prep("From: a@x\n\none\n.\ntwo\n", opts(false, true), &m), "two") == NULL);
	submit_msg_free(&m);
	CHECK(strstr(prep("From: a@x\n\none\n.\ntwo\n", opts(false, false), &m),
	             "one\r\n.\r\ntwo\r\n") != NULL);
	submit_msg_free(&m);
	/* ".." stays as it is: dot-stuffing is the SMTP client's */
	CHECK(strstr(prep("From: a@x\n\n..\n", opts(false, true), &m), "\r\n..\r\n") != NULL);
	submit_msg_free(&m);
	CHECK(strstr(prep("From: a@x\n\n\xc3\xa9t\xc3\xa9\n", opts(false, true), &m), "\xc3\xa9") !=
	      NULL);
	CHECK(m.eight_bit);
	submit_msg_free(&m);
}

TEST(extract_recipients)
{
	struct submit_msg m;
	const char *out = prep("From: a@x.test\n"
	                       "To: Bob <bob@example.org>,\n"
	                       "  carol@example.org\n"
	                       "Cc: dave (D)\n"
	                       "Bcc: eve@example.net,\n"
	                       "\tfrank@example.net\n"
	                       "Subject: s\n"
	                       "\n"
	                       "To: not@a.header\n",
	                       opts(true, true), &m);
	CHECK(m.nrcpt == 5);
	if (m.nrcpt == 5) {
		CHECK_STR(m.rcpts[0], "bob@example.org");
		CHECK_STR(m.rcpts[1], "carol@example.org");
		CHECK_STR(m.rcpts[2], "dave@host.test");
		CHECK_STR(m.rcpts[3], "eve@example.net");
		CHECK_STR(m.rcpts[4], "frank@example.net");
	}
	/* Bcc is never sent, nor its continuation */
	CHECK(strstr(out, "Bcc") == NULL && strstr(out, "frank") == NULL);
	CHECK(strstr(out, "To: Bob <bob@example.org>,\r\n  carol@example.org\r\n") != NULL);
	submit_msg_free(&m);
	/* Bcc first, continued */
	out = prep("Bcc: x@y.test,\n z@y.test\nSubject: s\n\nb\n", opts(true, true), &m);
	CHECK(m.nrcpt == 2 && strstr(out, "z@y.test") == NULL && strstr(out, "Subject: s") != NULL);
	submit_msg_free(&m);
	/* without -t nothing is extracted, and Bcc still goes */
	out = prep("To: bob@example.org\nBcc: eve@example.net\n\nb\n", opts(false, true), &m);
	CHECK(m.nrcpt == 0 && strstr(out, "eve") == NULL);
	submit_msg_free(&m);
	/* a bad list is an error, naming it */
	CHECK_STR(prep("To: Bob <bob@example.org\n\nb\n", opts(true, true), &m),
	          "error: unbalanced '<' in ' Bob <bob@example.org '");
}

int main(void)
{
	RUN(address_lists);
	RUN(single_addresses);
	RUN(headers_added_and_crlf);
	RUN(dot_and_dash_i);
	RUN(extract_recipients);
	UNIT_END("test_submit");
}
