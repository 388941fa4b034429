/* dane: what RFC 7672 (SMTP security via opportunistic DANE TLS) makes of
 * one next-hop host's DNS answers, and the TLSA records kept for its
 * connections.  Pure code: the lookups are dns.c's, the matching is
 * OpenSSL's own (SSL_dane_enable, SSL_dane_tlsa_add, in smtp_client.c). */
#ifndef KRELAY_DANE_H
#define KRELAY_DANE_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

enum dane_verdict {
	DANE_NONE,    /* no DANE for this host: dane goes as may, dane-only defers */
	DANE_AUTH,    /* usable TLSA records: TLS required, peer authenticated by them */
	DANE_ENCRYPT, /* TLSA records, none usable: TLS required, not authenticated */
	DANE_DEFER,   /* a lookup failed or was bogus: this host is not used now */
};

/* One host's lookups, as the resolver answered them. */
struct dane_facts {
	bool mx_secure; /* the MX RRset (or the no-MX denial), or a configured host */
	enum dns_status addr_st;
	bool addr_secure;
	bool tlsa_asked; /* false when an insecure step made it pointless */
	enum dns_status tlsa_st;
	bool tlsa_secure;
	const struct dns_tlsa *tlsa; /* the records (tlsa_st DNS_OK) */
	size_t ntlsa;
};

/* Whether a record can authenticate an SMTP server (RFC 7672 section 3.1):
 * DANE-TA(2) or DANE-EE(3), selector Cert(0) or SPKI(1), matching Full(0),
 * SHA2-256(1) or SHA2-512(2) with a digest of the right length.  PKIX-TA(0)
 * and PKIX-EE(1) are not (section 3.1.3). */
bool dane_usable(const struct dns_tlsa *t);
/* Whether the TLSA lookup is worth asking: the MX and address answers are
 * secure (section 2.2: an insecure step disables DANE for the host). */
bool dane_want_tlsa(const struct dane_facts *f);
/* The verdict for a host under policy (TLS_POLICY_DANE or _DANE_ONLY), and
 * why, in words for the log ("usable TLSA records", "TLSA lookup failed",
 * ...). */
enum dane_verdict dane_decide(int policy, const struct dane_facts *f, const char **why);
const char *dane_verdict_name(enum dane_verdict v);

/* The usable records of one host, copied out of a DNS answer. */
struct dane_tlsa_set {
	size_t n;
	struct dane_rec {
		unsigned char usage, selector, mtype;
		size_t len;
		unsigned char *data;
	} rec[];
};
/* NULL when none of t[0..n) is usable (or out of memory: errno). */
struct dane_tlsa_set *dane_set_copy(const struct dns_tlsa *t, size_t n);
void dane_set_free(struct dane_tlsa_set *s);

#endif
