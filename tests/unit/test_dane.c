/* test_dane: relay/dane.c, what RFC 7672 makes of one host's lookups:
 * which TLSA records are usable, when the TLSA lookup is worth asking, the
 * verdict under dane and dane-only for each combination of answers (a
 * failed or bogus lookup defers and never becomes clear text), and the
 * copy of the usable records kept for the host's connections. */
#include "config.h"
#include "dane.h"
#include "unit.h"

static unsigned char h32[32], h64[64], cert[300];

static struct dns_tlsa rec(unsigned u, unsigned s, unsigned m, const unsigned char *d, size_t len)
{
	return (struct dns_tlsa){.usage = (unsigned char)u,
	                         .selector = (unsigned char)s,
	                         .mtype = (unsigned char)m,
	                         .data = d,
	                         .len = len};
}

TEST(usable_records)
{
	struct dns_tlsa t;

	t = rec(3, 1, 1, h32, 32);
	CHECK(dane_usable(&t));
	t = rec(2, 0, 1, h32, 32);
	CHECK(dane_usable(&t));
	t = rec(3, 0, 2, h64, 64);
	CHECK(dane_usable(&t));
	t = rec(3, 0, 0, cert, sizeof(cert));
	CHECK(dane_usable(&t));
	/* PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (section 3.1.3) */
	t = rec(0, 1, 1, h32, 32);
	CHECK(!dane_usable(&t));
	t = rec(1, 1, 1, h32, 32);
	CHECK(!dane_usable(&t));
	t = rec(4, 1, 1, h32, 32);
	CHECK(!dane_usable(&t));
	/* unknown selector or matching type; digests of the wrong length */
	t = rec(3, 2, 1, h32, 32);
	CHECK(!dane_usable(&t));
	t = rec(3, 1, 3, h32, 32);
	CHECK(!dane_usable(&t));
	t = rec(3, 1, 1, h32, 31);
	CHECK(!dane_usable(&t));
	t = rec(3, 1, 2, h32, 32);
	CHECK(!dane_usable(&t));
	t = rec(3, 1, 0, h32, 0);
	CHECK(!dane_usable(&t));
}

static struct dane_facts secure_facts(const struct dns_tlsa *t, size_t n)
{
	return (struct dane_facts){.mx_secure = true,
	                           .addr_st = DNS_OK,
	                           .addr_secure = true,
	                           .tlsa_asked = true,
	                           .tlsa_st = DNS_OK,
	                           .tlsa_secure = true,
	                           .tlsa = t,
	                           .ntlsa = n};
}

TEST(tlsa_asked_only_after_secure_mx_and_addresses)
{
	struct dane_facts f = secure_facts(NULL, 0);

	CHECK(dane_want_tlsa(&f));
	f.mx_secure = false;
	CHECK(!dane_want_tlsa(&f));
	f = secure_facts(NULL, 0);
	f.addr_secure = false;
	CHECK(!dane_want_tlsa(&f));
	f = secure_facts(NULL, 0);
	f.addr_st = DNS_BOGUS;
	CHECK(!dane_want_tlsa(&f));
}

TEST(verdicts_under_dane_and_dane_only)
{
	struct dns_tlsa good[2] = {rec(0, 1, 1, h32, 32), rec(3, 1, 1, h32, 32)};
	struct dns_tlsa pkix[2] = {rec(0, 1, 1, h32, 32), rec(1, 0, 1, h32, 32)};
	const char *why;
	struct dane_facts f;
	static const struct {
		int policy;
		enum dane_verdict want;
	} both[2] = {{TLS_POLICY_DANE, DANE_NONE}, {TLS_POLICY_DANE_ONLY, DANE_DEFER}};

	f = secure_facts(good, 2);
	CHECK(dane_decide(TLS_POLICY_DANE, &f, &why) == DANE_AUTH);
	CHECK_STR(why, "usable TLSA records");
	CHECK(dane_decide(TLS_POLICY_DANE_ONLY, &f, &why) == DANE_AUTH);
	/* all unusable: TLS still mandatory, unauthenticated */
	f = secure_facts(pkix, 2);
	CHECK(dane_decide(TLS_POLICY_DANE, &f, &why) == DANE_ENCRYPT);
	CHECK(dane_decide(TLS_POLICY_DANE_ONLY, &f, &why) == DANE_ENCRYPT);

	/* a failed or bogus TLSA lookup defers under both: never a downgrade */
	f = secure_facts(NULL, 0);
	f.tlsa_st = DNS_TEMPFAIL;
	f.tlsa_secure = false;
	CHECK(dane_decide(TLS_POLICY_DANE, &f, &why) == DANE_DEFER);
	CHECK_STR(why, "TLSA lookup failed");
	f.tlsa_st = DNS_BOGUS;
	CHECK(dane_decide(TLS_POLICY_DANE, &f, &why) == DANE_DEFER);
	CHECK(unit_prefix(why, "TLSA records bogus"));
	f = secure_facts(NULL, 0);
	f.addr_st = DNS_BOGUS;
	f.tlsa_asked = false;
	CHECK(dane_decide(TLS_POLICY_DANE, &f, &why) == DANE_DEFER);
	CHECK(unit_prefix(why, "address records bogus"));

	/* no DANE for the host: may under dane, deferred under dane-only */
	for (int i = 0; i < 2; i++) {
		f = secure_facts(NULL, 0);
		f.tlsa_st = DNS_NODATA;
		CHECK(dane_decide(both[i].policy, &f, &why) == both[i].want);
		CHECK_STR(why, "no TLSA records");
		f.tlsa_st = DNS_NXDOMAIN;
		CHECK(dane_decide(both[i].policy, &f, &why) == both[i].want);
		f = secure_facts(good, 2);
		f.tlsa_secure = false;
		CHECK(dane_decide(both[i].policy, &f, &why) == both[i].want);
		CHECK_STR(why, "TLSA records not DNSSEC-signed");
		f = secure_facts(good, 2);
		f.mx_secure = false;
		f.tlsa_asked = false;
		CHECK(dane_decide(both[i].policy, &f, &why) == both[i].want);
		CHECK_STR(why, "MX records not DNSSEC-signed");
		f = secure_facts(good, 2);
		f.addr_secure = false;
		f.tlsa_asked = false;
		CHECK(dane_decide(both[i].policy, &f, &why) == both[i].want);
		CHECK_STR(why, "address records not DNSSEC-signed");
	}
}

TEST(set_keeps_only_usable_records)
{
	struct dns_tlsa t[4] = {rec(1, 1, 1, h32, 32), rec(3, 1, 1, h32, 32),
	                        rec(2, 0, 0, cert, sizeof(cert)), rec(3, 1, 2, h32, 32)};
	struct dane_tlsa_set *s;

	for (size_t i = 0; i < sizeof(cert); i++)
		cert[i] = (unsigned char)i;
	for (size_t i = 0; i < sizeof(h32); i++)
		h32[i] = (unsigned char)(0xa0 + i);
	s = dane_set_copy(t, 4);
	CHECK(s != NULL && s->n == 2);
	if (s != NULL && s->n == 2) {
		CHECK(s->rec[0].usage == 3 && s->rec[0].selector == 1 && s->rec[0].mtype == 1);
		CHECK(s->rec[0].len == 32 && memcmp(s->rec[0].data, h32, 32) == 0);
		CHECK(s->rec[0].data != h32); /* a copy: the answer goes away */
		CHECK(s->rec[1].usage == 2 && s->rec[1].len == sizeof(cert));
		CHECK(memcmp(s->rec[1].data, cert, sizeof(cert)) == 0);
	}
	dane_set_free(s);
	CHECK(dane_set_copy(t, 1) == NULL); /* none usable */
	CHECK(dane_set_copy(NULL, 0) == NULL);
}

int main(void)
{
	RUN(usable_records);
	RUN(tlsa_asked_only_after_secure_mx_and_addresses);
	RUN(verdicts_under_dane_and_dane_only);
	RUN(set_keeps_only_usable_records);
	UNIT_END("test_dane");
}
