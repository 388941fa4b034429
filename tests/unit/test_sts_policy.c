/* test_sts_policy: relay/sts_policy.c, MTA-STS (RFC 8461) as text: the
 * _mta-sts TXT record, the policy file (its required fields, modes,
 * max_age's cap, mx patterns, what makes it unusable), and the matching of
 * MX host names against the patterns (a wildcard is one label). */
#include "sts_policy.h"
#include "unit.h"

static int txt(const char *s, char *id)
{
	return sts_txt_parse(s, strlen(s), id);
}

TEST(txt_records)
{
	char id[STS_ID_MAX + 1];

	CHECK(txt("v=STSv1; id=20160831085700Z;", id) == 1);
	CHECK_STR(id, "20160831085700Z");
	CHECK(txt("v=STSv1;id=abc", id) == 1 && strcmp(id, "abc") == 0);
	CHECK(txt("  v = STSv1 ;  id = X1 ; ext=whatever ", id) == 1 && strcmp(id, "X1") == 0);
	/* not an MTA-STS record: ignored */
	CHECK(txt("v=spf1 -all", id) == 0);
	CHECK(txt("hello", id) == 0);
	CHECK(txt("id=1; v=STSv1", id) == 0);
	CHECK(txt("v=STSv2; id=1", id) == 0);
	/* an MTA-STS record, malformed */
	CHECK(txt("v=STSv1", id) == -1);
	CHECK(txt("v=STSv1; id=", id) == -1);
	CHECK(txt("v=STSv1; id=a-b", id) == -1);
	CHECK(txt("v=STSv1; id=123456789012345678901234567890123", id) == -1);
	CHECK(txt("v=STSv1; id=1; id=2", id) == -1);
	CHECK(txt("v=STSv1; junk", id) == -1);
}

static int parse(const char *s, struct sts_policy *p, char *err)
{
	return sts_policy_parse(s, strlen(s), p, err, 128);
}

TEST(policy_files)
{
	struct sts_policy p;
	char err[128];

	CHECK(parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
	            "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
	            &p, err) == 0);
	CHECK(p.mode == STS_MODE_ENFORCE && p.max_age == 604800 && p.nmx == 3);
	CHECK_STR(p.mx[1], "*.example.net");
	/* LF only, blanks, unknown keys, any order, upper case names */
	CHECK(
	    parse("mode:testing\nmax_age:  86400 \nfuture: x\nversion: STSv1\nmx: MX.Example.COM\n",
	          &p, err) == 0);
	CHECK(p.mode == STS_MODE_TESTING && p.max_age == 86400 && p.nmx == 1);
	CHECK_STR(p.mx[0], "mx.example.com");
	CHECK(parse("version: STSv1\nmode: none\nmax_age: 0\n", &p, err) == 0);
	CHECK(p.mode == STS_MODE_NONE && p.nmx == 0);
	/* max_age above a year is capped */
	CHECK(parse("version: STSv1\nmode: none\nmax_age: 9999999999\n", &p, err) == 0);
	CHECK(p.max_age == STS_MAX_AGE);

	CHECK(parse("mode: enforce\nmx: a.example\nmax_age: 1\n", &p, err) == -1);
	CHECK_STR(err, "version missing");
	CHECK(parse("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmax_age: 1\n", &p, err) == -1);
	CHECK_STR(err, "no mx line");
	CHECK(parse("version: STSv1\nmode: enforce\nmx: a\n", &p, err) == -1);
	CHECK_STR(err, "max_age missing");
	CHECK(parse("version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: ..\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: .a\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmx: mx.example.\nmax_age: 1\n", &p, err) == 0);
	CHECK_STR(p.mx[0], "mx.example");
	CHECK(parse("version: STSv1\nmode enforce\nmx: a\nmax_age: 1\n", &p, err) == -1);
	CHECK(parse("version: STSv1\nmode: enforce\nmode: none\nmx: a\nmax_age: 1\n", &p, err) ==
	      -1);
}

TEST(mx_patterns)
{
	struct sts_policy p;
	char err[128];

	CHECK(parse("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
	            "max_age: 60\n",
	            &p, err) == 0);
	CHECK(sts_mx_match(&p, "mail.example.com"));
	CHECK(sts_mx_match(&p, "MAIL.example.COM"));
	CHECK(sts_mx_match(&p, "mail.example.com."));
	CHECK(!sts_mx_match(&p, "mail2.example.com"));
	CHECK(!sts_mx_match(&p, "example.com"));
	CHECK(sts_mx_match(&p, "mx1.example.net"));
	CHECK(!sts_mx_match(&p, "example.net"));
	CHECK(!sts_mx_match(&p, "a.b.example.net"));
	CHECK(!sts_mx_match(&p, "mx1.example.net.evil.test"));
	CHECK(!sts_mx_match(&p, ".example.net"));
}

int main(void)
{
	RUN(txt_records);
	RUN(policy_files);
	RUN(mx_patterns);
	UNIT_END("test_sts_policy");
}
