/* tlsrpt: see tlsrpt.h. */
#include "tlsrpt.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/x509_vfy.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const policy_names[TLSRPT_POLICIES] = {"sts", "tlsa", "no-policy-found"};
static const char *const result_names[TLSRPT_RESULTS] = {
    "success",
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
};

const char *tlsrpt_policy_name(enum tlsrpt_policy p)
{
	return (unsigned)p < TLSRPT_POLICIES ? policy_names[p] : "?";
}

const char *tlsrpt_result_name(enum tlsrpt_result r)
{
	return (unsigned)r < TLSRPT_RESULTS ? result_names[r] : "?";
}

enum tlsrpt_result tlsrpt_from_verify(long verify, enum tlsrpt_policy p)
{
	switch (verify) {
	case X509_V_OK:
		return TLSRPT_VALIDATION_FAILURE;
	case X509_V_ERR_DANE_NO_MATCH:
		return TLSRPT_TLSA_INVALID;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLSRPT_CERT_HOST_MISMATCH;
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return TLSRPT_CERT_EXPIRED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		return p == TLSRPT_STS ? TLSRPT_STS_WEBPKI_INVALID : TLSRPT_CERT_NOT_TRUSTED;
	default:
		return TLSRPT_VALIDATION_FAILURE;
	}
}

/* ---- lines ---- */

static void field(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	if (s == NULL || *s == '\0')
		s = "-";
	for (; *s != '\0' && n + 1 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		out[n++] =
		    isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' ? (char)c : '?';
	}
	out[n] = '\0';
}

size_t tlsrpt_line_format(const struct tlsrpt_event *e, char *buf, size_t cap)
{
	char dom[TLSRPT_NAME_MAX + 1], sip[48], mx[TLSRPT_NAME_MAX + 1], mip[48];
	int n;

	field(dom, sizeof(dom), e->domain);
	field(sip, sizeof(sip), e->sending_ip);
	field(mx, sizeof(mx), e->mx_host);
	field(mip, sizeof(mip), e->mx_ip);
	n = snprintf(buf, cap, "v1 %" PRId64 " %s %s %s %s %s %s\n", e->when, dom,
	             tlsrpt_policy_name(e->policy), tlsrpt_result_name(e->result), sip, mx, mip);
	return n < 0 ? 0 : (size_t)n;
}

static int lookup(const char *const *names, size_t count, const char *s)
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

int tlsrpt_line_parse(const char *line, size_t len, struct tlsrpt_event *e)
{
	char buf[1024], *f[8], *save = NULL;
	int k = 0, pol, res;
	long long when;
	char *end;

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, line, len);
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	for (char *t = strtok_r(buf, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
		if (k == 8)
			return -1; /* a field too many */
		f[k++] = t;
	}
	if (k != 8 || strcmp(f[0], "v1") != 0)
		return -1;
	when = strtoll(f[1], &end, 10);
	pol = lookup(policy_names, TLSRPT_POLICIES, f[3]);
	res = lookup(result_names, TLSRPT_RESULTS, f[4]);
	if (*end != '\0' || when < 0 || pol < 0 || res < 0 || strlen(f[2]) > TLSRPT_NAME_MAX ||
	    strlen(f[5]) >= sizeof(e->sending_ip) || strlen(f[6]) > TLSRPT_NAME_MAX ||
	    strlen(f[7]) >= sizeof(e->mx_ip))
		return -1;
	memset(e, 0, sizeof(*e));
	e->when = when;
	e->policy = (enum tlsrpt_policy)pol;
	e->result = (enum tlsrpt_result)res;
	strcpy(e->domain, f[2]);
	strcpy(e->sending_ip, strcmp(f[5], "-") ? f[5] : "");
	strcpy(e->mx_host, strcmp(f[6], "-") ? f[6] : "");
	strcpy(e->mx_ip, strcmp(f[7], "-") ? f[7] : "");
	return 0;
}

/* ---- a day ---- */

struct failure {
	enum tlsrpt_result result;
	char sending_ip[48], mx_host[TLSRPT_NAME_MAX + 1], mx_ip[48];
	uint64_t count;
};

struct policy_counts {
	bool seen;
	uint64_t ok, failed;
	struct failure *f;
	size_t nf, capf;
};

struct domain {
	char name[TLSRPT_NAME_MAX + 1];
	struct policy_counts p[TLSRPT_POLICIES];
};

struct tlsrpt_day {
	struct domain *d;
	size_t n, cap;
};

struct tlsrpt_day *tlsrpt_day_new(void)
{
	return calloc(1, sizeof(struct tlsrpt_day));
}

void tlsrpt_day_free(struct tlsrpt_day *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n; i++)
		for (int k = 0; k < TLSRPT_POLICIES; k++)
			free(d->d[i].p[k].f);
	free(d->d);
	free(d);
}

static struct domain *domain_get(struct tlsrpt_day *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->d[i].name, name) == 0)
			return &d->d[i];
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 8;
		struct domain *nd = realloc(d->d, cap * sizeof(*nd));
		if (nd == NULL)
			return NULL;
		d->d = nd;
		d->cap = cap;
	}
	memset(&d->d[d->n], 0, sizeof(d->d[0]));
	snprintf(d->d[d->n].name, sizeof(d->d[0].name), "%s", name);
	return &d->d[d->n++];
}

int tlsrpt_day_add(struct tlsrpt_day *d, const struct tlsrpt_event *e)
{
	struct domain *dom = domain_get(d, e->domain);
	struct policy_counts *p;
	struct failure *f = NULL;

	if (dom == NULL)
		return -1;
	p = &dom->p[e->policy];
	p->seen = true;
	if (e->result == TLSRPT_SUCCESS) {
		p->ok++;
		return 0;
	}
	p->failed++;
	for (size_t i = 0; i < p->nf && f == NULL; i++)
		if (p->f[i].result == e->result && strcmp(p->f[i].sending_ip, e->sending_ip) == 0 &&
		    strcmp(p->f[i].mx_host, e->mx_host) == 0 &&
		    strcmp(p->f[i].mx_ip, e->mx_ip) == 0)
			f = &p->f[i];
	if (f == NULL) {
		if (p->nf == p->capf) {
			size_t cap = p->capf ? p->capf * 2 : 4;
			struct failure *nf = realloc(p->f, cap * sizeof(*nf));
			if (nf == NULL)
				return -1;
			p->f = nf;
			p->capf = cap;
		}
		f = &p->f[p->nf++];
		memset(f, 0, sizeof(*f));
		f->result = e->result;
		strcpy(f->sending_ip, e->sending_ip);
		strcpy(f->mx_host, e->mx_host);
		strcpy(f->mx_ip, e->mx_ip);
	}
	f->count++;
	return 0;
}

const char *tlsrpt_day_domain(const struct tlsrpt_day *d, size_t i)
{
	return i < d->n ? d->d[i].name : NULL;
}

void tlsrpt_day_show(const struct tlsrpt_day *d, FILE *out)
{
	for (size_t i = 0; i < d->n; i++)
		for (int k = 0; k < TLSRPT_POLICIES; k++) {
			const struct policy_counts *p = &d->d[i].p[k];

			if (!p->seen)
				continue;
			fprintf(out, "%s %s successful=%" PRIu64 " failed=%" PRIu64 "\n",
			        d->d[i].name, policy_names[k], p->ok, p->failed);
			for (size_t j = 0; j < p->nf; j++)
				fprintf(out,
				        "    %s sessions=%" PRIu64
				        " mx=%s mx_ip=%s sending_ip=%s\n",
				        result_names[p->f[j].result], p->f[j].count,
				        p->f[j].mx_host[0] ? p->f[j].mx_host : "-",
				        p->f[j].mx_ip[0] ? p->f[j].mx_ip : "-",
				        p->f[j].sending_ip[0] ? p->f[j].sending_ip : "-");
		}
}

/* ---- JSON ---- */

static void json_str(FILE *out, const char *s, size_t n)
{
	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void json_cstr(FILE *out, const char *s)
{
	json_str(out, s, strlen(s));
}

/* policy-string (one entry per line of the policy) and mx-host (its mx
 * values) */
static void sts_policy_fields(FILE *out, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	bool first = true;

	fputs(", \"policy-string\": [", out);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		size_t m = n > 0 && p[n - 1] == '\r' ? n - 1 : n;

		if (m > 0) {
			fputs(first ? "" : ", ", out);
			json_str(out, p, m);
			first = false;
		}
		p += n + (nl ? 1 : 0);
	}
	fputs("], \"mx-host\": [", out);
	first = true;
	for (p = text; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (n > 3 && strncmp(p, "mx:", 3) == 0) {
			const char *v = p + 3;
			size_t vl = n - 3;
			while (vl > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vl--;
			}
			while (vl > 0 &&
			       (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
				vl--;
			fputs(first ? "" : ", ", out);
			json_str(out, v, vl);
			first = false;
		}
		p += n + (nl ? 1 : 0);
	}
	fputs("]", out);
}

void tlsrpt_report_json(const struct tlsrpt_day *d, const char *domain,
                        const struct tlsrpt_report_info *info, FILE *out)
{
	const struct domain *dom = NULL;
	bool first = true;
	char id[TLSRPT_NAME_MAX + 128];

	for (size_t i = 0; i < d->n && dom == NULL; i++)
		if (strcmp(d->d[i].name, domain) == 0)
			dom = &d->d[i];
	snprintf(id, sizeof(id), "%s_%s@%s", info->date, domain, info->organization);
	fputs("{\"organization-name\": ", out);
	json_cstr(out, info->organization);
	fprintf(out,
	        ", \"date-range\": {\"start-datetime\": \"%sT00:00:00Z\", \"end-datetime\": "
	        "\"%sT23:59:59Z\"}, \"contact-info\": ",
	        info->date, info->date);
	json_cstr(out, info->contact);
	fputs(", \"report-id\": ", out);
	json_cstr(out, id);
	fputs(", \"policies\": [", out);
	for (int k = 0; dom != NULL && k < TLSRPT_POLICIES; k++) {
		const struct policy_counts *p = &dom->p[k];

		if (!p->seen)
			continue;
		fprintf(out, "%s{\"policy\": {\"policy-type\": \"%s\"", first ? "" : ", ",
		        policy_names[k]);
		first = false;
		if (k == TLSRPT_STS && info->sts_policy != NULL)
			sts_policy_fields(out, info->sts_policy, info->sts_policy_len);
		fputs(", \"policy-domain\": ", out);
		json_cstr(out, domain);
		fprintf(out,
		        "}, \"summary\": {\"total-successful-session-count\": %" PRIu64
		        ", \"total-failure-session-count\": %" PRIu64 "}, \"failure-details\": [",
		        p->ok, p->failed);
		for (size_t j = 0; j < p->nf; j++) {
			const struct failure *f = &p->f[j];

			fprintf(out, "%s{\"result-type\": \"%s\"", j ? ", " : "",
			        result_names[f->result]);
			if (f->sending_ip[0]) {
				fputs(", \"sending-mta-ip\": ", out);
				json_cstr(out, f->sending_ip);
			}
			if (f->mx_host[0]) {
				fputs(", \"receiving-mx-hostname\": ", out);
				json_cstr(out, f->mx_host);
			}
			if (f->mx_ip[0]) {
				fputs(", \"receiving-ip\": ", out);
				json_cstr(out, f->mx_ip);
			}
			fprintf(out, ", \"failed-session-count\": %" PRIu64 "}", f->count);
		}
		fputs("]}", out);
	}
	fputs("]}\n", out);
}

/* ---- the _smtp._tls record ---- */

static int hexval(char c)
{
	return isdigit((unsigned char)c) ? c - '0'
	       : c >= 'a' && c <= 'f'    ? c - 'a' + 10
	       : c >= 'A' && c <= 'F'    ? c - 'A' + 10
	                                 : -1;
}

/* One rua URI (s[0..n), trimmed); false when it is not usable. */
static bool rua_add(struct tlsrpt_rua *r, const char *s, size_t n)
{
	size_t o = 0;

	if (r->n == TLSRPT_RUA_MAX || n >= sizeof(r->uri[0].v))
		return false;
	if (n > 7 && strncasecmp(s, "mailto:", 7) == 0) {
		/* the address: up to '?', %XX decoded; one '@', no blank */
		const char *at = NULL;
		for (size_t i = 7; i < n && s[i] != '?'; i++) {
			char c = s[i];
			if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
			    hexval(s[i + 2]) >= 0) {
				c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
				i += 2;
			}
			if ((unsigned char)c <= ' ' || c == '<' || c == '>' || c == ',' ||
			    c == 0x7f)
				return false;
			if (c == '@')
				at = r->uri[r->n].v + o;
			r->uri[r->n].v[o++] = c;
		}
		r->uri[r->n].v[o] = '\0';
		if (at == NULL || at == r->uri[r->n].v || at[1] == '\0' || strchr(at + 1, '@'))
			return false;
		r->uri[r->n].mailto = true;
	} else if (n > 8 && strncasecmp(s, "https://", 8) == 0) {
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
				return false;
		memcpy(r->uri[r->n].v, s, n);
		r->uri[r->n].v[n] = '\0';
		r->uri[r->n].mailto = false;
	} else {
		return false; /* another scheme: ignored */
	}
	r->n++;
	return true;
}

int tlsrpt_txt_parse(const char *txt, size_t len, struct tlsrpt_rua *r)
{
	bool first = true, have_rua = false;
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	while (i < len) {
		const char *f = txt + i, *end = memchr(f, ';', len - i), *eq, *k, *v;
		size_t n = end ? (size_t)(end - f) : len - i, kl, vl;

		i += n + (end ? 1 : 0);
		while (n > 0 && (*f == ' ' || *f == '\t')) {
			f++;
			n--;
		}
		while (n > 0 && (f[n - 1] == ' ' || f[n - 1] == '\t'))
			n--;
		if (n == 0) {
			if (first)
				return 0;
			continue;
		}
		if ((eq = memchr(f, '=', n)) == NULL)
			return first ? 0 : -1;
		k = f;
		kl = (size_t)(eq - f);
		v = eq + 1;
		vl = n - kl - 1;
		while (kl > 0 && (k[kl - 1] == ' ' || k[kl - 1] == '\t'))
			kl--;
		while (vl > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vl--;
		}
		if (first) {
			if (kl != 1 || k[0] != 'v' || vl != 8 || memcmp(v, "TLSRPTv1", 8) != 0)
				return 0;
			first = false;
			continue;
		}
		if (kl == 3 && memcmp(k, "rua", 3) == 0) {
			if (have_rua)
				return -1;
			have_rua = true;
			for (size_t j = 0; j < vl;) {
				const char *u = v + j, *comma = memchr(u, ',', vl - j);
				size_t ul = comma ? (size_t)(comma - u) : vl - j;

				j += ul + (comma ? 1 : 0);
				while (ul > 0 && (*u == ' ' || *u == '\t')) {
					u++;
					ul--;
				}
				while (ul > 0 && (u[ul - 1] == ' ' || u[ul - 1] == '\t'))
					ul--;
				rua_add(r, u, ul);
			}
		}
	}
	if (first)
		return 0;
	return r->n > 0 ? 1 : -1;
}
