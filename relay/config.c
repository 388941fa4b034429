/* config: parses krelay.conf.  Every line is validated completely and any
 * problem is reported as "path:line: message"; nothing is silently ignored,
 * because a relay that quietly falls back to a default (say, open relaying or
 * an old TLS version) is worse than one that refuses to start.  List options
 * are parsed into a scratch copy first so a bad item leaves the earlier value
 * untouched. */
#include "config.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define DNS_NAME_MAX     253
#define DNS_LABEL_MAX    63
#define MESSAGE_SIZE_MIN 1024ULL
#define MESSAGE_SIZE_MAX (1ULL << 40)
#define FINGERPRINT_LEN  32
#define TLS_REFUSED_MESSAGE                                                                        \
	"is refused: krelay speaks TLS 1.2 or newer only (TLSv1.2, TLSv1.3); SSL and TLS "         \
	"1.0/1.1 are never used"

#define FIELD_OF(f) offsetof(struct config, f)

struct opt_def;
typedef int (*opt_parser)(struct config *c, const struct opt_def *d, char *val, char *msg,
                          size_t len);

struct opt_def {
	const char *name;
	opt_parser parse;
	size_t off; /* field for the generic path and number parsers */
	uint64_t min, max;
};

__attribute__((format(printf, 3, 4))) static int msgf(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
	return -1;
}

/* Writes "path:line: " (or "line: " without a path) and the message. */
__attribute__((format(printf, 5, 6))) static int
fail(const struct config *c, unsigned lineno, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL || errlen == 0)
		return -1;
	if (c->path != NULL)
		n = snprintf(err, errlen, "%s:%u: ", c->path, lineno);
	else
		n = snprintf(err, errlen, "%u: ", lineno);
	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	return s;
}

/* Cuts the next comma-separated item out of *cursor, trimmed; NULL at the end. */
static char *next_item(char **cursor)
{
	char *s = *cursor, *comma;

	if (s == NULL)
		return NULL;
	comma = strchr(s, ',');
	if (comma != NULL) {
		*comma = '\0';
		*cursor = comma + 1;
	} else {
		*cursor = NULL;
	}
	return trim(s);
}

/* Decimal digits only: no sign, no base prefix, no spaces.  Saturates rather
 * than wrapping so that a huge value is reported as out of range. */
static const char *parse_digits(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return NULL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned dgt = (unsigned)(*s - '0');

		v = v > (UINT64_MAX - dgt) / 10 ? UINT64_MAX : v * 10 + dgt;
	}
	*out = v;
	return s;
}

static int set_string(char **field, const char *val, char *msg, size_t len)
{
	char *copy = strdup(val);

	if (copy == NULL)
		return msgf(msg, len, "out of memory");
	free(*field);
	*field = copy;
	return 0;
}

static char **string_field(struct config *c, const struct opt_def *d)
{
	return (char **)(void *)((char *)c + d->off);
}

static int parse_path(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	return set_string(string_field(c, d), val, msg, len);
}

/* A relative queue path would depend on the working directory the daemon
 * happens to start in (a shell, a service manager), so it is refused. */
static int parse_abs_path(struct config *c, const struct opt_def *d, char *val, char *msg,
                          size_t len)
{
	if (val[0] != '/')
		return msgf(msg, len, "'%s' is not an absolute path", val);
	return set_string(string_field(c, d), val, msg, len);
}

/* RunAsUser=user[:group]: names or numbers, checked for their syntax here
 * (whether they exist is the start's business, see runas.c). */
static int parse_run_as(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	const char *colon = strchr(val, ':');

	if (val[0] == '\0' || val[0] == ':')
		return msgf(msg, len, "'%s' names no user (user or user:group)", val);
	if (colon != NULL && (colon[1] == '\0' || strchr(colon + 1, ':') != NULL))
		return msgf(msg, len, "'%s' is not user or user:group", val);
	for (const char *p = val; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.' ||
		      *p == ':' || (*p == '$' && p[1] == '\0')))
			return msgf(msg, len, "'%s' is not a user name (user or user:group)", val);
	return set_string(string_field(c, d), val, msg, len);
}

/* A distinguished name as Sendmail's access map writes it ("/C=XX/O=A+20B"). */
static int check_dn(const char *dn, const char *what, char *msg, size_t len)
{
	if (dn[0] != '/')
		return msgf(msg, len, "%s '%s' is not a name as /C=../O=../CN=.. (+20 for a space)",
		            what, dn);
	if (strlen(dn) > 255)
		return msgf(msg, len, "%s '%.40s...' is longer than 255 octets", what, dn);
	for (const char *p = dn; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return msgf(msg, len,
			            "%s '%s' has a space or a non-ASCII byte: write it +HH "
			            "(+20 for a space), as Sendmail's access map does",
			            what, dn);
	return 0;
}

/* Repeatable options: the first line replaces the default, the next add. */
static size_t repeat_base(const struct config *c, enum config_opt opt, size_t count)
{
	return c->line[opt] != 0 ? count : 0;
}

/* SendmailQueue=DIR (repeatable): an absolute path, once. */
static int parse_sendmail_queue(struct config *c, const struct opt_def *d, char *val, char *msg,
                                size_t len)
{
	size_t n = repeat_base(c, OPT_SENDMAIL_QUEUE, c->sendmail_queues_count);

	(void)d;
	if (val[0] != '/')
		return msgf(msg, len, "'%s' is not an absolute path", val);
	if (n == CONFIG_LIST_MAX)
		return msgf(msg, len, "too many Sendmail queues (at most %d)", CONFIG_LIST_MAX);
	for (size_t i = 0; i < n; i++)
		if (strcmp(c->sendmail_queues[i], val) == 0)
			return msgf(msg, len, "%s is named twice", val);
	for (size_t i = n; i < c->sendmail_queues_count; i++)
		free(c->sendmail_queues[i]);
	if ((c->sendmail_queues[n] = strdup(val)) == NULL)
		return msgf(msg, len, "out of memory");
	c->sendmail_queues_count = n + 1;
	return 0;
}

static int parse_cert_issuer(struct config *c, const struct opt_def *d, char *val, char *msg,
                             size_t len)
{
	size_t n = repeat_base(c, OPT_RELAY_CLIENT_ISSUER, c->relay_client_issuers_count);

	if (check_dn(val, "issuer", msg, len) < 0)
		return -1;
	if (n == CONFIG_LIST_MAX)
		return msgf(msg, len, "too many issuers (at most %d)", CONFIG_LIST_MAX);
	for (size_t i = n; i < c->relay_client_issuers_count; i++)
		free(c->relay_client_issuers[i]);
	if ((c->relay_client_issuers[n] = strdup(val)) == NULL)
		return msgf(msg, len, "out of memory");
	c->relay_client_issuers_count = n + 1;
	return 0;
}

static int parse_cert_subject(struct config *c, const struct opt_def *d, char *val, char *msg,
                              size_t len)
{
	size_t n = repeat_base(c, OPT_RELAY_CLIENT_SUBJECT, c->relay_client_subjects_count);
	char *sp = val + strcspn(val, " \t"), *subject;

	if (*sp == '\0')
		return msgf(msg, len, "'%s' is not 'ISSUER SUBJECT' (two names)", val);
	*sp = '\0';
	subject = sp + 1 + strspn(sp + 1, " \t");
	if (check_dn(val, "issuer", msg, len) < 0 || check_dn(subject, "subject", msg, len) < 0)
		return -1;
	if (n == CONFIG_LIST_MAX)
		return msgf(msg, len, "too many subjects (at most %d)", CONFIG_LIST_MAX);
	for (size_t i = n; i < c->relay_client_subjects_count; i++) {
		free(c->relay_client_subjects[i].issuer);
		free(c->relay_client_subjects[i].subject);
	}
	c->relay_client_subjects[n].issuer = strdup(val);
	c->relay_client_subjects[n].subject = strdup(subject);
	c->relay_client_subjects_count = n + 1;
	if (c->relay_client_subjects[n].issuer == NULL ||
	    c->relay_client_subjects[n].subject == NULL)
		return msgf(msg, len, "out of memory");
	return 0;
}

static int parse_unsigned(struct config *c, const struct opt_def *d, char *val, char *msg,
                          size_t len)
{
	uint64_t v;
	const char *end = parse_digits(val, &v);

	if (end == NULL || *end != '\0')
		return msgf(msg, len, "'%s' is not a number", val);
	if (v < d->min || v > d->max)
		return msgf(msg, len, "'%s' is out of range (%llu..%llu)", val,
		            (unsigned long long)d->min, (unsigned long long)d->max);
	*(unsigned *)(void *)((char *)c + d->off) = (unsigned)v;
	return 0;
}

static int parse_size(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	const char *end;
	uint64_t v, mult = 1;

	end = parse_digits(val, &v);
	if (end != NULL && *end != '\0') {
		switch (*end++) {
		case 'k':
		case 'K':
			mult = 1ULL << 10;
			break;
		case 'm':
		case 'M':
			mult = 1ULL << 20;
			break;
		case 'g':
		case 'G':
			mult = 1ULL << 30;
			break;
		default:
			end = NULL;
		}
	}
	if (end == NULL || *end != '\0')
		return msgf(msg, len,
		            "'%s' is not a size (bytes, optionally with suffix k, m or g)", val);
	if (v > d->max / mult || v * mult < d->min)
		return msgf(msg, len, "'%s' is out of range (%llu..%llu bytes)", val,
		            (unsigned long long)d->min, (unsigned long long)d->max);
	c->max_message_size = v * mult;
	return 0;
}

/* RFC 1034/1123 host name syntax; reasons are spelled out because a typo in
 * Hostname ends up in every EHLO and Received: line. */
static int check_dns_name(const char *s, char *msg, size_t len)
{
	size_t n = strlen(s), label = 0;

	if (n > DNS_NAME_MAX)
		return msgf(msg, len, "'%s' is not a DNS name: longer than %d characters", s,
		            DNS_NAME_MAX);
	for (size_t i = 0; i <= n; i++) {
		char ch = s[i];

		if (ch == '.' || ch == '\0') {
			if (label == 0)
				return msgf(msg, len, "'%s' is not a DNS name: empty label", s);
			if (s[i - 1] == '-' || s[i - label] == '-')
				return msgf(msg, len,
				            "'%s' is not a DNS name: label starts or ends with '-'",
				            s);
			label = 0;
		} else if (isalnum((unsigned char)ch) || ch == '-') {
			if (++label > DNS_LABEL_MAX)
				return msgf(
				    msg, len,
				    "'%s' is not a DNS name: label longer than %d characters", s,
				    DNS_LABEL_MAX);
		} else {
			return msgf(
			    msg, len,
			    "'%s' is not a DNS name: '%c' is not a letter, digit, '-' or '.'", s,
			    ch);
		}
	}
	return 0;
}

static int parse_hostname(struct config *c, const struct opt_def *d, char *val, char *msg,
                          size_t len)
{
	if (check_dns_name(val, msg, len) < 0)
		return -1;
	return set_string(string_field(c, d), val, msg, len);
}

/* Copies [s, s+n) into buf as a C string for inet_pton; false if it cannot fit. */
static bool copy_span(char *buf, size_t size, const char *s, size_t n)
{
	if (n >= size)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return true;
}

/* Splits "ADDR:PORT" or "[ADDR]:PORT"; returns the family, or -1. */
static int split_host_port(const char *w, char *host, size_t hostsz, const char **port, char *msg,
                           size_t len)
{
	const char *colon;

	if (w[0] == '[') {
		const char *close = strchr(w, ']');

		if (close == NULL)
			return msgf(msg, len, "'%s' has no closing ']'", w);
		if (close[1] != ':')
			return msgf(msg, len, "'%s' has no port (write [ADDR]:PORT)", w);
		if (!copy_span(host, hostsz, w + 1, (size_t)(close - w - 1)))
			return msgf(msg, len, "'%s' is not an IPv6 address", w);
		*port = close + 2;
		return AF_INET6;
	}
	colon = strrchr(w, ':');
	if (colon == NULL)
		return msgf(msg, len, "'%s' has no port (write ADDR:PORT)", w);
	if (memchr(w, ':', (size_t)(colon - w)) != NULL)
		return msgf(msg, len, "'%s': an IPv6 address must be in brackets, as in [::1]:25",
		            w);
	if (!copy_span(host, hostsz, w, (size_t)(colon - w)))
		return msgf(msg, len, "'%s' is not an IPv4 address", w);
	*port = colon + 1;
	return AF_INET;
}

static int parse_listen_addr(const char *w, struct config_listen *l, char *msg, size_t len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port = NULL, *end;
	uint64_t p;
	int family;

	memset(l, 0, sizeof(*l));
	family = split_host_port(w, host, sizeof(host), &port, msg, len);
	if (family < 0)
		return -1;
	end = parse_digits(port, &p);
	if (end == NULL || *end != '\0' || p < 1 || p > 65535)
		return msgf(msg, len, "'%s': port must be a number 1..65535", w);
	if (!copy_span(l->text, sizeof(l->text), w, strlen(w)))
		return msgf(msg, len, "'%s' is too long", w);
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return msgf(msg, len, "'%s' is not an IPv4 address", host);
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		l->addrlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return msgf(msg, len, "'%s' is not an IPv6 address", host);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		l->addrlen = sizeof(*sin6);
	}
	return 0;
}

static bool same_listen(const struct config_listen *a, const struct config_listen *b)
{
	return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

/* "ADDR:PORT [smtps]".  The first Listen line of a file replaces the built-in
 * listener instead of adding to it: line[OPT_LISTEN] is still 0 then, since
 * config_parse_line records the line only after the parser succeeds. */
static int parse_listen(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	struct config_listen l;
	size_t base = c->line[OPT_LISTEN] != 0 ? c->listen_count : 0;
	char *flag = val + strcspn(val, " \t");

	if (*flag != '\0') {
		*flag++ = '\0';
		flag = trim(flag);
		if (flag[strcspn(flag, " \t")] != '\0')
			return msgf(msg, len, "too many words after ADDR:PORT: '%s'", flag);
		if (strcasecmp(flag, "smtps") != 0)
			return msgf(msg, len,
			            "unknown word '%s' (only 'smtps' may follow ADDR:PORT)", flag);
	}
	if (parse_listen_addr(val, &l, msg, len) < 0)
		return -1;
	l.smtps = *flag != '\0';
	for (size_t i = 0; i < base; i++)
		if (same_listen(&c->listen[i], &l))
			return msgf(msg, len, "'%s' is already listed", val);
	if (base >= CONFIG_LISTEN_MAX)
		return msgf(msg, len, "too many listeners (at most %d)", CONFIG_LISTEN_MAX);
	c->listen[base] = l;
	c->listen_count = base + 1;
	return 0;
}

/* "redis://ADDR:PORT/" (the final '/' optional): an address, not a name,
 * so that connecting never waits for DNS. */
static int parse_throttle_store(struct config *c, const struct opt_def *d, char *val, char *msg,
                                size_t len)
{
	size_t n = strlen(val);

	if (strncmp(val, "redis://", 8) != 0)
		return msgf(msg, len, "'%s': only redis://ADDR:PORT/ is supported", val);
	if (n > 8 && val[n - 1] == '/')
		val[n - 1] = '\0';
	if (parse_listen_addr(val + 8, &c->throttle_store, msg, len) < 0)
		return -1;
	c->has_throttle_store = true;
	return 0;
}

/* MetricsListen=ADDR:PORT (one address; the endpoint is plain HTTP). */
static int parse_metrics_listen(struct config *c, const struct opt_def *d, char *val, char *msg,
                                size_t len)
{
	struct config_listen l;

	if (val[strcspn(val, " \t")] != '\0')
		return msgf(msg, len, "'%s': one ADDR:PORT, nothing after it", val);
	if (parse_listen_addr(val, &l, msg, len) < 0)
		return -1;
	c->metrics_listen = l;
	return 0;
}

/* Host bits are masked off rather than refused: "10.1.2.3/8" is a common way of
 * writing "the /8 this host is in", and the masked form is what gets matched. */
static void mask_host_bits(uint8_t *a, unsigned bytes, unsigned prefix)
{
	for (unsigned i = 0; i < bytes; i++) {
		if (prefix >= 8 * (i + 1))
			continue;
		a[i] &= prefix > 8 * i ? (uint8_t)(0xff << (8 - (prefix - 8 * i))) : 0;
	}
}

/* "ADDR[/PREFIX]", IPv6 bare or in brackets. */
static int parse_cidr(const char *item, struct config_cidr *n, char *msg, size_t len)
{
	const char *addr = item, *slash = strchr(item, '/');
	size_t alen = slash != NULL ? (size_t)(slash - item) : strlen(item);
	char host[INET6_ADDRSTRLEN + 1];
	bool bracket = item[0] == '[';
	unsigned max;

	if (bracket) {
		if (alen < 2 || item[alen - 1] != ']')
			return msgf(msg, len, "'%s' is not an address or network", item);
		addr++;
		alen -= 2;
	}
	memset(n, 0, sizeof(*n));
	n->family = bracket || memchr(addr, ':', alen) != NULL ? AF_INET6 : AF_INET;
	max = n->family == AF_INET ? 32 : 128;
	if (!copy_span(host, sizeof(host), addr, alen) || inet_pton(n->family, host, n->addr) != 1)
		return msgf(msg, len, "'%s' is not an %s address or network", item,
		            n->family == AF_INET ? "IPv4" : "IPv6");
	n->prefix = max;
	if (slash != NULL) {
		uint64_t p;
		const char *end = parse_digits(slash + 1, &p);

		if (end == NULL || *end != '\0' || p > max)
			return msgf(msg, len, "'%s': prefix length must be 0..%u", item, max);
		n->prefix = (unsigned)p;
	}
	mask_host_bits(n->addr, max / 8, n->prefix);
	return 0;
}

static int parse_relay_clients(struct config *c, const struct opt_def *d, char *val, char *msg,
                               size_t len)
{
	struct config_cidr tmp[CONFIG_LIST_MAX];
	size_t n = 0;
	char *cur = val, *item;

	while ((item = next_item(&cur)) != NULL) {
		if (*item == '\0')
			return msgf(msg, len, "empty item in the list");
		if (n == CONFIG_LIST_MAX)
			return msgf(msg, len, "too many networks (at most %d)", CONFIG_LIST_MAX);
		if (parse_cidr(item, &tmp[n], msg, len) < 0)
			return -1;
		n++;
	}
	memcpy(c->relay_clients, tmp, n * sizeof(tmp[0]));
	c->relay_clients_count = n;
	return 0;
}

static void free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
}

/* Domains are stored lower case so that matching is a plain comparison; a
 * trailing dot (absolute form) is dropped, as it is when matching. */
static int add_domain(char **tmp, size_t *n, char *item, char *msg, size_t len)
{
	size_t l = strlen(item);
	char *copy;

	if (l > 1 && item[l - 1] == '.')
		item[--l] = '\0';
	if (l == 0)
		return msgf(msg, len, "empty item in the list");
	if (*n == CONFIG_LIST_MAX)
		return msgf(msg, len, "too many domains (at most %d)", CONFIG_LIST_MAX);
	if (check_dns_name(item, msg, len) < 0)
		return -1;
	for (char *p = item; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	copy = strdup(item);
	if (copy == NULL)
		return msgf(msg, len, "out of memory");
	tmp[(*n)++] = copy;
	return 0;
}

static int parse_relay_domains(struct config *c, const struct opt_def *d, char *val, char *msg,
                               size_t len)
{
	char *tmp[CONFIG_LIST_MAX];
	size_t n = 0;
	char *cur = val, *item;

	while ((item = next_item(&cur)) != NULL) {
		if (add_domain(tmp, &n, item, msg, len) < 0) {
			free_strings(tmp, n);
			return -1;
		}
	}
	free_strings(c->relay_domains, c->relay_domains_count);
	memcpy(c->relay_domains, tmp, n * sizeof(tmp[0]));
	c->relay_domains_count = n;
	return 0;
}

static int hex_value(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Hex byte pairs, each optionally followed by one ':' (not after the last).
 * Returns the number of bytes seen (only the first 32 are stored), or -1. */
static long decode_fingerprint(const char *s, uint8_t out[FINGERPRINT_LEN])
{
	long n = 0;

	while (*s != '\0') {
		int hi = hex_value(s[0]), lo = hi < 0 ? -1 : hex_value(s[1]);

		if (hi < 0 || lo < 0)
			return -1;
		if (n < FINGERPRINT_LEN)
			out[n] = (uint8_t)(hi << 4 | lo);
		n++;
		s += 2;
		if (s[0] == ':' && s[1] != '\0')
			s++;
	}
	return n;
}

/* Accepts what "openssl x509 -noout -fingerprint -sha256" prints, with or
 * without its "sha256 Fingerprint=" label, so the output can be pasted. */
static int parse_fingerprint(const char *item, uint8_t out[FINGERPRINT_LEN], char *msg, size_t len)
{
	static const char *const labels[] = {"sha256 Fingerprint=", "SHA256:"};
	const char *hex = item;
	long n;

	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
		size_t l = strlen(labels[i]);

		if (strncasecmp(hex, labels[i], l) == 0) {
			hex += l;
			break;
		}
	}
	n = decode_fingerprint(hex, out);
	if (n < 0)
		return msgf(msg, len,
		            "'%s' is not a SHA-256 fingerprint: expected hex byte pairs, "
		            "optionally separated by ':'",
		            item);
	if (n != FINGERPRINT_LEN)
		return msgf(msg, len, "'%s' is not a SHA-256 fingerprint: %ld bytes, expected %d",
		            item, n, FINGERPRINT_LEN);
	return 0;
}

static int parse_relay_certs(struct config *c, const struct opt_def *d, char *val, char *msg,
                             size_t len)
{
	uint8_t tmp[CONFIG_LIST_MAX][FINGERPRINT_LEN];
	size_t n = 0;
	char *cur = val, *item;

	while ((item = next_item(&cur)) != NULL) {
		if (*item == '\0')
			return msgf(msg, len, "empty item in the list");
		if (n == CONFIG_LIST_MAX)
			return msgf(msg, len, "too many fingerprints (at most %d)",
			            CONFIG_LIST_MAX);
		if (parse_fingerprint(item, tmp[n], msg, len) < 0)
			return -1;
		n++;
	}
	memcpy(c->relay_client_certs, tmp, n * sizeof(tmp[0]));
	c->relay_client_certs_count = n;
	return 0;
}

/* Old protocol names get their own message: someone asking for TLSv1.1 should
 * learn it is refused on purpose, not that it was misspelt. */
static int parse_tls_version(struct config *c, const struct opt_def *d, char *val, char *msg,
                             size_t len)
{
	static const struct {
		const char *name;
		int version; /* 0: refused */
	} names[] = {
	    {"TLSv1.2", TLS1_2_VERSION},
	    {"TLS1.2", TLS1_2_VERSION},
	    {"TLSv1.3", TLS1_3_VERSION},
	    {"TLS1.3", TLS1_3_VERSION},
	    {"SSLv2", 0},
	    {"SSLv3", 0},
	    {"SSL2", 0},
	    {"SSL3", 0},
	    {"TLSv1", 0},
	    {"TLSv1.0", 0},
	    {"TLSv1.1", 0},
	    {"TLS1", 0},
	    {"TLS1.0", 0},
	    {"TLS1.1", 0},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(val, names[i].name) != 0)
			continue;
		if (names[i].version == 0)
			return msgf(msg, len, "'%s' " TLS_REFUSED_MESSAGE, val);
		*(int *)(void *)((char *)c + d->off) = names[i].version;
		return 0;
	}
	return msgf(msg, len, "'%s' is not a TLS version (valid: TLSv1.2, TLSv1.3)", val);
}

/* OpenSSL skips TLS 1.3 suite names it does not know; a misspelt one is
 * an error here, so each name is tried alone. */
static bool tls13_suites_known(SSL_CTX *ctx, const char *list)
{
	char buf[CONFIG_LINE_MAX + 1], *save = NULL;
	size_t n = 0;

	snprintf(buf, sizeof(buf), "%s", list);
	for (char *name = strtok_r(buf, ":", &save); name != NULL;
	     name = strtok_r(NULL, ":", &save)) {
		STACK_OF(SSL_CIPHER) * sk;
		bool found = false;

		if (SSL_CTX_set_ciphersuites(ctx, name) != 1 ||
		    (sk = SSL_CTX_get_ciphers(ctx)) == NULL)
			return false;
		for (int i = 0; i < sk_SSL_CIPHER_num(sk) && !found; i++)
			found = strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i)), name) == 0;
		if (!found)
			return false;
		n++;
	}
	return n > 0;
}

/* Checks an OpenSSL cipher string (TLS 1.2 and older: CipherList) or TLS 1.3
 * suite list (CipherSuites) against this OpenSSL, so a typo is reported at
 * its line instead of at the first handshake. */
static int parse_ciphers(struct config *c, const struct opt_def *d, char *val, char *msg,
                         size_t len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	bool tls13 = d->off == FIELD_OF(cipher_suites);
	int ok;

	if (ctx == NULL)
		return msgf(msg, len, "OpenSSL cannot make a TLS context to check it");
	ok = tls13 ? tls13_suites_known(ctx, val) : SSL_CTX_set_cipher_list(ctx, val) == 1;
	SSL_CTX_free(ctx);
	ERR_clear_error();
	if (!ok)
		return msgf(msg, len,
		            tls13 ? "'%s' names no TLS 1.3 suite this OpenSSL has (see `openssl "
		                    "ciphers -s -tls1_3`)"
		                  : "'%s' matches no cipher this OpenSSL has (see `openssl ciphers "
		                    "-v '...'`)",
		            val);
	return set_string(string_field(c, d), val, msg, len);
}

#define SSL_OP_ENTRY(name)                                                                         \
	{                                                                                          \
#name, SSL_OP_##name                                                               \
	}
static const struct {
	const char *name; /* without "SSL_OP_" */
	uint64_t bits;
} ssl_op_names[] = {
    SSL_OP_ENTRY(ALL),
    SSL_OP_ENTRY(NO_SSLv2),
    SSL_OP_ENTRY(NO_SSLv3),
    SSL_OP_ENTRY(NO_TLSv1),
    SSL_OP_ENTRY(NO_TLSv1_1),
    SSL_OP_ENTRY(NO_TLSv1_2),
    SSL_OP_ENTRY(NO_TLSv1_3),
    SSL_OP_ENTRY(CIPHER_SERVER_PREFERENCE),
    SSL_OP_ENTRY(PRIORITIZE_CHACHA),
    SSL_OP_ENTRY(NO_TICKET),
    SSL_OP_ENTRY(NO_COMPRESSION),
    SSL_OP_ENTRY(NO_RENEGOTIATION),
    SSL_OP_ENTRY(ENABLE_KTLS),
    SSL_OP_ENTRY(NO_ANTI_REPLAY),
    SSL_OP_ENTRY(ENABLE_MIDDLEBOX_COMPAT),
    SSL_OP_ENTRY(SINGLE_DH_USE),
    SSL_OP_ENTRY(SINGLE_ECDH_USE),
    SSL_OP_ENTRY(NO_SESSION_RESUMPTION_ON_RENEGOTIATION),
    SSL_OP_ENTRY(LEGACY_SERVER_CONNECT),
    SSL_OP_ENTRY(DONT_INSERT_EMPTY_FRAGMENTS),
    SSL_OP_ENTRY(TLSEXT_PADDING),
    SSL_OP_ENTRY(SAFARI_ECDHE_ECDSA_BUG),
    SSL_OP_ENTRY(CRYPTOPRO_TLSEXT_BUG),
    SSL_OP_ENTRY(NO_QUERY_MTU),
    SSL_OP_ENTRY(COOKIE_EXCHANGE),
    SSL_OP_ENTRY(NO_ENCRYPT_THEN_MAC),
    SSL_OP_ENTRY(NO_EXTENDED_MASTER_SECRET),
    SSL_OP_ENTRY(ALLOW_NO_DHE_KEX),
    SSL_OP_ENTRY(IGNORE_UNEXPECTED_EOF),
    SSL_OP_ENTRY(ALLOW_CLIENT_RENEGOTIATION),
    SSL_OP_ENTRY(CLEANSE_PLAINTEXT),
    SSL_OP_ENTRY(TLS_ROLLBACK_BUG),
};

/* What krelay keeps set whatever the options say: compression invites CRIME,
 * and renegotiation is something kTLS cannot follow. */
#define SSL_OP_KEPT (SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION)

/* Sendmail's ServerSSLOptions / ClientSSLOptions: items separated by blanks
 * or commas, each "+NAME" (set), "-NAME" (clear) or "NAME" (set), where NAME
 * is SSL_OP_xxx (the prefix may be left out) or a number (0x...). */
static int parse_ssl_options(struct config *c, const struct opt_def *d, char *val, char *msg,
                             size_t len)
{
	struct config_ssl_options tmp = {0, 0};
	char *save = NULL;

	for (char *item = strtok_r(val, " \t,", &save); item != NULL;
	     item = strtok_r(NULL, " \t,", &save)) {
		bool clear = item[0] == '-';
		const char *name = item + (item[0] == '-' || item[0] == '+');
		uint64_t bits = 0;
		bool found = false;

		if (isdigit((unsigned char)name[0])) {
			char *end;
			errno = 0;
			bits = strtoull(name, &end, 0);
			found = errno == 0 && *end == '\0';
		} else {
			if (strncasecmp(name, "SSL_OP_", 7) == 0)
				name += 7;
			for (size_t i = 0; i < sizeof(ssl_op_names) / sizeof(ssl_op_names[0]);
			     i++) {
				if (strcasecmp(name, ssl_op_names[i].name) == 0) {
					bits = ssl_op_names[i].bits;
					found = true;
					break;
				}
			}
		}
		if (!found)
			return msgf(msg, len,
			            "'%s' is not an SSL_OP_ name krelay knows, nor a number "
			            "(e.g. +SSL_OP_NO_TLSv1_3, -SSL_OP_ENABLE_KTLS, 0x4000)",
			            item);
		if (clear && (bits & SSL_OP_KEPT) != 0)
			return msgf(msg, len,
			            "'%s' is refused: krelay never allows TLS compression or "
			            "renegotiation",
			            item);
		if (clear) {
			tmp.clear |= bits;
			tmp.set &= ~bits;
		} else {
			tmp.set |= bits;
			tmp.clear &= ~bits;
		}
	}
	*(struct config_ssl_options *)(void *)((char *)c + d->off) = tmp;
	return 0;
}

int config_duration(const char *val, unsigned *out)
{
	uint64_t v, mult = 1;
	const char *end = parse_digits(val, &v);

	if (end == NULL)
		return -1;
	if (*end != '\0') {
		switch (*end) {
		case 's':
			mult = 1;
			break;
		case 'm':
			mult = 60;
			break;
		case 'h':
			mult = 3600;
			break;
		case 'd':
			mult = 86400;
			break;
		default:
			return -1;
		}
		if (end[1] != '\0')
			return -1;
	}
	if (v == 0 || v > 366ull * 86400 / mult)
		return -1;
	*out = (unsigned)(v * mult);
	return 0;
}

static int parse_duration(struct config *c, const struct opt_def *d, char *val, char *msg,
                          size_t len)
{
	unsigned v;

	if (config_duration(val, &v) < 0)
		return msgf(msg, len, "'%s' is not a duration (like 90s, 15m, 1h, 5d)", val);
	if (d->max > 0 && (v < d->min || v > d->max))
		return msgf(msg, len, "'%s' is outside %llus..%llus", val,
		            (unsigned long long)d->min, (unsigned long long)d->max);
	*(unsigned *)(void *)((char *)c + d->off) = v;
	return 0;
}

/* RetrySchedule=MIN[,MAX]: first retry after MIN, doubling up to MAX. */
static int parse_retry(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	char *comma = strchr(val, ',');
	unsigned lo, hi;

	if (comma != NULL)
		*comma = '\0';
	if (config_duration(trim(val), &lo) < 0 ||
	    (comma != NULL && config_duration(trim(comma + 1), &hi) < 0))
		return msgf(msg, len, "expected MIN[,MAX] durations, like 1m,1h");
	if (comma == NULL)
		hi = lo > 3600 ? lo : 3600;
	if (hi < lo)
		return msgf(msg, len, "MAX is shorter than MIN");
	c->retry_min_s = lo;
	c->retry_max_s = hi;
	return 0;
}

static const char *const tls_policies[TLS_POLICY_COUNT] = {"none",   "may",  "encrypt",
                                                           "verify", "dane", "dane-only"};

const char *config_tls_policy_name(int policy)
{
	return policy >= 0 && policy < TLS_POLICY_COUNT ? tls_policies[policy] : "?";
}

int config_tls_policy_parse(const char *s)
{
	for (int i = 0; i < TLS_POLICY_COUNT; i++)
		if (strcasecmp(s, tls_policies[i]) == 0)
			return i;
	return -1;
}

static int parse_tls_policy(struct config *c, const struct opt_def *d, char *val, char *msg,
                            size_t len)
{
	int p = config_tls_policy_parse(val);

	if (p < 0)
		return msgf(
		    msg, len,
		    "'%s' is not a TLS policy (none, may, encrypt, verify, dane, dane-only)", val);
	c->tls_policy = p;
	return 0;
}

static int parse_yes_no(struct config *c, const struct opt_def *d, char *val, char *msg, size_t len)
{
	static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
	                                                                            "off", "0"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(val, yes[i]) == 0 || strcasecmp(val, no[i]) == 0) {
			*(bool *)((char *)c + d->off) = strcasecmp(val, yes[i]) == 0;
			return 0;
		}
	}
	return msgf(msg, len, "'%s' is not yes or no", val);
}

static int parse_body_path(struct config *c, const struct opt_def *d, char *val, char *msg,
                           size_t len)
{
	static const char *const names[] = {"auto", "splice", "copy"};

	for (int i = 0; i < 3; i++) {
		if (strcasecmp(val, names[i]) == 0) {
			c->body_path = i;
			return 0;
		}
	}
	return msgf(msg, len, "'%s' is not a body path (auto, splice, copy)", val);
}

/* Sendmail's DeliveryMode: b(ackground) makes the message durable, replies,
 * and delivers at once; i(nteractive) delivers before replying (and makes
 * the message durable only when that does not fully succeed, like
 * Sendmail's SuperSafe=interactive); q(ueueonly) only queues until a queue
 * run (`krelay queue flush`). */
static int parse_delivery_mode(struct config *c, const struct opt_def *d, char *val, char *msg,
                               size_t len)
{
	c->queue_only = c->interactive = false;
	if (strcasecmp(val, "background") == 0 || strcmp(val, "b") == 0)
		return 0;
	if (strcasecmp(val, "interactive") == 0 || strcmp(val, "i") == 0)
		c->interactive = true;
	else if (strcasecmp(val, "queueonly") == 0 || strcmp(val, "q") == 0)
		c->queue_only = true;
	else
		return msgf(msg, len,
		            "'%s' is not a delivery mode (background, interactive, queueonly)",
		            val);
	return 0;
}

/* Sendmail's spelling, matched case-sensitively: a pasted sendmail.cf line
 * must mean here what it meant there, and a near miss must not pass. */
#define FIELD(f) FIELD_OF(f)

static const struct opt_def opts[OPT_COUNT] = {
    [OPT_CA_CERT_PATH] = {"CACertPath", parse_path, FIELD(ca_cert_path), 0, 0},
    [OPT_CA_CERT_FILE] = {"CACertFile", parse_path, FIELD(ca_cert_file), 0, 0},
    [OPT_SERVER_CERT_FILE] = {"ServerCertFile", parse_path, FIELD(server_cert_file), 0, 0},
    [OPT_SERVER_KEY_FILE] = {"ServerKeyFile", parse_path, FIELD(server_key_file), 0, 0},
    [OPT_CLIENT_CERT_FILE] = {"ClientCertFile", parse_path, FIELD(client_cert_file), 0, 0},
    [OPT_CLIENT_KEY_FILE] = {"ClientKeyFile", parse_path, FIELD(client_key_file), 0, 0},
    [OPT_LISTEN] = {"Listen", parse_listen, 0, 0, 0},
    [OPT_QUEUE_DIRECTORY] = {"QueueDirectory", parse_abs_path, FIELD(queue_directory), 0, 0},
    [OPT_HOSTNAME] = {"Hostname", parse_hostname, FIELD(hostname), 0, 0},
    [OPT_WORKERS] = {"Workers", parse_unsigned, FIELD(workers), 1, 256},
    [OPT_MAX_MESSAGE_SIZE] = {"MaxMessageSize", parse_size, FIELD(max_message_size),
                              MESSAGE_SIZE_MIN, MESSAGE_SIZE_MAX},
    [OPT_MAX_RECIPIENTS] = {"MaxRecipients", parse_unsigned, FIELD(max_recipients), 1, 100000},
    [OPT_MAX_CONNECTIONS] = {"MaxConnections", parse_unsigned, FIELD(max_connections), 1, 1000000},
    [OPT_RELAY_CLIENTS] = {"RelayClients", parse_relay_clients, 0, 0, 0},
    [OPT_RELAY_DOMAINS] = {"RelayDomains", parse_relay_domains, 0, 0, 0},
    [OPT_RELAY_CLIENT_CERTS] = {"RelayClientCerts", parse_relay_certs, 0, 0, 0},
    [OPT_TLS_MIN_VERSION] = {"TLSMinVersion", parse_tls_version, FIELD(tls_min_version), 0, 0},
    [OPT_LOG_FILE] = {"LogFile", parse_path, FIELD(log_file), 0, 0},
    [OPT_COMMAND_TIMEOUT] = {"CommandTimeout", parse_unsigned, FIELD(command_timeout_s), 1, 86400},
    [OPT_DATA_TIMEOUT] = {"DataTimeout", parse_unsigned, FIELD(data_timeout_s), 1, 86400},
    [OPT_SMART_HOST] = {"SmartHost", parse_path, FIELD(smart_host), 0, 0},
    [OPT_TRANSPORT_TABLE] = {"TransportTable", parse_path, FIELD(transport_table), 0, 0},
    [OPT_DESTINATION_CONCURRENCY] = {"DestinationConcurrency", parse_unsigned,
                                     FIELD(destination_concurrency), 1, 10000},
    [OPT_MAX_MESSAGES_PER_CONNECTION] = {"MaxMessagesPerConnection", parse_unsigned,
                                         FIELD(max_messages_per_connection), 1, 1000000},
    [OPT_RETRY_SCHEDULE] = {"RetrySchedule", parse_retry, 0, 0, 0},
    [OPT_QUEUE_LIFETIME] = {"QueueLifetime", parse_duration, FIELD(queue_lifetime_s), 0, 0},
    [OPT_TLS_POLICY] = {"TLSPolicy", parse_tls_policy, 0, 0, 0},
    [OPT_TLS_POLICY_TABLE] = {"TLSPolicyTable", parse_path, FIELD(tls_policy_table), 0, 0},
    [OPT_DNS_SERVER] = {"DNSServer", parse_path, FIELD(dns_server), 0, 0},
    [OPT_DNSSEC_TRUST_ANCHOR_FILE] = {"DNSSECTrustAnchorFile", parse_path, FIELD(trust_anchor_file),
                                      0, 0},
    [OPT_MTA_STS] = {"MTASTS", parse_yes_no, FIELD(mta_sts), 0, 0},
    [OPT_MTA_STS_CA_FILE] = {"MTASTSCAFile", parse_path, FIELD(mta_sts_ca_file), 0, 0},
    [OPT_TLSRPT] = {"TLSRPT", parse_yes_no, FIELD(tlsrpt), 0, 0},
    [OPT_SHAPING_TABLE] = {"ShapingTable", parse_path, FIELD(shaping_table), 0, 0},
    [OPT_THROTTLE_STORE] = {"ThrottleStore", parse_throttle_store, 0, 0, 0},
    [OPT_METRICS_LISTEN] = {"MetricsListen", parse_metrics_listen, 0, 0, 0},
    [OPT_CONNECT_TIMEOUT] = {"ConnectTimeout", parse_duration, FIELD(connect_timeout_s), 0, 0},
    [OPT_BODY_PATH] = {"BodyPath", parse_body_path, 0, 0, 0},
    [OPT_DELIVERY_MODE] = {"DeliveryMode", parse_delivery_mode, 0, 0, 0},
    [OPT_TLS_MAX_VERSION] = {"TLSMaxVersion", parse_tls_version, FIELD(tls_max_version), 0, 0},
    [OPT_CIPHER_LIST] = {"CipherList", parse_ciphers, FIELD(cipher_list), 0, 0},
    [OPT_CIPHER_SUITES] = {"CipherSuites", parse_ciphers, FIELD(cipher_suites), 0, 0},
    [OPT_SERVER_SSL_OPTIONS] = {"ServerSSLOptions", parse_ssl_options, FIELD(server_ssl_options), 0,
                                0},
    [OPT_CLIENT_SSL_OPTIONS] = {"ClientSSLOptions", parse_ssl_options, FIELD(client_ssl_options), 0,
                                0},
    [OPT_INTERACTIVE_TIMEOUT] = {"InteractiveTimeout", parse_duration, FIELD(interactive_timeout_s),
                                 0, 0},
    [OPT_MIN_DATA_RATE] = {"MinDataRate", parse_unsigned, FIELD(min_data_rate), 0, 1000000000},
    [OPT_MAX_CONNECTIONS_PER_CLIENT] = {"MaxConnectionsPerClient", parse_unsigned,
                                        FIELD(max_connections_per_client), 0, 1000000},
    [OPT_LOG_LEVEL] = {"LogLevel", parse_unsigned, FIELD(log_level), 0, 99},
    [OPT_RUN_AS_USER] = {"RunAsUser", parse_run_as, FIELD(run_as_user), 0, 0},
    [OPT_RELAY_CLIENT_ISSUER] = {"RelayClientIssuer", parse_cert_issuer, 0, 0, 0},
    [OPT_RELAY_CLIENT_SUBJECT] = {"RelayClientSubject", parse_cert_subject, 0, 0, 0},
    [OPT_SENDMAIL_QUEUE] = {"SendmailQueue", parse_sendmail_queue, 0, 0, 0},
    [OPT_SENDMAIL_QUEUE_INTERVAL] = {"SendmailQueueInterval", parse_duration,
                                     FIELD(sendmail_queue_interval_s), 1, 86400},
};

const char *config_opt_name(enum config_opt opt)
{
	return (unsigned)opt < OPT_COUNT ? opts[opt].name : "?";
}

unsigned config_client_limit(const struct config *c)
{
	if (c->max_connections_per_client > c->max_connections)
		return c->max_connections;
	return c->max_connections_per_client;
}

int config_fill_hostname(struct config *c)
{
	char host[256] = "localhost";

	if (c->hostname != NULL)
		return 0;
	gethostname(host, sizeof(host) - 1);
	c->hostname = strdup(host);
	return c->hostname ? 0 : -1;
}

void config_defaults(struct config *c)
{
	struct sockaddr_in *sin;

	memset(c, 0, sizeof(*c));
	sin = (struct sockaddr_in *)&c->listen[0].addr;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(25);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->listen[0].addrlen = sizeof(*sin);
	strcpy(c->listen[0].text, "127.0.0.1:25");
	c->listen_count = 1;
	c->queue_directory = strdup("/var/spool/krelay");
	c->trust_anchor_file = strdup(CONFIG_TRUST_ANCHOR_DEFAULT);
	c->mta_sts_ca_file = strdup(CONFIG_PUBLIC_CA_DEFAULT);
	c->max_message_size = 10240000;
	c->max_recipients = 1000;
	c->max_connections = 1000;
	c->max_connections_per_client = 50; /* Postfix's smtpd_client_connection_count_limit */
	c->relay_clients[0] = (struct config_cidr){.family = AF_INET, .addr = {127}, .prefix = 8};
	c->relay_clients[1] = (struct config_cidr){.family = AF_INET6, .prefix = 128};
	c->relay_clients[1].addr[15] = 1;
	c->relay_clients_count = 2;
	c->tls_min_version = TLS1_2_VERSION;
	c->tls_max_version = TLS1_3_VERSION;
	c->command_timeout_s = 300;
	c->data_timeout_s = 300;
	c->min_data_rate = 500; /* Postfix's smtpd_min_data_rate */
	c->destination_concurrency = 20;
	c->max_messages_per_connection = 1000;
	c->retry_min_s = 60;
	c->retry_max_s = 3600;
	c->queue_lifetime_s = 5 * 86400;
	c->tls_policy = TLS_POLICY_MAY;
	c->connect_timeout_s = 30;
	c->body_path = BODY_PATH_AUTO;
	c->interactive_timeout_s = 30;
	c->sendmail_queue_interval_s = 10;
	c->log_level = LOG_LEVEL_DEFAULT;
}

void config_free(struct config *c)
{
	free(c->ca_cert_path);
	free(c->ca_cert_file);
	free(c->server_cert_file);
	free(c->server_key_file);
	free(c->client_cert_file);
	free(c->client_key_file);
	free(c->queue_directory);
	free(c->hostname);
	free(c->log_file);
	free(c->run_as_user);
	free_strings(c->sendmail_queues, c->sendmail_queues_count);
	for (size_t i = 0; i < c->relay_client_issuers_count; i++)
		free(c->relay_client_issuers[i]);
	for (size_t i = 0; i < c->relay_client_subjects_count; i++) {
		free(c->relay_client_subjects[i].issuer);
		free(c->relay_client_subjects[i].subject);
	}
	free(c->smart_host);
	free(c->transport_table);
	free(c->tls_policy_table);
	free(c->shaping_table);
	free(c->dns_server);
	free(c->trust_anchor_file);
	free(c->mta_sts_ca_file);
	free(c->cipher_list);
	free(c->cipher_suites);
	free_strings(c->relay_domains, c->relay_domains_count);
	free(c->path);
	memset(c, 0, sizeof(*c));
}

static const struct opt_def *find_opt(const char *name)
{
	for (size_t i = 0; i < OPT_COUNT; i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

/* Cuts a '#' comment: at the start of the line, or after whitespace (a '#'
 * glued to other text, as in a path, is part of the value). */
static void cut_comment(char *s)
{
	if (s[0] == '\0')
		return; /* (a blank line: nothing past its end is read) */
	if (s[0] == '#') {
		s[0] = '\0';
		return;
	}
	for (char *p = s + 1; *p != '\0'; p++) {
		if (*p == '#' && isspace((unsigned char)p[-1])) {
			*p = '\0';
			return;
		}
	}
}

int config_parse_line(struct config *c, const char *line, unsigned lineno, char *err, size_t errlen)
{
	char buf[CONFIG_LINE_MAX + 1], msg[CONFIG_ERR_MAX] = "";
	char *s, *eq, *name, *val;
	const struct opt_def *d;

	if (strlen(line) > CONFIG_LINE_MAX)
		return fail(c, lineno, err, errlen, "line is longer than %d characters",
		            CONFIG_LINE_MAX);
	strcpy(buf, line);
	s = trim(buf);
	cut_comment(s);
	s = trim(s);
	if (*s == '\0')
		return 0;
	/* sendmail.cf's "O Name=value" */
	if (s[0] == 'O' && (s[1] == ' ' || s[1] == '\t'))
		s = trim(s + 1);
	eq = strchr(s, '=');
	if (eq == NULL)
		return fail(c, lineno, err, errlen, "line has no '=': '%s'", s);
	*eq = '\0';
	name = trim(s);
	val = trim(eq + 1);
	if (*name == '\0')
		return fail(c, lineno, err, errlen, "no option name before '='");
	d = find_opt(name);
	if (d == NULL)
		return fail(c, lineno, err, errlen, "unknown option '%s'", name);
	if (*val == '\0')
		return fail(c, lineno, err, errlen, "%s: empty value", d->name);
	if (d->parse(c, d, val, msg, sizeof(msg)) < 0)
		return fail(c, lineno, err, errlen, "%s: %s", d->name, msg);
	c->line[d - opts] = lineno;
	return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *line = NULL, *copy;
	size_t cap = 0;
	ssize_t n;
	unsigned lineno = 0;
	int ret = 0;

	if (f == NULL || (copy = strdup(path)) == NULL) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		return -1;
	}
	free(c->path);
	c->path = copy;
	while (ret == 0 && (n = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if ((size_t)n != strlen(line)) {
			ret = fail(c, lineno, err, errlen, "line contains a NUL byte");
			break;
		}
		line[strcspn(line, "\r\n")] = '\0';
		ret = config_parse_line(c, line, lineno, err, errlen);
	}
	if (ret == 0 && ferror(f)) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		ret = -1;
	}
	free(line);
	fclose(f);
	return ret;
}

void config_where(const struct config *c, enum config_opt opt, char *buf, size_t len)
{
	unsigned line = (unsigned)opt < OPT_COUNT ? c->line[opt] : 0;

	if (line == 0)
		snprintf(buf, len, "built-in default");
	else if (c->path != NULL)
		snprintf(buf, len, "%s:%u", c->path, line);
	else
		snprintf(buf, len, "line %u", line);
}

int config_tls_versions(const struct config *c, bool server, int *min, int *max, char *err,
                        size_t errlen)
{
	const struct config_ssl_options *o =
	    server ? &c->server_ssl_options : &c->client_ssl_options;
	enum config_opt oo = server ? OPT_SERVER_SSL_OPTIONS : OPT_CLIENT_SSL_OPTIONS;
	int lo = c->tls_min_version, hi = c->tls_max_version;
	char w1[512], w2[512], w3[512];

	if ((o->set & SSL_OP_NO_TLSv1_2) && lo < TLS1_3_VERSION)
		lo = TLS1_3_VERSION;
	if ((o->set & SSL_OP_NO_TLSv1_3) && hi > TLS1_2_VERSION)
		hi = TLS1_2_VERSION;
	*min = lo;
	*max = hi;
	if (lo <= hi)
		return 0;
	config_where(c, OPT_TLS_MIN_VERSION, w1, sizeof(w1));
	config_where(c, OPT_TLS_MAX_VERSION, w2, sizeof(w2));
	config_where(c, oo, w3, sizeof(w3));
	snprintf(err, errlen,
	         "no TLS version is left for the %s side: TLSMinVersion (%s), TLSMaxVersion (%s) "
	         "and %s (%s) exclude both TLSv1.2 and TLSv1.3",
	         server ? "server" : "client", w1, w2, config_opt_name(oo), w3);
	return -1;
}

static bool prefix_match(const uint8_t *net, const uint8_t *a, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (memcmp(net, a, full) != 0)
		return false;
	return rest == 0 || ((net[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

bool config_cidr_match(const struct config_cidr *n, const struct sockaddr *sa)
{
	if (n == NULL || sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;

		return n->family == AF_INET &&
		       prefix_match(n->addr, (const uint8_t *)&sin->sin_addr, n->prefix);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		const uint8_t *a = sin6->sin6_addr.s6_addr;

		if (n->family == AF_INET6)
			return prefix_match(n->addr, a, n->prefix);
		/* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d. */
		return n->family == AF_INET && IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
		       prefix_match(n->addr, a + 12, n->prefix);
	}
	return false;
}

bool config_relay_client(const struct config *c, const struct sockaddr *sa)
{
	for (size_t i = 0; i < c->relay_clients_count; i++)
		if (config_cidr_match(&c->relay_clients[i], sa))
			return true;
	return false;
}

bool config_relay_domain(const struct config *c, const char *domain)
{
	size_t n;

	if (domain == NULL)
		return false;
	n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0)
		return false;
	for (size_t i = 0; i < c->relay_domains_count; i++)
		if (strlen(c->relay_domains[i]) == n &&
		    strncasecmp(c->relay_domains[i], domain, n) == 0)
			return true;
	return false;
}

bool config_relay_cert(const struct config *c, const uint8_t sha256[32], const char *issuer,
                       const char *subject)
{
	for (size_t i = 0; i < c->relay_client_certs_count; i++)
		if (memcmp(c->relay_client_certs[i], sha256, FINGERPRINT_LEN) == 0)
			return true;
	for (size_t i = 0; i < c->relay_client_issuers_count; i++)
		if (strcasecmp(c->relay_client_issuers[i], issuer) == 0)
			return true;
	for (size_t i = 0; i < c->relay_client_subjects_count; i++)
		if (strcasecmp(c->relay_client_subjects[i].issuer, issuer) == 0 &&
		    strcasecmp(c->relay_client_subjects[i].subject, subject) == 0)
			return true;
	return false;
}
