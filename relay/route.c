/* route: see route.h.  Next-hop syntax, the TransportTable (a sorted array
 * searched with bsearch) and RFC 5321 5.1 MX ordering.  Names are kept in
 * lower case without a trailing dot, so that the canonical text of a hop
 * (route_hop_text) names one destination queue however it was written. */
#include "route.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOSTNAME_MAX 253
#define LABEL_MAX    63

struct route_entry {
	char *key; /* "example.com", ".example.com" or "[1.2.3.4]" / "[ipv6:::1]" */
	struct route_hop hop;
	unsigned line;
};

struct route_table {
	struct route_entry *e;
	size_t n;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Checks a host name of len bytes (letters, digits, '-' and '.'; labels of
 * 1..63 characters that neither start nor end with '-'; 253 characters at
 * most; one trailing dot allowed).  Copies it, lower-cased and without the
 * trailing dot, to out (HOSTNAME_MAX + 1 bytes).  Returns NULL or why not. */
/* Whether the last label of name is all digits. */
static bool numeric_tld(const char *name)
{
	const char *last = strrchr(name, '.');

	last = last ? last + 1 : name;
	return *last != '\0' && strspn(last, "0123456789") == strlen(last);
}

static const char *check_hostname(const char *s, size_t len, char *out)
{
	size_t label = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0)
		return "empty host name";
	if (len > HOSTNAME_MAX)
		return "host name longer than 253 characters";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return "empty label in host name";
			if (s[i - 1] == '-')
				return "label ends with '-' in host name";
			label = 0;
		} else if (isascii(c) && (isalnum(c) || c == '-')) {
			if (c == '-' && label == 0)
				return "label starts with '-' in host name";
			if (++label > LABEL_MAX)
				return "label longer than 63 characters in host name";
		} else {
			return "invalid character in host name";
		}
		out[i] = (char)tolower(c);
	}
	if (label == 0)
		return "empty label in host name";
	if (s[len - 1] == '-')
		return "label ends with '-' in host name";
	out[len] = '\0';
	return NULL;
}

/* Parses an address literal (the text between the brackets, "IPv6:" prefix
 * allowed) into its canonical text.  Returns its family, or 0. */
static int parse_literal(const char *s, size_t len, char *out, size_t outlen)
{
	unsigned char bin[sizeof(struct in6_addr)];
	char tmp[64];
	int af = AF_INET;

	if (len >= 5 && strncasecmp(s, "IPv6:", 5) == 0) {
		s += 5;
		len -= 5;
		af = AF_INET6;
	}
	if (len == 0 || len >= sizeof(tmp))
		return 0;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (af == AF_INET && inet_pton(AF_INET, tmp, bin) != 1)
		af = AF_INET6;
	if (af == AF_INET6 && inet_pton(AF_INET6, tmp, bin) != 1)
		return 0;
	if (inet_ntop(af, bin, out, (socklen_t)outlen) == NULL)
		return 0;
	return af;
}

static int parse_port(const char *p, uint16_t *port)
{
	unsigned long v = 0;

	if (*p == '\0' || strlen(p) > 5)
		return -1;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static int parse_hop(const char *s, struct route_hop *hop, char *err, size_t errlen);

/* "HOP" or "HOP smtps": the flag asks for implicit TLS (the next hop's port
 * speaks TLS from the first byte, as 465 does). */
int route_parse_hop(const char *s, struct route_hop *hop, char *err, size_t errlen)
{
	char text[DNS_NAME_MAX + 64];
	const char *sp = s ? strpbrk(s, " \t") : NULL, *flag;

	if (sp == NULL)
		return parse_hop(s, hop, err, errlen);
	if ((size_t)(sp - s) >= sizeof(text)) {
		seterr(err, errlen, "next hop too long in '%s'", s);
		return -1;
	}
	memcpy(text, s, (size_t)(sp - s));
	text[sp - s] = '\0';
	flag = sp + strspn(sp, " \t");
	if (strcasecmp(flag, "smtps") != 0 && flag[0] != '\0') {
		seterr(err, errlen,
		       "'%s' after the next hop in '%s' is not a flag (smtps: implicit TLS)", flag,
		       s);
		return -1;
	}
	if (parse_hop(text, hop, err, errlen) < 0)
		return -1;
	hop->smtps = flag[0] != '\0';
	return 0;
}

static int parse_hop(const char *s, struct route_hop *hop, char *err, size_t errlen)
{
	const char *host, *colon, *why;
	size_t hlen;
	bool bracket = false;

	memset(hop, 0, sizeof(*hop));
	hop->port = 25;
	if (s == NULL || *s == '\0') {
		seterr(err, errlen, "empty next hop");
		return -1;
	}
	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL) {
			seterr(err, errlen, "missing ']' in '%s'", s);
			return -1;
		}
		bracket = true;
		host = s + 1;
		hlen = (size_t)(close - host);
		if (close[1] == ':')
			colon = close + 1;
		else if (close[1] == '\0')
			colon = NULL;
		else {
			seterr(err, errlen, "unexpected text after ']' in '%s'", s);
			return -1;
		}
	} else {
		host = s;
		colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			seterr(err, errlen, "IPv6 address must be in brackets in '%s'", s);
			return -1;
		}
		hlen = colon ? (size_t)(colon - s) : strlen(s);
	}
	if (colon != NULL && parse_port(colon + 1, &hop->port) < 0) {
		seterr(err, errlen, "bad port '%s' in '%s'", colon + 1, s);
		return -1;
	}
	if (hlen == 0) {
		seterr(err, errlen, "empty host in '%s'", s);
		return -1;
	}
	if (parse_literal(host, hlen, hop->host, sizeof(hop->host)) != 0) {
		hop->literal = true;
		hop->mx = false;
		return 0;
	}
	if (bracket && hlen >= 5 && strncasecmp(host, "IPv6:", 5) == 0) {
		seterr(err, errlen, "bad IPv6 address in '%s'", s);
		return -1;
	}
	why = check_hostname(host, hlen, hop->host);
	if (why == NULL && numeric_tld(hop->host))
		/* no top-level domain is all digits (RFC 3696 2): "192.0.2.7." is
		 * an address written oddly, not a domain whose MX to look up */
		why = "an address is written [192.0.2.7], not as a domain";
	if (why != NULL) {
		hop->host[0] = '\0';
		seterr(err, errlen, "%s in '%s'", why, s);
		return -1;
	}
	hop->mx = !bracket;
	return 0;
}

void route_hop_text(const struct route_hop *hop, char *buf, size_t len)
{
	if (hop->mx && !hop->literal)
		snprintf(buf, len, "%s:%u%s", hop->host, (unsigned)hop->port,
		         hop->smtps ? " smtps" : "");
	else
		snprintf(buf, len, "[%s]:%u%s", hop->host, (unsigned)hop->port,
		         hop->smtps ? " smtps" : "");
}

/* The table key for a recipient domain or a table's left column: lower case
 * without trailing dot; "[addr]" literals canonical ("[1.2.3.4]",
 * "[ipv6:::1]"); a leading '.' (a table's "any subdomain" key) only when
 * wild.  Returns 0, 1 for an address literal (addr then holds its
 * canonical text), or -1 with *why set when s is neither. */
static int make_key(const char *s, bool wild, char *key, size_t keylen, char *addr, size_t addrlen,
                    const char **why)
{
	size_t len = strlen(s);

	if (len > 0 && s[0] == '[') {
		char canon[INET6_ADDRSTRLEN];
		int af;

		if (s[len - 1] != ']' ||
		    (af = parse_literal(s + 1, len - 2, canon, sizeof(canon))) == 0) {
			*why = "bad address literal";
			return -1;
		}
		snprintf(key, keylen, "[%s%s]", af == AF_INET6 ? "ipv6:" : "", canon);
		if (addr != NULL)
			snprintf(addr, addrlen, "%s", canon);
		return 1;
	}
	if (len > 0 && s[0] == '.') {
		if (!wild || len == 1 || s[1] == '.') {
			*why = "bad domain";
			return -1;
		}
		key[0] = '.';
		key++;
		keylen--;
		s++;
		len--;
	}
	if (keylen < HOSTNAME_MAX + 1) {
		*why = "domain too long";
		return -1;
	}
	*why = check_hostname(s, len, key);
	return *why ? -1 : 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct route_entry *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c != 0)
		return c;
	return (x->line > y->line) - (x->line < y->line);
}

static int key_cmp(const void *k, const void *e)
{
	return strcmp(k, ((const struct route_entry *)e)->key);
}

void route_table_free(struct route_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->e[i].key);
	free(t->e);
	free(t);
}

struct route_table *route_table_load(const char *path, char *err, size_t errlen)
{
	struct route_table *t = calloc(1, sizeof(*t));
	size_t cap = 0, linecap = 0;
	char *line = NULL;
	unsigned lineno = 0;
	FILE *f;

	if (t == NULL) {
		seterr(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	f = fopen(path, "re");
	if (f == NULL) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		free(t);
		return NULL;
	}
	for (;;) {
		char *tok[4], *p, *save = NULL, key[HOSTNAME_MAX + 3], why[300], hoptext[600];
		const char *kwhy;
		struct route_hop hop;
		int ntok = 0;

		ssize_t got;

		errno = 0;
		if ((got = getline(&line, &linecap, f)) < 0) {
			if (errno != 0) {
				seterr(err, errlen, "%s:%u: %s", path, lineno + 1, strerror(errno));
				goto fail;
			}
			break;
		}
		lineno++;
		if ((size_t)got != strlen(line)) {
			seterr(err, errlen, "%s:%u: line contains a NUL byte", path, lineno);
			goto fail;
		}
		if ((p = strchr(line, '#')) != NULL)
			*p = '\0';
		for (p = strtok_r(line, " \t\r\n\v\f", &save); p != NULL && ntok < 4;
		     p = strtok_r(NULL, " \t\r\n\v\f", &save))
			tok[ntok++] = p;
		if (ntok == 0)
			continue;
		if (ntok != 2 && ntok != 3) {
			seterr(err, errlen,
			       "%s:%u: expected 'domain nexthop' or 'domain nexthop smtps'", path,
			       lineno);
			goto fail;
		}
		if (make_key(tok[0], true, key, sizeof(key), NULL, 0, &kwhy) < 0) {
			seterr(err, errlen, "%s:%u: %s '%s'", path, lineno, kwhy, tok[0]);
			goto fail;
		}
		snprintf(hoptext, sizeof(hoptext), "%s%s%s", tok[1], ntok == 3 ? " " : "",
		         ntok == 3 ? tok[2] : "");
		if (route_parse_hop(hoptext, &hop, why, sizeof(why)) < 0) {
			seterr(err, errlen, "%s:%u: %s", path, lineno, why);
			goto fail;
		}
		if (t->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct route_entry *ne = realloc(t->e, ncap * sizeof(*ne));

			if (ne == NULL) {
				seterr(err, errlen, "%s:%u: out of memory", path, lineno);
				goto fail;
			}
			t->e = ne;
			cap = ncap;
		}
		t->e[t->n].key = strdup(key);
		if (t->e[t->n].key == NULL) {
			seterr(err, errlen, "%s:%u: out of memory", path, lineno);
			goto fail;
		}
		t->e[t->n].hop = hop;
		t->e[t->n].line = lineno;
		t->n++;
	}
	if (t->n > 0)
		qsort(t->e, t->n, sizeof(*t->e), entry_cmp);
	for (size_t i = 1; i < t->n; i++) {
		if (strcmp(t->e[i - 1].key, t->e[i].key) == 0) {
			seterr(err, errlen, "%s:%u: duplicate key '%s' (first on line %u)", path,
			       t->e[i].line, t->e[i].key, t->e[i - 1].line);
			goto fail;
		}
	}
	free(line);
	fclose(f);
	return t;
fail:
	free(line);
	fclose(f);
	route_table_free(t);
	return NULL;
}

static const struct route_hop *table_find(const struct route_table *t, const char *key)
{
	const struct route_entry *e;

	if (t == NULL || t->n == 0)
		return NULL;
	e = bsearch(key, t->e, t->n, sizeof(*t->e), key_cmp);
	return e ? &e->hop : NULL;
}

void route_lookup(const struct route_table *t, const struct route_hop *smarthost,
                  const char *domain, struct route_hop *out)
{
	char key[HOSTNAME_MAX + 3], addr[INET6_ADDRSTRLEN];
	const struct route_hop *found;
	const char *why;
	int kind = make_key(domain, false, key, sizeof(key), addr, sizeof(addr), &why);

	if (kind >= 0) {
		found = table_find(t, key);
		if (found != NULL) {
			*out = *found;
			return;
		}
	}
	if (kind == 0) {
		/* ".parent" entries, most specific first: for a.b.c try
		 * ".b.c", then ".c". */
		for (char *dot = strchr(key, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
			found = table_find(t, dot);
			if (found != NULL) {
				*out = *found;
				return;
			}
		}
	}
	if (smarthost != NULL) {
		*out = *smarthost;
		return;
	}
	memset(out, 0, sizeof(*out));
	out->port = 25;
	if (kind == 1) {
		snprintf(out->host, sizeof(out->host), "%s", addr);
		out->literal = true;
		out->mx = false;
	} else {
		/* Not a valid domain: pass it on (lower-cased, without a
		 * trailing dot) and let the MX lookup fail. */
		size_t len = strlen(domain), i;

		if (kind == 0) {
			snprintf(out->host, sizeof(out->host), "%s", key);
		} else {
			if (len > 0 && domain[len - 1] == '.')
				len--;
			for (i = 0; i < len && i < sizeof(out->host) - 1; i++)
				out->host[i] = (char)tolower((unsigned char)domain[i]);
			out->host[i] = '\0';
		}
		out->mx = true;
	}
}

int route_order_mx(struct dns_mx *mx, size_t n, unsigned (*rnd)(void *ctx, unsigned bound),
                   void *ctx)
{
	size_t k = 0, i, j;

	if (n == 0)
		return 0;
	/* RFC 7505: a null MX ("." only) says the domain takes no mail.  A
	 * "." among real exchangers is a broken answer: drop it. */
	for (i = 0; i < n; i++)
		if (mx[i].host[0] != '\0')
			break;
	if (i == n)
		return -1;
	for (i = 0; i < n; i++) {
		if (mx[i].host[0] == '\0')
			continue;
		if (k != i)
			mx[k] = mx[i];
		k++;
	}
	if (k > INT_MAX)
		k = INT_MAX;
	/* Stable insertion sort by preference (n is small: DNS_MX_MAX). */
	for (i = 1; i < k; i++) {
		struct dns_mx tmp;

		if (mx[i - 1].pref <= mx[i].pref)
			continue;
		tmp = mx[i];
		for (j = i; j > 0 && mx[j - 1].pref > tmp.pref; j--)
			mx[j] = mx[j - 1];
		mx[j] = tmp;
	}
	/* Fisher-Yates within each run of equal preference. */
	for (i = 0; rnd != NULL && i < k; i = j) {
		for (j = i + 1; j < k && mx[j].pref == mx[i].pref; j++)
			;
		for (size_t m = j - i; m > 1; m--) {
			unsigned r = rnd(ctx, (unsigned)m);
			struct dns_mx tmp;

			if (r >= m)
				r %= (unsigned)m;
			if (r == m - 1)
				continue;
			tmp = mx[i + m - 1];
			mx[i + m - 1] = mx[i + r];
			mx[i + r] = tmp;
		}
	}
	return (int)k;
}
