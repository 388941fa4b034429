/* safe: see safe.h. */
#include "safe.h"

#include <arpa/inet.h>
#include <string.h>

/* Bytes that stand as themselves in a context, beyond printable ASCII. */
enum keep {
	KEEP_SPACE = 1, /* ' ' */
	KEEP_TAB = 2,   /* '\t' */
};

static const char *escape(char *dst, size_t cap, const char *src, const char *special,
                          unsigned keep)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
		unsigned char b = *p;
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
	return escape(dst, cap, src, "\\\"<>", 0);
}

const char *safe_log_text(char *dst, size_t cap, const char *src)
{
	return escape(dst, cap, src, "\\\"<>", KEEP_SPACE);
}

const char *safe_comment(char *dst, size_t cap, const char *src)
{
	return escape(dst, cap, src, "\\\"()", KEEP_SPACE);
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
