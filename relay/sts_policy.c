/* sts_policy: see sts_policy.h. */
#include "sts_policy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* s[0..n) trimmed of blanks at both ends, in place: the new start and length */
static const char *trim(const char *s, size_t *n)
{
	while (*n > 0 && is_ws(*s)) {
		s++;
		(*n)--;
	}
	while (*n > 0 && is_ws(s[*n - 1]))
		(*n)--;
	return s;
}

int sts_txt_parse(const char *txt, size_t len, char *id)
{
	bool first = true, have_id = false;
	size_t i = 0;

	id[0] = '\0';
	while (i < len) {
		const char *f = txt + i, *eq, *end = memchr(f, ';', len - i);
		size_t n = end ? (size_t)(end - f) : len - i, kl, vl;
		const char *k, *v;

		i += n + (end ? 1 : 0);
		f = trim(f, &n);
		if (n == 0) {
			if (first)
				return 0;
			continue; /* "...; " at the end */
		}
		eq = memchr(f, '=', n);
		if (eq == NULL)
			return first ? 0 : -1;
		kl = (size_t)(eq - f);
		vl = n - kl - 1;
		k = trim(f, &kl);
		v = trim(eq + 1, &vl);
		if (first) {
			/* section 3.1: the record starts with v=STSv1; any other
			 * record is not one (and is ignored) */
			if (kl != 1 || k[0] != 'v' || vl != 5 || memcmp(v, "STSv1", 5) != 0)
				return 0;
			first = false;
			continue;
		}
		if (kl == 2 && memcmp(k, "id", 2) == 0) {
			if (have_id || vl == 0 || vl > STS_ID_MAX)
				return -1;
			for (size_t j = 0; j < vl; j++)
				if (!isalnum((unsigned char)v[j]))
					return -1;
			memcpy(id, v, vl);
			id[vl] = '\0';
			have_id = true;
		}
		/* other fields (extensions) are ignored */
	}
	if (first)
		return 0;
	return have_id ? 1 : -1;
}

/* A host name, or "*." and one: labels of letters, digits, '-' and '_',
 * none empty, an optional final dot. */
static bool valid_pattern(const char *s, size_t n)
{
	size_t start = 0, label = 0;

	if (n >= 2 && s[0] == '*' && s[1] == '.')
		start = 2;
	if (n > start && s[n - 1] == '.')
		n--;
	if (n <= start || n > STS_NAME_MAX)
		return false;
	for (size_t i = start; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum(c) || c == '-' || c == '_') {
			label++;
		} else {
			return false;
		}
	}
	return label > 0;
}

int sts_policy_parse(const char *text, size_t len, struct sts_policy *p, char *err, size_t errlen)
{
	bool have_version = false, have_mode = false, have_age = false;
	size_t i = 0, line = 0;

	memset(p, 0, sizeof(*p));
	if (len > STS_POLICY_MAX) {
		snprintf(err, errlen, "policy larger than %u bytes", STS_POLICY_MAX);
		return -1;
	}
	while (i < len) {
		const char *l = text + i, *nl = memchr(l, '\n', len - i), *colon;
		size_t n = nl ? (size_t)(nl - l) : len - i, kl, vl;
		const char *k, *v;

		i += n + (nl ? 1 : 0);
		line++;
		if (n > 0 && l[n - 1] == '\r')
			n--;
		l = trim(l, &n);
		if (n == 0)
			continue;
		colon = memchr(l, ':', n);
		if (colon == NULL) {
			snprintf(err, errlen, "line %zu: no ':'", line);
			return -1;
		}
		kl = (size_t)(colon - l);
		vl = n - kl - 1;
		k = trim(l, &kl);
		v = trim(colon + 1, &vl);
		if (kl == 7 && memcmp(k, "version", 7) == 0) {
			if (have_version || vl != 5 || memcmp(v, "STSv1", 5) != 0) {
				snprintf(err, errlen, "line %zu: version is not STSv1", line);
				return -1;
			}
			have_version = true;
		} else if (kl == 4 && memcmp(k, "mode", 4) == 0) {
			if (have_mode) {
				snprintf(err, errlen, "line %zu: a second mode", line);
				return -1;
			}
			if (vl == 7 && memcmp(v, "enforce", 7) == 0)
				p->mode = STS_MODE_ENFORCE;
			else if (vl == 7 && memcmp(v, "testing", 7) == 0)
				p->mode = STS_MODE_TESTING;
			else if (vl == 4 && memcmp(v, "none", 4) == 0)
				p->mode = STS_MODE_NONE;
			else {
				snprintf(err, errlen,
				         "line %zu: mode is not enforce, testing or none", line);
				return -1;
			}
			have_mode = true;
		} else if (kl == 7 && memcmp(k, "max_age", 7) == 0) {
			unsigned long long a = 0;

			if (have_age || vl == 0 || vl > 10) {
				snprintf(err, errlen, "line %zu: bad max_age", line);
				return -1;
			}
			for (size_t j = 0; j < vl; j++) {
				if (!isdigit((unsigned char)v[j])) {
					snprintf(err, errlen, "line %zu: bad max_age", line);
					return -1;
				}
				a = a * 10 + (unsigned)(v[j] - '0');
			}
			p->max_age = a > STS_MAX_AGE ? STS_MAX_AGE : (unsigned)a;
			have_age = true;
		} else if (kl == 2 && memcmp(k, "mx", 2) == 0) {
			if (!valid_pattern(v, vl)) {
				snprintf(err, errlen, "line %zu: bad mx pattern", line);
				return -1;
			}
			if (p->nmx < STS_MX_MAX) {
				size_t m = vl;
				if (v[m - 1] == '.')
					m--; /* (valid_pattern: a name is left) */
				for (size_t j = 0; j < m; j++)
					p->mx[p->nmx][j] = (char)tolower((unsigned char)v[j]);
				p->mx[p->nmx][m] = '\0';
				p->nmx++;
			}
		}
		/* other keys: extensions, ignored (section 3.2) */
	}
	if (!have_version || !have_mode || !have_age) {
		snprintf(err, errlen, "%s missing",
		         !have_version ? "version"
		         : !have_mode  ? "mode"
		                       : "max_age");
		return -1;
	}
	if (p->mode != STS_MODE_NONE && p->nmx == 0) {
		snprintf(err, errlen, "no mx line");
		return -1;
	}
	return 0;
}

bool sts_mx_match(const struct sts_policy *p, const char *host)
{
	size_t hl = strlen(host);

	if (hl > 0 && host[hl - 1] == '.')
		hl--;
	for (size_t i = 0; i < p->nmx; i++) {
		const char *pat = p->mx[i];
		size_t pl = strlen(pat);

		if (pat[0] == '*' && pat[1] == '.') {
			/* one label more, on the left: "*.example.com" matches
			 * "mx.example.com", not "example.com" nor "a.b.example.com" */
			const char *dot = memchr(host, '.', hl);
			size_t rest;

			if (dot == NULL || dot == host)
				continue;
			rest = hl - (size_t)(dot + 1 - host);
			if (rest == pl - 2 && strncasecmp(dot + 1, pat + 2, rest) == 0)
				return true;
		} else if (hl == pl && strncasecmp(host, pat, hl) == 0) {
			return true;
		}
	}
	return false;
}

const char *sts_mode_name(enum sts_mode m)
{
	switch (m) {
	case STS_MODE_NONE:
		return "none";
	case STS_MODE_TESTING:
		return "testing";
	case STS_MODE_ENFORCE:
		return "enforce";
	}
	return "?";
}
