/* tlsrpt: SMTP TLS Reporting (RFC 8460) as data: the result of each TLS
 * session (or policy lookup) toward a recipient domain, one line each in a
 * file per UTC day, and the aggregate report made from such a file (the
 * RFC's JSON).  Pure code. */
#ifndef KRELAY_TLSRPT_H
#define KRELAY_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define TLSRPT_NAME_MAX 255

/* policy-type (section 4.4) */
enum tlsrpt_policy { TLSRPT_STS, TLSRPT_TLSA, TLSRPT_NO_POLICY, TLSRPT_POLICIES };

/* result-type (section 4.3), and success */
enum tlsrpt_result {
	TLSRPT_SUCCESS,
	TLSRPT_STARTTLS_NOT_SUPPORTED,
	TLSRPT_CERT_HOST_MISMATCH,
	TLSRPT_CERT_EXPIRED,
	TLSRPT_CERT_NOT_TRUSTED,
	TLSRPT_VALIDATION_FAILURE,
	TLSRPT_TLSA_INVALID,
	TLSRPT_DNSSEC_INVALID,
	TLSRPT_DANE_REQUIRED,
	TLSRPT_STS_FETCH_ERROR,
	TLSRPT_STS_INVALID,
	TLSRPT_STS_WEBPKI_INVALID,
	TLSRPT_RESULTS
};

const char *tlsrpt_policy_name(enum tlsrpt_policy p);
const char *tlsrpt_result_name(enum tlsrpt_result r);

/* A failed handshake's result-type from OpenSSL's verify result
 * (X509_V_ERR_*, X509_V_OK when the failure was not the certificate's):
 * under DANE a certificate no record matches is tlsa-invalid; under
 * MTA-STS an untrusted one is sts-webpki-invalid. */
enum tlsrpt_result tlsrpt_from_verify(long verify, enum tlsrpt_policy p);

/* One event, as written to the day's file. */
struct tlsrpt_event {
	int64_t when;                     /* unix seconds */
	char domain[TLSRPT_NAME_MAX + 1]; /* the policy domain */
	enum tlsrpt_policy policy;
	enum tlsrpt_result result;
	char sending_ip[48];               /* "" when unknown */
	char mx_host[TLSRPT_NAME_MAX + 1]; /* "" when none (a lookup failure) */
	char mx_ip[48];
};

/* "v1 WHEN DOMAIN POLICY RESULT SENDING_IP MX_HOST MX_IP\n" ("-" for an
 * empty field; bytes outside a DNS name's or an address's alphabet become
 * '?').  Returns the length (like snprintf). */
size_t tlsrpt_line_format(const struct tlsrpt_event *e, char *buf, size_t cap);
/* 0, or -1 when the line is not one (it is skipped). */
int tlsrpt_line_parse(const char *line, size_t len, struct tlsrpt_event *e);

/* The day's events, aggregated per domain, policy and failure. */
struct tlsrpt_day;
struct tlsrpt_day *tlsrpt_day_new(void);
void tlsrpt_day_free(struct tlsrpt_day *d);
/* -1 when out of memory. */
int tlsrpt_day_add(struct tlsrpt_day *d, const struct tlsrpt_event *e);
/* The domains seen, in order of first appearance: name, or NULL past the end. */
const char *tlsrpt_day_domain(const struct tlsrpt_day *d, size_t i);

/* `krelay tlsrpt --show`: one line per domain and policy type with its
 * counts, then one per failure kind. */
void tlsrpt_day_show(const struct tlsrpt_day *d, FILE *out);

/* The report for one domain (section 4.4): date (YYYY-MM-DD), the
 * reporting organization and contact, and for policy-type sts the cached
 * policy text (NULL: none kept), whose mx lines become mx-host. */
struct tlsrpt_report_info {
	const char *date;
	const char *organization;
	const char *contact;
	const char *sts_policy;
	size_t sts_policy_len;
};
void tlsrpt_report_json(const struct tlsrpt_day *d, const char *domain,
                        const struct tlsrpt_report_info *info, FILE *out);

/* Where a domain wants its reports: the rua= of its _smtp._tls TXT record
 * (section 3): "mailto:" addresses (percent-decoded, without ?query) and
 * "https:" URLs. */
#define TLSRPT_RUA_MAX 8
struct tlsrpt_rua {
	size_t n;
	struct {
		bool mailto;
		char v[512]; /* the address, or the whole URL */
	} uri[TLSRPT_RUA_MAX];
};
/* One TXT record: 1 when it is "v=TLSRPTv1; rua=..." with at least one
 * usable URI; 0 when it is another kind of record; -1 when it starts
 * v=TLSRPTv1 and is unusable. */
int tlsrpt_txt_parse(const char *txt, size_t len, struct tlsrpt_rua *r);

#endif
