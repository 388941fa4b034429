/* dane: see dane.h. */
#include "dane.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"

bool dane_usable(const struct dns_tlsa *t)
{
	if (t->usage != 2 && t->usage != 3)
		return false; /* PKIX-TA(0), PKIX-EE(1), or unknown */
	if (t->selector > 1)
		return false;
	switch (t->mtype) {
	case 0:
		return t->len > 0;
	case 1:
		return t->len == 32;
	case 2:
		return t->len == 64;
	default:
		return false;
	}
}

bool dane_want_tlsa(const struct dane_facts *f)
{
	return f->mx_secure && f->addr_st == DNS_OK && f->addr_secure;
}

static enum dane_verdict none(int policy, const char **why, const char *text)
{
	*why = text;
	/* dane-only: a host without authenticated TLS is not gone to */
	return policy == TLS_POLICY_DANE_ONLY ? DANE_DEFER : DANE_NONE;
}

enum dane_verdict dane_decide(int policy, const struct dane_facts *f, const char **why)
{
	size_t usable = 0;

	if (f->addr_st == DNS_BOGUS) {
		*why = "address records bogus (DNSSEC validation failed)";
		return DANE_DEFER;
	}
	if (!f->mx_secure)
		return none(policy, why, "MX records not DNSSEC-signed");
	if (f->addr_st != DNS_OK || !f->addr_secure)
		return none(policy, why, "address records not DNSSEC-signed");
	if (!f->tlsa_asked)
		return none(policy, why, "TLSA not looked up");
	switch (f->tlsa_st) {
	case DNS_BOGUS:
		*why = "TLSA records bogus (DNSSEC validation failed)";
		return DANE_DEFER;
	case DNS_TEMPFAIL:
		/* section 2.2: a failed TLSA lookup must not become clear text */
		*why = "TLSA lookup failed";
		return DANE_DEFER;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		return none(policy, why,
		            f->tlsa_secure ? "no TLSA records"
		                           : "no TLSA records (insecure denial)");
	case DNS_OK:
		break;
	}
	if (!f->tlsa_secure)
		return none(policy, why, "TLSA records not DNSSEC-signed");
	for (size_t i = 0; i < f->ntlsa; i++)
		usable += dane_usable(&f->tlsa[i]);
	if (usable == 0) {
		/* section 3.1.3: TLS is still mandatory, without authentication */
		*why = "TLSA records, none usable";
		return DANE_ENCRYPT;
	}
	*why = "usable TLSA records";
	return DANE_AUTH;
}

const char *dane_verdict_name(enum dane_verdict v)
{
	switch (v) {
	case DANE_NONE:
		return "none";
	case DANE_AUTH:
		return "auth";
	case DANE_ENCRYPT:
		return "encrypt";
	case DANE_DEFER:
		return "defer";
	}
	return "?";
}

struct dane_tlsa_set *dane_set_copy(const struct dns_tlsa *t, size_t n)
{
	struct dane_tlsa_set *s;
	size_t k = 0, bytes = 0;

	for (size_t i = 0; i < n; i++)
		if (dane_usable(&t[i])) {
			k++;
			bytes += t[i].len;
		}
	if (k == 0)
		return NULL;
	s = malloc(sizeof(*s) + k * sizeof(s->rec[0]) + bytes);
	if (s == NULL)
		return NULL;
	unsigned char *data = (unsigned char *)&s->rec[k];
	s->n = 0;
	for (size_t i = 0; i < n; i++) {
		struct dane_rec *r = &s->rec[s->n];

		if (!dane_usable(&t[i]))
			continue;
		r->usage = t[i].usage;
		r->selector = t[i].selector;
		r->mtype = t[i].mtype;
		r->len = t[i].len;
		r->data = data;
		memcpy(data, t[i].data, t[i].len);
		data += t[i].len;
		s->n++;
	}
	return s;
}

void dane_set_free(struct dane_tlsa_set *s)
{
	free(s);
}
