/* test_route: route.c's next-hop syntax, TransportTable files (written under
 * /tmp), lookup precedence and MX ordering. */
#include "route.h"
#include "unit.h"

#include <stdint.h>
#include <unistd.h>

/* ---- helpers ---- */

static int hop_is(const char *text, const char *host, unsigned port, int mx, int literal)
{
	struct route_hop h;
	char err[256] = "";
	int ok;

	if (route_parse_hop(text, &h, err, sizeof(err)) != 0) {
		printf("  '%s': unexpected error: %s\n", text, err);
		return 0;
	}
	ok = strcmp(h.host, host) == 0 && h.port == port && h.mx == !!mx && h.literal == !!literal;
	if (!ok)
		printf("  '%s': got host '%s' port %u mx %d literal %d\n", text, h.host,
		       (unsigned)h.port, h.mx, h.literal);
	return ok;
}

/* True when text is refused with an error containing msg. */
static int hop_bad(const char *text, const char *msg)
{
	struct route_hop h;
	char err[256] = "";

	if (route_parse_hop(text, &h, err, sizeof(err)) != -1) {
		printf("  '%s': accepted (host '%s')\n", text, h.host);
		return 0;
	}
	if (strstr(err, msg) == NULL) {
		printf("  '%s': error \"%s\", wanted \"%s\"\n", text, err, msg);
		return 0;
	}
	return 1;
}

static const char *text_of(const char *hop)
{
	static char buf[300];
	static char err[256];
	struct route_hop h;

	if (route_parse_hop(hop, &h, err, sizeof(err)) != 0)
		return err;
	route_hop_text(&h, buf, sizeof(buf));
	return buf;
}

static char tmp_path[64];

static int write_file(const char *text)
{
	size_t len = strlen(text);
	int fd;

	strcpy(tmp_path, "/tmp/test_route.XXXXXX");
	fd = mkstemp(tmp_path);
	if (fd < 0)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return close(fd);
}

static struct route_table *load(const char *text, char *err, size_t errlen)
{
	struct route_table *t;

	err[0] = '\0';
	if (write_file(text) < 0)
		return NULL;
	t = route_table_load(tmp_path, err, errlen);
	unlink(tmp_path);
	return t;
}

/* True when loading text fails with exactly "PATH:LINE: msg". */
static int table_fails(const char *text, unsigned line, const char *msg)
{
	struct route_table *t;
	char err[512], want[600];

	t = load(text, err, sizeof(err));
	snprintf(want, sizeof(want), "%s:%u: %s", tmp_path, line, msg);
	if (t != NULL) {
		route_table_free(t);
		printf("  loaded; wanted \"%s\"\n", want);
		return 0;
	}
	if (strcmp(err, want) != 0) {
		printf("  error \"%s\"\n  wanted \"%s\"\n", err, want);
		return 0;
	}
	return 1;
}

/* route_lookup's answer as hop text plus its flags: "[h]:25 literal". */
static const char *lookup(const struct route_table *t, const struct route_hop *smart,
                          const char *domain)
{
	static char buf[320];
	struct route_hop h;
	size_t len;

	memset(&h, 0xa5, sizeof(h));
	route_lookup(t, smart, domain, &h);
	route_hop_text(&h, buf, sizeof(buf));
	len = strlen(buf);
	if (h.literal)
		snprintf(buf + len, sizeof(buf) - len, " literal");
	return buf;
}

static void set_mx(struct dns_mx *mx, const char *host, unsigned pref)
{
	snprintf(mx->host, sizeof(mx->host), "%s", host);
	mx->pref = pref;
}

/* Deterministic generators for route_order_mx. */
static unsigned rnd_zero(void *ctx, unsigned bound)
{
	return 0;
}

static unsigned rnd_last(void *ctx, unsigned bound)
{
	return bound - 1;
}

static unsigned rnd_huge(void *ctx, unsigned bound)
{
	return 0xfffffff0u; /* out of range: must not index past the run */
}

static unsigned rnd_lcg(void *ctx, unsigned bound)
{
	uint64_t *s = ctx;

	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)((*s >> 33) % bound);
}

/* The hosts of mx[0..n) joined by ',' */
static const char *hosts(const struct dns_mx *mx, int n)
{
	static char buf[1024];
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "",
		                        mx[i].host);
	return buf;
}

/* ---- next hops ---- */

TEST(parse_hop_names)
{
	CHECK(hop_is("[mail.example.com]:2525", "mail.example.com", 2525, 0, 0));
	CHECK(hop_is("[mail.example.com]", "mail.example.com", 25, 0, 0));
	CHECK(hop_is("mail.example.com:587", "mail.example.com", 587, 1, 0));
	CHECK(hop_is("mail.example.com", "mail.example.com", 25, 1, 0));
	CHECK(hop_is("Mail.Example.COM.", "mail.example.com", 25, 1, 0));
	CHECK(hop_is("[relay.example.]:26", "relay.example", 26, 0, 0));
	CHECK(hop_is("localhost", "localhost", 25, 1, 0));
	CHECK(hop_is("a-b.c-d9.e", "a-b.c-d9.e", 25, 1, 0));
	CHECK(hop_is("h:1", "h", 1, 1, 0));
	CHECK(hop_is("h:65535", "h", 65535, 1, 0));
	/* 63-character label, 253-character name: the limits themselves */
	{
		char name[64], hop[1300];

		memset(name, 'a', 63);
		name[63] = '\0';
		snprintf(hop, sizeof(hop), "%s.com", name);
		CHECK(hop_is(hop, hop, 25, 1, 0));
		/* 4 labels of 62 + 3 dots = 251, + ".x" = 253 */
		memset(name, 'b', 62);
		name[62] = '\0';
		snprintf(hop, sizeof(hop), "%s.%s.%s.%s.x", name, name, name, name);
		CHECK(strlen(hop) == 253);
		CHECK(hop_is(hop, hop, 25, 1, 0));
	}
}

TEST(parse_hop_literals)
{
	CHECK(hop_is("[1.2.3.4]:2525", "1.2.3.4", 2525, 0, 1));
	CHECK(hop_is("[1.2.3.4]", "1.2.3.4", 25, 0, 1));
	CHECK(hop_is("1.2.3.4", "1.2.3.4", 25, 0, 1));
	CHECK(hop_is("1.2.3.4:26", "1.2.3.4", 26, 0, 1));
	CHECK(hop_is("[IPv6:::1]:25", "::1", 25, 0, 1));
	CHECK(hop_is("[::1]:25", "::1", 25, 0, 1));
	CHECK(hop_is("[ipv6:::1]", "::1", 25, 0, 1));
	CHECK(hop_is("[IPv6:2001:DB8:0:0::1]:2525", "2001:db8::1", 2525, 0, 1));
	CHECK(hop_is("[::ffff:10.1.2.3]", "::ffff:10.1.2.3", 25, 0, 1));
}

TEST(parse_hop_errors)
{
	struct route_hop h;
	char err[256];

	CHECK(route_parse_hop("[h]:99999", &h, err, sizeof(err)) == -1);
	CHECK_STR(err, "bad port '99999' in '[h]:99999'");
	CHECK(hop_bad("h:0", "bad port '0' in 'h:0'"));
	/* no top-level domain is all digits: neither an address nor a name
	 * (a name would print as "[2.0.4.7]", an address; found by fuzzing) */
	CHECK(hop_bad("[1.2.3.4.5]:25", "an address is written [192.0.2.7], not as a domain"));
	CHECK(hop_bad("[2.0.4.7.]:525", "an address is written [192.0.2.7], not as a domain"));
	CHECK(hop_bad("192.0.2.7.", "an address is written [192.0.2.7], not as a domain"));
	CHECK(hop_bad("h:65536", "bad port '65536'"));
	CHECK(hop_bad("h:", "bad port '' in 'h:'"));
	CHECK(hop_bad("h:2x5", "bad port '2x5'"));
	CHECK(hop_bad("h:-25", "bad port '-25'"));
	CHECK(hop_bad("h:+25", "bad port '+25'"));
	CHECK(hop_bad("[h]:", "bad port ''"));
	CHECK(hop_bad("", "empty next hop"));
	CHECK(hop_bad("[]", "empty host"));
	CHECK(hop_bad("[]:25", "empty host"));
	CHECK(hop_bad(":25", "empty host"));
	CHECK(hop_bad("[h", "missing ']'"));
	CHECK(hop_bad("[h]x", "unexpected text after ']'"));
	CHECK(hop_bad("[h] :25", "':25' after the next hop in '[h] :25' is not a flag"));
	CHECK(hop_bad("a..b", "empty label in host name in 'a..b'"));
	CHECK(hop_bad(".a", "empty label"));
	CHECK(hop_bad(".", "empty host name"));
	CHECK(hop_bad("a_b.com", "invalid character in host name"));
	CHECK(hop_bad("a b", "'b' after the next hop in 'a b' is not a flag"));
	CHECK(hop_bad("a\tb", "'b' after the next hop in 'a\tb' is not a flag"));
	CHECK(hop_bad("ex\xc3\xa4mple.com", "invalid character"));
	CHECK(hop_bad("-a.com", "label starts with '-'"));
	CHECK(hop_bad("a-.com", "label ends with '-'"));
	CHECK(hop_bad("a.com-", "label ends with '-'"));
	CHECK(hop_bad("a.com..", "empty label"));
	CHECK(hop_bad("::1", "IPv6 address must be in brackets"));
	CHECK(hop_bad("::1:25", "IPv6 address must be in brackets"));
	CHECK(hop_bad("[IPv6:1.2.3.4]", "bad IPv6 address"));
	CHECK(hop_bad("[IPv6:zz::1]", "bad IPv6 address"));
	CHECK(hop_bad("[IPv6:]", "bad IPv6 address"));
	{
		char name[300];

		memset(name, 'a', 64);
		strcpy(name + 64, ".com");
		CHECK(hop_bad(name, "label longer than 63 characters"));
		memset(name, 'c', 254);
		for (int i = 50; i < 254; i += 50)
			name[i] = '.';
		name[254] = '\0';
		CHECK(hop_bad(name, "host name longer than 253 characters"));
		name[253] = '.'; /* 253 + trailing dot: fine */
		CHECK(route_parse_hop(name, &h, err, sizeof(err)) == 0 && strlen(h.host) == 253);
	}
}

TEST(hop_text)
{
	CHECK_STR(text_of("[mail.example.com]:2525"), "[mail.example.com]:2525");
	CHECK_STR(text_of("[mail.example.com]"), "[mail.example.com]:25");
	CHECK_STR(text_of("Mail.Example.com."), "mail.example.com:25");
	CHECK_STR(text_of("mail.example.com:587"), "mail.example.com:587");
	CHECK_STR(text_of("1.2.3.4"), "[1.2.3.4]:25");
	CHECK_STR(text_of("[1.2.3.4]:2525"), "[1.2.3.4]:2525");
	CHECK_STR(text_of("[IPv6:::1]:25"), "[::1]:25");
	CHECK_STR(text_of("[::1]"), "[::1]:25");
	/* the text parses back to the same hop */
	CHECK_STR(text_of(text_of("[IPv6:2001:db8::5]:26")), "[2001:db8::5]:26");
	CHECK_STR(text_of(text_of("relay.example:2525")), "relay.example:2525");
	/* implicit TLS: the flag is part of the text, and parses back */
	CHECK_STR(text_of("[mail.example.com]:465 smtps"), "[mail.example.com]:465 smtps");
	CHECK_STR(text_of("mail.example.com:465  SMTPS"), "mail.example.com:465 smtps");
	CHECK_STR(text_of(text_of("[::1]:465 smtps")), "[::1]:465 smtps");
	CHECK_STR(text_of("[mail.example.com]:465 "), "[mail.example.com]:465");
	{
		struct route_hop h;
		char err[200];

		CHECK(route_parse_hop("[h.example]:465 smtps", &h, err, sizeof(err)) == 0);
		CHECK(h.smtps && !h.mx && h.port == 465);
		CHECK(route_parse_hop("[h.example]:465", &h, err, sizeof(err)) == 0);
		CHECK(!h.smtps);
		CHECK(route_parse_hop("[h.example]:465 starttls", &h, err, sizeof(err)) == -1);
		CHECK_STR(err,
		          "'starttls' after the next hop in '[h.example]:465 starttls' is not a "
		          "flag (smtps: implicit TLS)");
		CHECK(route_parse_hop("[h.example]:99999 smtps", &h, err, sizeof(err)) == -1);
		CHECK_STR(err, "bad port '99999' in '[h.example]:99999'");
	}
	{
		char small[8];
		struct route_hop h;
		char err[64];

		CHECK(route_parse_hop("[mail.example.com]:2525", &h, err, sizeof(err)) == 0);
		route_hop_text(&h, small, sizeof(small));
		CHECK_STR(small, "[mail.e"); /* truncated, terminated */
	}
}

/* ---- TransportTable ---- */

static const char table_text[] = "# TransportTable for the tests\n"
                                 "\n"
                                 "example.com      [exact.example.net]:2525\n"
                                 ".example.com\t[sub.example.net]   # any subdomain\n"
                                 "  .B.Example.COM.   b.example.net:587\n"
                                 ".com             com.example.net\n"
                                 "literal.test     [10.0.0.1]\n"
                                 "v6.test          [IPv6:::1]:2526\n"
                                 "[192.0.2.7]      [lit-route.example.net]\n"
                                 "[IPv6:2001:db8::7] [v6-route.example.net]\n"
                                 "\t\n"
                                 "# the end\n";

TEST(table_load_ok)
{
	char err[512];
	struct route_table *t = load(table_text, err, sizeof(err));

	CHECK(t != NULL);
	if (t == NULL) {
		printf("  %s\n", err);
		return;
	}
	CHECK_STR(lookup(t, NULL, "example.com"), "[exact.example.net]:2525");
	CHECK_STR(lookup(t, NULL, "literal.test"), "[10.0.0.1]:25 literal");
	CHECK_STR(lookup(t, NULL, "v6.test"), "[::1]:2526 literal");
	route_table_free(t);

	/* empty and comment-only files are tables without entries */
	t = load("", err, sizeof(err));
	CHECK(t != NULL);
	CHECK_STR(lookup(t, NULL, "example.com"), "example.com:25");
	route_table_free(t);
	t = load("# nothing\n\n   # still nothing", err, sizeof(err));
	CHECK(t != NULL);
	route_table_free(t);
	/* no newline at the end, CRLF lines */
	t = load("a.test [x.test]\r\nb.test y.test:26", err, sizeof(err));
	CHECK(t != NULL);
	CHECK_STR(lookup(t, NULL, "a.test"), "[x.test]:25");
	CHECK_STR(lookup(t, NULL, "b.test"), "y.test:26");
	route_table_free(t);
	/* the smtps flag: its own destination (the text names it) */
	t = load("a.test [x.test]:465 smtps\nb.test\t[x.test]:465\tSMTPS  # implicit TLS\n"
	         "c.test [x.test]:465\n",
	         err, sizeof(err));
	CHECK(t != NULL);
	CHECK_STR(lookup(t, NULL, "a.test"), "[x.test]:465 smtps");
	CHECK_STR(lookup(t, NULL, "b.test"), "[x.test]:465 smtps");
	CHECK_STR(lookup(t, NULL, "c.test"), "[x.test]:465");
	route_table_free(t);
	route_table_free(NULL);
}

TEST(table_load_errors)
{
	char err[512];
	struct route_table *t;

	CHECK(table_fails("a.test [x]\nb.test [h]:99999\n", 2, "bad port '99999' in '[h]:99999'"));
	CHECK(table_fails("# c\n\nb.test a..b\n", 3, "empty label in host name in 'a..b'"));
	CHECK(table_fails("a.test\n", 1, "expected 'domain nexthop' or 'domain nexthop smtps'"));
	/* an address without its brackets is no name to look up MX for */
	CHECK(table_fails("a.test 192.0.2.7.\n", 1,
	                  "an address is written [192.0.2.7], not as a domain in '192.0.2.7.'"));
	CHECK(
	    table_fails("a.test [x] extra\n", 1,
	                "'extra' after the next hop in '[x] extra' is not a flag (smtps: implicit "
	                "TLS)"));
	CHECK(table_fails("a.test [x] smtps more\n", 1,
	                  "expected 'domain nexthop' or 'domain nexthop smtps'"));
	CHECK(table_fails("ok.test x\nbad_key.test [x]\n", 2,
	                  "invalid character in host name 'bad_key.test'"));
	CHECK(table_fails("a..test [x]\n", 1, "empty label in host name 'a..test'"));
	CHECK(table_fails(". [x]\n", 1, "bad domain '.'"));
	CHECK(table_fails("..a [x]\n", 1, "bad domain '..a'"));
	CHECK(table_fails("[1.2.3] [x]\n", 1, "bad address literal '[1.2.3]'"));
	CHECK(table_fails("[1.2.3.4 [x]\n", 1, "bad address literal '[1.2.3.4'"));
	/* duplicates, however spelled: reported on the later line */
	CHECK(table_fails("a.test [x]\nb.test [y]\nA.Test. [z]\n", 3,
	                  "duplicate key 'a.test' (first on line 1)"));
	CHECK(table_fails(".a.test [x]\n.A.TEST [y]\n", 2,
	                  "duplicate key '.a.test' (first on line 1)"));
	CHECK(table_fails("[IPv6:::1] [x]\n[ipv6:0::1] [y]\n", 2,
	                  "duplicate key '[ipv6:::1]' (first on line 1)"));
	/* a domain and its ".domain" are different keys */
	t = load("a.test [x]\n.a.test [y]\n", err, sizeof(err));
	CHECK(t != NULL);
	route_table_free(t);
	/* a file that is not there */
	t = route_table_load("/nonexistent/transport", err, sizeof(err));
	CHECK(t == NULL);
	CHECK_STR(err, "/nonexistent/transport: No such file or directory");
}

TEST(lookup_precedence)
{
	char err[512];
	struct route_table *t = load(table_text, err, sizeof(err));
	struct route_hop smart;

	CHECK(t != NULL);
	if (t == NULL)
		return;
	CHECK(route_parse_hop("[smart.example.net]:587", &smart, err, sizeof(err)) == 0);
	/* exact key beats every ".parent" entry */
	CHECK_STR(lookup(t, &smart, "example.com"), "[exact.example.net]:2525");
	/* ".parent" entries, longest first */
	CHECK_STR(lookup(t, &smart, "a.example.com"), "[sub.example.net]:25");
	CHECK_STR(lookup(t, &smart, "a.b.example.com"), "b.example.net:587");
	CHECK_STR(lookup(t, &smart, "x.y.b.example.com"), "b.example.net:587");
	/* ".b.example.com" does not match b.example.com itself */
	CHECK_STR(lookup(t, &smart, "b.example.com"), "[sub.example.net]:25");
	CHECK_STR(lookup(t, &smart, "other.com"), "com.example.net:25");
	CHECK_STR(lookup(t, &smart, "com"), "[smart.example.net]:587");
	/* then the smart host, then the domain's own MX */
	CHECK_STR(lookup(t, &smart, "example.org"), "[smart.example.net]:587");
	CHECK_STR(lookup(t, NULL, "example.org"), "example.org:25");
	CHECK_STR(lookup(NULL, &smart, "example.com"), "[smart.example.net]:587");
	CHECK_STR(lookup(NULL, NULL, "example.com"), "example.com:25");
	route_table_free(t);
}

TEST(lookup_case_and_dot)
{
	char err[512];
	struct route_table *t = load(table_text, err, sizeof(err));
	struct route_hop h;

	CHECK(t != NULL);
	if (t == NULL)
		return;
	CHECK_STR(lookup(t, NULL, "EXAMPLE.COM"), "[exact.example.net]:2525");
	CHECK_STR(lookup(t, NULL, "Example.Com."), "[exact.example.net]:2525");
	CHECK_STR(lookup(t, NULL, "A.B.EXAMPLE.COM."), "b.example.net:587");
	CHECK_STR(lookup(t, NULL, "Other.ORG."), "other.org:25");
	route_lookup(t, NULL, "Other.ORG.", &h);
	CHECK_STR(h.host, "other.org");
	CHECK(h.port == 25 && h.mx && !h.literal);
	route_table_free(t);
}

TEST(lookup_literal_domains)
{
	char err[512];
	struct route_table *t = load(table_text, err, sizeof(err));
	struct route_hop smart, h;

	CHECK(t != NULL);
	if (t == NULL)
		return;
	CHECK(route_parse_hop("[smart.example.net]:587", &smart, err, sizeof(err)) == 0);
	route_lookup(t, NULL, "[1.2.3.4]", &h);
	CHECK_STR(h.host, "1.2.3.4");
	CHECK(h.port == 25 && !h.mx && h.literal);
	CHECK_STR(lookup(NULL, NULL, "[1.2.3.4]"), "[1.2.3.4]:25 literal");
	CHECK_STR(lookup(t, NULL, "[IPv6:::1]"), "[::1]:25 literal");
	CHECK_STR(lookup(t, NULL, "[IPv6:2001:DB8:0::9]"), "[2001:db8::9]:25 literal");
	/* the table says otherwise */
	CHECK_STR(lookup(t, NULL, "[192.0.2.7]"), "[lit-route.example.net]:25");
	CHECK_STR(lookup(t, NULL, "[IPv6:2001:db8:0::7]"), "[v6-route.example.net]:25");
	/* ".parent" entries never match a literal ("[1.2.3.com]" is no
	 * literal either: it is passed on and fails its MX lookup) */
	CHECK_STR(lookup(t, NULL, "[10.0.0.com]"), "[10.0.0.com]:25");
	/* a smart host takes literal domains too */
	CHECK_STR(lookup(t, &smart, "[1.2.3.4]"), "[smart.example.net]:587");
	CHECK_STR(lookup(t, &smart, "[192.0.2.7]"), "[lit-route.example.net]:25");
	/* a recipient domain is never a ".parent" key */
	CHECK_STR(lookup(t, NULL, ".example.com"), ".example.com:25");
	route_table_free(t);
}

/* ---- MX ordering ---- */

TEST(order_mx_sorted)
{
	struct dns_mx mx[6];
	uint64_t seed = 1;

	set_mx(&mx[0], "c", 30);
	set_mx(&mx[1], "a", 10);
	set_mx(&mx[2], "e", 50);
	set_mx(&mx[3], "b", 20);
	set_mx(&mx[4], "d", 40);
	CHECK(route_order_mx(mx, 5, rnd_lcg, &seed) == 5);
	CHECK_STR(hosts(mx, 5), "a,b,c,d,e");
	/* preference 0 and 65535 */
	set_mx(&mx[0], "hi", 65535);
	set_mx(&mx[1], "lo", 0);
	CHECK(route_order_mx(mx, 2, rnd_zero, NULL) == 2);
	CHECK_STR(hosts(mx, 2), "lo,hi");
	/* no rnd: sorted, equal preferences keep their order */
	set_mx(&mx[0], "y", 10);
	set_mx(&mx[1], "x", 5);
	set_mx(&mx[2], "z", 10);
	CHECK(route_order_mx(mx, 3, NULL, NULL) == 3);
	CHECK_STR(hosts(mx, 3), "x,y,z");
	CHECK(route_order_mx(mx, 0, rnd_zero, NULL) == 0);
}

TEST(order_mx_shuffles_equal)
{
	struct dns_mx mx[6];
	int seen_ab = 0, seen_ba = 0, perms[6] = {0};
	const char *names[6] = {"p,q,r", "p,r,q", "q,p,r", "q,r,p", "r,p,q", "r,q,p"};
	char first[64];

	/* deterministic rnd: different choices, different orders, and the
	 * other preferences stay where they belong */
	set_mx(&mx[0], "b", 10);
	set_mx(&mx[1], "z", 90);
	set_mx(&mx[2], "a", 10);
	set_mx(&mx[3], "y", 5);
	CHECK(route_order_mx(mx, 4, rnd_zero, NULL) == 4);
	snprintf(first, sizeof(first), "%s", hosts(mx, 4));
	set_mx(&mx[0], "b", 10);
	set_mx(&mx[1], "z", 90);
	set_mx(&mx[2], "a", 10);
	set_mx(&mx[3], "y", 5);
	CHECK(route_order_mx(mx, 4, rnd_last, NULL) == 4);
	CHECK(strcmp(first, hosts(mx, 4)) != 0);
	CHECK(strcmp(first, "y,a,b,z") == 0 || strcmp(first, "y,b,a,z") == 0);
	CHECK(strcmp(hosts(mx, 4), "y,a,b,z") == 0 || strcmp(hosts(mx, 4), "y,b,a,z") == 0);
	/* out-of-range rnd values stay inside the run */
	set_mx(&mx[0], "b", 10);
	set_mx(&mx[1], "a", 10);
	set_mx(&mx[2], "c", 20);
	CHECK(route_order_mx(mx, 3, rnd_huge, NULL) == 3);
	CHECK(strcmp(mx[2].host, "c") == 0);
	/* over many seeds both orders of two, and all six of three, appear,
	 * and the neighbours never move */
	for (uint64_t s = 1; s <= 200; s++) {
		uint64_t seed = s * 0x9e3779b97f4a7c15ULL;

		set_mx(&mx[0], "a", 10);
		set_mx(&mx[1], "b", 10);
		set_mx(&mx[2], "first", 1);
		CHECK(route_order_mx(mx, 3, rnd_lcg, &seed) == 3);
		CHECK_STR(mx[0].host, "first");
		if (strcmp(hosts(mx + 1, 2), "a,b") == 0)
			seen_ab++;
		else if (strcmp(hosts(mx + 1, 2), "b,a") == 0)
			seen_ba++;

		set_mx(&mx[0], "last", 99);
		set_mx(&mx[1], "p", 7);
		set_mx(&mx[2], "q", 7);
		set_mx(&mx[3], "r", 7);
		CHECK(route_order_mx(mx, 4, rnd_lcg, &seed) == 4);
		CHECK_STR(mx[3].host, "last");
		for (int i = 0; i < 6; i++)
			if (strcmp(hosts(mx, 3), names[i]) == 0)
				perms[i]++;
	}
	CHECK(seen_ab > 0 && seen_ba > 0 && seen_ab + seen_ba == 200);
	for (int i = 0; i < 6; i++)
		CHECK(perms[i] > 0);
	printf("  two equal: %d a,b / %d b,a; three equal: %d %d %d %d %d %d\n", seen_ab, seen_ba,
	       perms[0], perms[1], perms[2], perms[3], perms[4], perms[5]);
}

TEST(order_mx_null)
{
	struct dns_mx mx[4];

	/* RFC 7505: one record, host "" */
	set_mx(&mx[0], "", 0);
	CHECK(route_order_mx(mx, 1, rnd_zero, NULL) == -1);
	set_mx(&mx[0], "", 0);
	set_mx(&mx[1], "", 0);
	CHECK(route_order_mx(mx, 2, rnd_zero, NULL) == -1);
	/* "" among real exchangers: dropped */
	set_mx(&mx[0], "b", 20);
	set_mx(&mx[1], "", 0);
	set_mx(&mx[2], "a", 10);
	CHECK(route_order_mx(mx, 3, rnd_zero, NULL) == 2);
	CHECK_STR(hosts(mx, 2), "a,b");
	set_mx(&mx[0], "", 0);
	set_mx(&mx[1], "only", 10);
	set_mx(&mx[2], "", 5);
	CHECK(route_order_mx(mx, 3, NULL, NULL) == 1);
	CHECK_STR(mx[0].host, "only");
}

int main(void)
{
	RUN(parse_hop_names);
	RUN(parse_hop_literals);
	RUN(parse_hop_errors);
	RUN(hop_text);
	RUN(table_load_ok);
	RUN(table_load_errors);
	RUN(lookup_precedence);
	RUN(lookup_case_and_dot);
	RUN(lookup_literal_domains);
	RUN(order_mx_sorted);
	RUN(order_mx_shuffles_equal);
	RUN(order_mx_null);
	UNIT_END("test_route");
}
