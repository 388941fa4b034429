/* test_tlsrpt: relay/tlsrpt.c, SMTP TLS Reporting (RFC 8460) as data: the
 * day file's lines (written, read back, hostile bytes neutralized, bad
 * lines refused), OpenSSL's verify results as result-types, a day's
 * aggregation, and the JSON report (its fields, the MTA-STS policy-string
 * and mx-host, counts and failure details). */
#include <openssl/x509_vfy.h>

#include "tlsrpt.h"
#include "unit.h"

static struct tlsrpt_event ev(const char *dom, enum tlsrpt_policy p, enum tlsrpt_result r,
                              const char *mx, const char *ip)
{
	struct tlsrpt_event e;

	memset(&e, 0, sizeof(e));
	e.when = 1796342400; /* 2026-12-04T00:00:00Z */
	snprintf(e.domain, sizeof(e.domain), "%s", dom);
	e.policy = p;
	e.result = r;
	snprintf(e.sending_ip, sizeof(e.sending_ip), "192.0.2.1");
	snprintf(e.mx_host, sizeof(e.mx_host), "%s", mx);
	snprintf(e.mx_ip, sizeof(e.mx_ip), "%s", ip);
	return e;
}

TEST(lines_round_trip)
{
	struct tlsrpt_event e = ev("example.com", TLSRPT_STS, TLSRPT_CERT_EXPIRED,
	                           "mx1.example.com", "2001:db8::25"),
	                    back;
	char buf[1024];
	size_t n = tlsrpt_line_format(&e, buf, sizeof(buf));

	CHECK_STR(buf, "v1 1796342400 example.com sts certificate-expired 192.0.2.1 "
	               "mx1.example.com 2001:db8::25\n");
	CHECK(n == strlen(buf));
	CHECK(tlsrpt_line_parse(buf, n, &back) == 0);
	CHECK(back.when == e.when && back.policy == TLSRPT_STS &&
	      back.result == TLSRPT_CERT_EXPIRED);
	CHECK_STR(back.domain, "example.com");
	CHECK_STR(back.mx_host, "mx1.example.com");
	CHECK_STR(back.mx_ip, "2001:db8::25");
	/* a lookup's failure: no host, no addresses */
	e = ev("example.org", TLSRPT_TLSA, TLSRPT_DNSSEC_INVALID, "", "");
	e.sending_ip[0] = '\0';
	n = tlsrpt_line_format(&e, buf, sizeof(buf));
	CHECK_STR(buf, "v1 1796342400 example.org tlsa dnssec-invalid - - -\n");
	CHECK(tlsrpt_line_parse(buf, n, &back) == 0 && back.mx_host[0] == '\0');
	/* a name with a space or a newline cannot add a field or a line */
	e = ev("evil.test x\nv1", TLSRPT_NO_POLICY, TLSRPT_SUCCESS, "a b", "1.2.3.4");
	n = tlsrpt_line_format(&e, buf, sizeof(buf));
	CHECK_STR(buf,
	          "v1 1796342400 evil.test?x?v1 no-policy-found success 192.0.2.1 a?b 1.2.3.4\n");
	CHECK(tlsrpt_line_parse(buf, n, &back) == 0);
	/* not lines of ours */
	CHECK(tlsrpt_line_parse("v2 1 a sts success - - -", 24, &back) < 0);
	CHECK(tlsrpt_line_parse("v1 1 a sts nonsense - - -", 25, &back) < 0);
	CHECK(tlsrpt_line_parse("v1 1 a dmarc success - - -", 26, &back) < 0);
	CHECK(tlsrpt_line_parse("v1 x a sts success - - -", 24, &back) < 0);
	CHECK(tlsrpt_line_parse("v1 1 a sts success - -", 22, &back) < 0);
	CHECK(tlsrpt_line_parse("v1 1 a sts success - - - extra", 30, &back) < 0);
}

TEST(verify_results)
{
	CHECK(tlsrpt_from_verify(X509_V_ERR_DANE_NO_MATCH, TLSRPT_TLSA) == TLSRPT_TLSA_INVALID);
	CHECK(tlsrpt_from_verify(X509_V_ERR_HOSTNAME_MISMATCH, TLSRPT_STS) ==
	      TLSRPT_CERT_HOST_MISMATCH);
	CHECK(tlsrpt_from_verify(X509_V_ERR_CERT_HAS_EXPIRED, TLSRPT_STS) == TLSRPT_CERT_EXPIRED);
	CHECK(tlsrpt_from_verify(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, TLSRPT_STS) ==
	      TLSRPT_STS_WEBPKI_INVALID);
	CHECK(tlsrpt_from_verify(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, TLSRPT_NO_POLICY) ==
	      TLSRPT_CERT_NOT_TRUSTED);
	CHECK(tlsrpt_from_verify(X509_V_OK, TLSRPT_TLSA) == TLSRPT_VALIDATION_FAILURE);
	CHECK_STR(tlsrpt_result_name(TLSRPT_STS_FETCH_ERROR), "sts-policy-fetch-error");
	CHECK_STR(tlsrpt_policy_name(TLSRPT_NO_POLICY), "no-policy-found");
}

TEST(day_and_report)
{
	struct tlsrpt_day *d = tlsrpt_day_new();
	struct tlsrpt_event e;
	static const char policy[] = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\n"
	                             "mx: *.example.net\r\nmax_age: 86400\r\n";
	struct tlsrpt_report_info info = {.date = "2026-12-04",
	                                  .organization = "relay.test",
	                                  .contact = "postmaster@relay.test",
	                                  .sts_policy = policy,
	                                  .sts_policy_len = sizeof(policy) - 1};
	char *buf = NULL;
	size_t len = 0;
	FILE *out;

	CHECK(d != NULL);
	for (int i = 0; i < 3; i++) {
		e = ev("example.com", TLSRPT_STS, TLSRPT_SUCCESS, "mx1.example.com", "192.0.2.25");
		CHECK(tlsrpt_day_add(d, &e) == 0);
	}
	for (int i = 0; i < 2; i++) {
		e = ev("example.com", TLSRPT_STS, TLSRPT_STS_WEBPKI_INVALID, "mx2.example.net",
		       "192.0.2.26");
		CHECK(tlsrpt_day_add(d, &e) == 0);
	}
	e = ev("other.test", TLSRPT_NO_POLICY, TLSRPT_STARTTLS_NOT_SUPPORTED, "mx.other.test",
	       "192.0.2.27");
	CHECK(tlsrpt_day_add(d, &e) == 0);
	CHECK_STR(tlsrpt_day_domain(d, 0), "example.com");
	CHECK_STR(tlsrpt_day_domain(d, 1), "other.test");
	CHECK(tlsrpt_day_domain(d, 2) == NULL);

	out = open_memstream(&buf, &len);
	tlsrpt_day_show(d, out);
	fclose(out);
	CHECK_STR(buf, "example.com sts successful=3 failed=2\n"
	               "    sts-webpki-invalid sessions=2 mx=mx2.example.net mx_ip=192.0.2.26 "
	               "sending_ip=192.0.2.1\n"
	               "other.test no-policy-found successful=0 failed=1\n"
	               "    starttls-not-supported sessions=1 mx=mx.other.test mx_ip=192.0.2.27 "
	               "sending_ip=192.0.2.1\n");
	free(buf);

	out = open_memstream(&buf, &len);
	tlsrpt_report_json(d, "example.com", &info, out);
	fclose(out);
	CHECK_STR(buf,
	          "{\"organization-name\": \"relay.test\", \"date-range\": {\"start-datetime\": "
	          "\"2026-12-04T00:00:00Z\", \"end-datetime\": \"2026-12-04T23:59:59Z\"}, "
	          "\"contact-info\": \"postmaster@relay.test\", \"report-id\": "
	          "\"2026-12-04_example.com@relay.test\", \"policies\": [{\"policy\": "
	          "{\"policy-type\": \"sts\", \"policy-string\": [\"version: STSv1\", \"mode: "
	          "enforce\", \"mx: mx1.example.com\", \"mx: *.example.net\", \"max_age: 86400\"], "
	          "\"mx-host\": [\"mx1.example.com\", \"*.example.net\"], \"policy-domain\": "
	          "\"example.com\"}, \"summary\": {\"total-successful-session-count\": 3, "
	          "\"total-failure-session-count\": 2}, \"failure-details\": [{\"result-type\": "
	          "\"sts-webpki-invalid\", \"sending-mta-ip\": \"192.0.2.1\", "
	          "\"receiving-mx-hostname\": \"mx2.example.net\", \"receiving-ip\": "
	          "\"192.0.2.26\", \"failed-session-count\": 2}]}]}\n");
	free(buf);
	/* a contact with a quote is escaped */
	info.contact = "a\"b\\c";
	out = open_memstream(&buf, &len);
	tlsrpt_report_json(d, "other.test", &info, out);
	fclose(out);
	CHECK(strstr(buf, "\"contact-info\": \"a\\\"b\\\\c\"") != NULL);
	CHECK(strstr(buf, "\"policy-type\": \"no-policy-found\", \"policy-domain\": "
	                  "\"other.test\"") != NULL);
	free(buf);
	tlsrpt_day_free(d);
}

static int rua(const char *txt, struct tlsrpt_rua *r)
{
	return tlsrpt_txt_parse(txt, strlen(txt), r);
}

TEST(rua_records)
{
	struct tlsrpt_rua r;

	CHECK(rua("v=TLSRPTv1; rua=mailto:reports@example.com", &r) == 1);
	CHECK(r.n == 1 && r.uri[0].mailto);
	CHECK_STR(r.uri[0].v, "reports@example.com");
	CHECK(
	    rua("v=TLSRPTv1;rua=mailto:a%2Bb@example.com?subject=x, https://rep.example.com/v1/x ;",
	        &r) == 1);
	CHECK(r.n == 2 && r.uri[0].mailto && !r.uri[1].mailto);
	CHECK_STR(r.uri[0].v, "a+b@example.com");
	CHECK_STR(r.uri[1].v, "https://rep.example.com/v1/x");
	/* another scheme is ignored; nothing usable left: unusable */
	CHECK(rua("v=TLSRPTv1; rua=ftp://x,mailto:ok@example.net", &r) == 1 && r.n == 1);
	CHECK(rua("v=TLSRPTv1; rua=ftp://x", &r) == -1);
	CHECK(rua("v=TLSRPTv1; rua=mailto:no-at", &r) == -1);
	CHECK(rua("v=TLSRPTv1; rua=mailto:a@b%0Ac", &r) == -1);
	CHECK(rua("v=TLSRPTv1", &r) == -1);
	CHECK(rua("v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d", &r) == -1);
	/* not a TLSRPT record */
	CHECK(rua("v=spf1 -all", &r) == 0);
	CHECK(rua("v=TLSRPTv2; rua=mailto:a@b", &r) == 0);
	CHECK(rua("rua=mailto:a@b; v=TLSRPTv1", &r) == 0);
}

int main(void)
{
	RUN(rua_records);
	RUN(lines_round_trip);
	RUN(verify_results);
	RUN(day_and_report);
	UNIT_END("test_tlsrpt");
}
