/* metrics_http: see metrics_http.h. */
#include "metrics_http.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 5.6.2: token characters. */
static bool tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A request line, [s, s+n): 1 when it is whole and valid (the method and
 * target are given back), 0 when it is cut short (done false) and valid
 * so far, -1 when it is not a request line.  method SP target SP
 * HTTP/1.DIGIT, as RFC 9112 3 has it. */
static int request_line(const char *s, size_t n, bool done, const char **method, size_t *mlen,
                        const char **target, size_t *tlen)
{
	static const char version[] = "HTTP/1.";
	size_t i = 0, start;

	while (i < n && tchar((unsigned char)s[i]))
		i++;
	if (i == n)
		return done ? -1 : 0;
	if (i == 0 || s[i] != ' ')
		return -1;
	*method = s;
	*mlen = i;
	start = ++i;
	while (i < n && (unsigned char)s[i] > ' ' && (unsigned char)s[i] < 0x7f)
		i++;
	if (i == n)
		return done ? -1 : 0;
	if (i == start || s[i] != ' ')
		return -1;
	*target = s + start;
	*tlen = i - start;
	i++;
	for (size_t k = 0; k < sizeof(version) - 1; k++, i++) {
		if (i == n)
			return done ? -1 : 0;
		if (s[i] != version[k])
			return -1;
	}
	if (i == n)
		return done ? -1 : 0;
	if (s[i] < '0' || s[i] > '9')
		return -1;
	i++;
	return i == n ? (done ? 1 : 0) : -1;
}

/* A header field line (RFC 9112 5): name ":" value, no line folding.
 * The same three answers as request_line. */
static int field_line(const char *s, size_t n, bool done)
{
	size_t i = 0;

	while (i < n && tchar((unsigned char)s[i]))
		i++;
	if (i == n)
		return done ? -1 : 0;
	if (i == 0 || s[i] != ':')
		return -1;
	for (i++; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c != '\t' && (c < ' ' || c == 0x7f))
			return -1;
	}
	return done ? 1 : 0;
}

/* The path of a request target: origin form "/path?query", or absolute
 * form "http://host/path?query" (which servers must accept). */
static void target_path(const char *t, size_t n, const char **path, size_t *plen)
{
	const char *q;

	if (n > 7 && strncasecmp(t, "http://", 7) == 0) {
		const char *slash = memchr(t + 7, '/', n - 7);
		n = slash ? n - (size_t)(slash - t) : 0;
		t = slash ? slash : "/";
		if (n == 0)
			n = 1;
	}
	q = memchr(t, '?', n);
	*path = t;
	*plen = q ? (size_t)(q - t) : n;
}

int metrics_http_parse(const char *buf, size_t len, bool *head)
{
	const char *method = NULL, *target = NULL, *path;
	size_t mlen = 0, tlen = 0, plen, pos = 0;
	bool first = true;

	*head = false;
	for (;;) {
		const char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
		size_t n = nl ? (size_t)(nl - (buf + pos)) : len - pos;
		bool done = nl != NULL;
		int r;

		if (n > 0 && buf[pos + n - 1] == '\r')
			n--; /* CRLF (or its CR so far); a CR anywhere else is refused below */
		if (first)
			r = request_line(buf + pos, n, done, &method, &mlen, &target, &tlen);
		else if (n == 0 && done)
			break; /* the empty line: the head is whole */
		else
			r = field_line(buf + pos, n, done);
		if (r < 0)
			return 400;
		if (!done)
			return len >= METRICS_HTTP_MAX ? 400 : 0;
		first = false;
		pos = (size_t)(nl - buf) + 1;
		if (pos > METRICS_HTTP_MAX)
			return 400;
	}
	target_path(target, tlen, &path, &plen);
	if (plen != strlen(METRICS_PATH) || memcmp(path, METRICS_PATH, plen) != 0)
		return 404;
	if (mlen == 4 && memcmp(method, "HEAD", 4) == 0)
		*head = true;
	else if (!(mlen == 3 && memcmp(method, "GET", 3) == 0))
		return 405;
	return 200;
}

const char *metrics_http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	default:
		return "Bad Request";
	}
}

/* The length of the well-formed UTF-8 character at s (n bytes there), or
 * 0 when it is not one (RFC 3629: no overlong forms, no surrogates). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t need;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need;
}

void metrics_label_value(struct strbuf *out, const char *value)
{
	const unsigned char *s = (const unsigned char *)(value ? value : "");
	size_t n = strlen((const char *)s), used = 0;

	while (used < n) {
		size_t k = utf8_char(s + used, n - used);
		unsigned char c = s[used];

		if (used + (k ? k : 1) > METRICS_LABEL_MAX)
			break;
		if (k == 0 || (k == 1 && c != '\n' && (c < ' ' || c == 0x7f)))
			strbuf_put(out, "?", 1);
		else if (c == '\\')
			strbuf_put(out, "\\\\", 2);
		else if (c == '"')
			strbuf_put(out, "\\\"", 2);
		else if (c == '\n')
			strbuf_put(out, "\\n", 2);
		else
			strbuf_put(out, (const char *)s + used, k);
		used += k ? k : 1;
	}
}

void metrics_help_text(struct strbuf *out, const char *text)
{
	for (const char *p = text; *p != '\0'; p++) {
		if (*p == '\\')
			strbuf_put(out, "\\\\", 2);
		else if (*p == '\n')
			strbuf_put(out, "\\n", 2);
		else
			strbuf_put(out, p, 1);
	}
}
