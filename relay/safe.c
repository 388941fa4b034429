/* safe: see safe.h. */
#include "safe.h"

#include <arpa/inet.h>
#include <string.h>

/* Bytes that stand as themselves in a context, beyond printable ASCII. */
enum keep {
	KEEP_SPACE = 1, /* ' ' */
	KEEP_TAB = 2,   /* '\t' */
	KEEP_UTF8 = 4,  /* well-formed UTF-8 that shows as text (see utf8_len) */
};

/* The length of the well-formed UTF-8 sequence (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF) of two or more bytes at p, or 0
 * when there is none or it is a character that does not show as what it is:
 * a C1 control (U+0080..U+009F), a line or paragraph separator (U+2028,
 * U+2029) or a bidirectional override or isolate (U+202A..U+202E,
 * U+2066..U+2069), which could make a log line read other than it is. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned cp;
	size_t n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1fu;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0fu;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07u;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return 0;
	return n;
}

size_t safe_utf8_len(const unsigned char *p)
{
	return p[0] < 0x80 ? (p[0] != 0) : utf8_len(p);
}

static const char *escape(char *dst, size_t cap, const char *src, const char *special,
                          unsigned keep)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
		unsigned char b = *p;
		size_t u = (keep & KEEP_UTF8) && b >= 0x80 ? utf8_len(p) : 0;

		if (u > 0) {
			if (n + u >= cap)
				break;
			memcpy(dst + n, p, u);
			n += u;
			p += u - 1;
			continue;
		}
		bool plain = (b > ' ' && b < 0x7f && strchr(special, b) == NULL) ||
		             (b == ' ' && (keep & KEEP_SPACE)) || (b == '\t' && (keep & KEEP_TAB));

		if (plain) {
			if (n + 1 >= cap)
				break;
			dst[n++] = (char)b;
		} else {
			if (n + 4 >= cap)
				break;
			dst[n++] = '\\';
			dst[n++] = 'x';
			dst[n++] = hex[b >> 4];
			dst[n++] = hex[b & 15];
		}
	}
	dst[n] = '\0';
	return dst;
}

const char *safe_log(char *dst, size_t cap, const char *src)
{
	return escape(dst, cap, src, "\\\"<>", KEEP_UTF8);
}

const char *safe_log_text(char *dst, size_t cap, const char *src)
{
	return escape(dst, cap, src, "\\\"<>", KEEP_SPACE | KEEP_UTF8);
}

const char *safe_comment(char *dst, size_t cap, const char *src, bool utf8)
{
	return escape(dst, cap, src, "\\\"()", KEEP_SPACE | (utf8 ? KEEP_UTF8 : 0));
}

const char *safe_body_text(char *dst, size_t cap, const char *src)
{
	return escape(dst, cap, src, "", KEEP_SPACE | KEEP_TAB);
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool domain_valid(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > 255)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
		} else if (is_alnum(c) || (c == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && s[len - 1] != '-';
}

bool safe_helo_valid(const char *s)
{
	size_t len = strlen(s);
	char lit[64];
	unsigned char addr[16];

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		if (len - 2 >= sizeof(lit))
			return false;
		memcpy(lit, s + 1, len - 2);
		lit[len - 2] = '\0';
		if (strncmp(lit, "IPv6:", 5) == 0)
			return inet_pton(AF_INET6, lit + 5, addr) == 1;
		return inet_pton(AF_INET, lit, addr) == 1;
	}
	return domain_valid(s, len);
}
