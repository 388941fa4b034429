/* sm_qf: see sm_qf.h. */
#include "sm_qf.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

#define MACROEXPAND 0x81 /* \201: the macro named by what follows */
#define METAQUOTE   0xff /* \377: the byte after it is data */

/* A record: its type and its text, continuation lines joined with "\n". */
struct rec {
	char type;
	const char *p; /* the first line's text after the type */
	size_t len;    /* up to the end of its last continuation line */
	unsigned line;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

const char *smqf_name_id(const char *name, const char *prefix)
{
	size_t n, plen = strlen(prefix);

	if (strncmp(name, prefix, plen) != 0)
		return NULL;
	n = strlen(name + plen);
	if (n < 8 || n > 20)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[plen + i]))
			return NULL;
	return name + plen;
}

/* Removes Sendmail's quoting (\377 before a byte that is data) from a value
 * that may hold no macro reference (envelope addresses, macro values):
 * malloc'd, or NULL with err set. */
static char *unquote(const char *p, size_t n, const char *what, unsigned line, char *err,
                     size_t errlen)
{
	char *out = malloc(n + 1), *o = out;

	if (out == NULL) {
		fail(err, errlen, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == METAQUOTE && i + 1 < n) {
			*o++ = p[++i];
			continue;
		}
		if (c == '\0' || (c >= 0x80 && c < 0xa0) || c == METAQUOTE) {
			free(out);
			fail(err, errlen, "line %u: %s holds Sendmail's internal code \\%03o", line,
			     what, c);
			return NULL;
		}
		*o++ = (char)c;
	}
	*o = '\0';
	return out;
}

/* "<addr>" or "addr" -> addr (malloc'd), or NULL with err set. */
static char *address(const char *p, size_t n, const char *what, unsigned line, char *err,
                     size_t errlen)
{
	char *a;

	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	while (n > 0 && (*p == ' ' || *p == '\t'))
		p++, n--;
	if (n >= 2 && p[0] == '<' && p[n - 1] == '>')
		p++, n -= 2;
	if ((a = unquote(p, n, what, line, err, errlen)) == NULL)
		return NULL;
	for (const char *s = a; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == '<' || *s == '>' || *s == 0x7f) {
			fail(err, errlen, "line %u: %s '%s' is not an address", line, what, a);
			free(a);
			return NULL;
		}
	return a;
}

const char *smqf_macro(const struct smqf *q, const char *name)
{
	size_t n = strlen(name);

	if (n > 2 && name[0] == '{' && name[n - 1] == '}')
		name++, n -= 2;
	for (size_t i = 0; i < q->macro_count; i++)
		if (strlen(q->macros[i].name) == n && strncmp(q->macros[i].name, name, n) == 0)
			return q->macros[i].value;
	return NULL;
}

/* $x / ${name} as the file names it: *name set to the name (malloc'd), and
 * the bytes it took returned; 0 when p does not start a macro name. */
static size_t macro_name(const char *p, size_t n, char **name)
{
	if (n >= 1 && p[0] == '{') {
		const char *end = memchr(p, '}', n);
		if (end == NULL || end == p + 1)
			return 0;
		*name = strndup(p + 1, (size_t)(end - p - 1));
		return (size_t)(end - p) + 1;
	}
	if (n >= 1 && (isalnum((unsigned char)p[0]) || ispunct((unsigned char)p[0]))) {
		*name = strndup(p, 1);
		return 1;
	}
	return 0;
}

static int add_macro(struct smqf *q, const struct rec *r, char *err, size_t errlen)
{
	char *name = NULL, *value;
	size_t k = macro_name(r->p, r->len, &name);
	void *grown;

	if (k == 0 || name == NULL)
		return fail(err, errlen, "line %u: a $ record without a macro name", r->line);
	if ((value = unquote(r->p + k, r->len - k, "a macro value", r->line, err, errlen)) ==
	    NULL) {
		free(name);
		return -1;
	}
	grown = realloc(q->macros, (q->macro_count + 1) * sizeof(*q->macros));
	if (grown == NULL) {
		free(name);
		free(value);
		return fail(err, errlen, "out of memory");
	}
	q->macros = grown;
	q->macros[q->macro_count].name = name;
	q->macros[q->macro_count].value = value;
	q->macro_count++;
	return 0;
}

/* R<flags>:<addr>, with the Q (ORCPT) record before it, if any. */
static int add_rcpt(struct smqf *q, const struct rec *r, char **orcpt, char *err, size_t errlen)
{
	const char *colon = memchr(r->p, ':', r->len);
	size_t nflags = colon ? (size_t)(colon - r->p) : 0;
	struct smqf_rcpt *rc;
	char *addr;
	void *grown;

	if (colon == NULL || nflags >= sizeof(rc->flags))
		return fail(err, errlen, "line %u: an R record without its flags and ':'", r->line);
	for (size_t i = 0; i < nflags; i++)
		if (!isalpha((unsigned char)r->p[i]))
			return fail(err, errlen, "line %u: unknown recipient flag '%c'", r->line,
			            r->p[i]);
	addr = address(colon + 1, r->len - nflags - 1, "recipient", r->line, err, errlen);
	if (addr == NULL)
		return -1;
	if (addr[0] == '|' || addr[0] == '/' || addr[0] == ':' || strchr(addr, '@') == NULL ||
	    strchr(addr, '@')[1] == '\0') {
		fail(err, errlen,
		     "line %u: recipient '%s' is local (a program, a file, an :include: or a name "
		     "without a domain): Sendmail delivers it, krelay only relays",
		     r->line, addr);
		free(addr);
		return -1;
	}
	grown = realloc(q->rcpts, (q->rcpt_count + 1) * sizeof(*q->rcpts));
	if (grown == NULL) {
		free(addr);
		return fail(err, errlen, "out of memory");
	}
	q->rcpts = grown;
	rc = &q->rcpts[q->rcpt_count++];
	memset(rc, 0, sizeof(*rc));
	rc->addr = addr;
	memcpy(rc->flags, r->p, nflags);
	rc->orcpt = *orcpt;
	*orcpt = NULL;
	return 0;
}

/* Whether a header's ?cond? lets it through. */
static bool header_wanted(const struct smqf *q, const char *cond, size_t n)
{
	if (n == 0)
		return true;
	if (cond[0] == '$') {
		char name[128];
		if (n > 1 && cond[1] == '{' && cond[n - 1] == '}' && n - 3 < sizeof(name)) {
			memcpy(name, cond + 2, n - 3);
			name[n - 3] = '\0';
		} else if (n == 2) {
			name[0] = cond[1];
			name[1] = '\0';
		} else {
			return false;
		}
		const char *v = smqf_macro(q, name);
		return v != NULL && *v != '\0';
	}
	for (size_t i = 0; i < n; i++)
		if (strchr(SMQF_MAILER_FLAGS, cond[i]) != NULL)
			return true;
	return false;
}

static const char *expand(const struct smqf *q, const char *name, const char *hostname)
{
	const char *v;

	if (strcmp(name, "g") == 0 || strcmp(name, "f") == 0)
		return q->sender;
	if ((v = smqf_macro(q, name)) != NULL)
		return v;
	if (strcmp(name, "j") == 0 || strcmp(name, "w") == 0)
		return hostname;
	return "";
}

/* H[?cond?]Name: value -> "Name: value\r\n" (folded lines kept, CRLF). */
static int add_header(struct smqf *q, struct strbuf *out, const struct rec *r, const char *hostname,
                      char *err, size_t errlen)
{
	const char *p = r->p, *end = r->p + r->len, *cond = "", *colon;
	size_t ncond = 0;

	if (p < end && *p == '?') {
		const char *close = memchr(p + 1, '?', (size_t)(end - p - 1));
		if (close == NULL)
			return fail(err, errlen,
			            "line %u: a header condition without its closing '?'", r->line);
		cond = p + 1;
		ncond = (size_t)(close - cond);
		p = close + 1;
	}
	colon = memchr(p, ':', (size_t)(end - p));
	if (colon == NULL || colon == p)
		return fail(err, errlen, "line %u: a header without 'Name:'", r->line);
	for (const char *s = p; s < colon; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return fail(err, errlen,
			            "line %u: a header name with a space or control byte", r->line);
	q->header_count++;
	if (!header_wanted(q, cond, ncond) ||
	    (q->delete_bcc && colon - p == 3 && strncasecmp(p, "Bcc", 3) == 0)) {
		q->headers_dropped++;
		return 0;
	}
	for (const char *s = p; s < end; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == METAQUOTE && s + 1 < end) {
			if (s[1] == '\r' || s[1] == '\n' || s[1] == '\0')
				return fail(err, errlen, "line %u: header quotes a line end or NUL",
				            r->line);
			strbuf_put(out, ++s, 1);
		} else if (c == MACROEXPAND) {
			char *name = NULL;
			size_t k = macro_name(s + 1, (size_t)(end - s - 1), &name);
			if (k == 0 || name == NULL)
				return fail(err, errlen,
				            "line %u: a macro reference without a name", r->line);
			const char *v = expand(q, name, hostname);
			free(name);
			/* a value's own line ends (a folded $ record) become
			 * spaces: a macro cannot end the header or add one */
			for (; *v; v++)
				strbuf_put(out, *v == '\r' || *v == '\n' ? " " : v, 1);
			s += k;
		} else if (c == '\n') {
			strbuf_put(out, "\r\n", 2);
		} else if (c == '\0' || c == '\r' || (c >= 0x80 && c < 0xa0) || c == METAQUOTE) {
			return fail(err, errlen,
			            "line %u: header holds Sendmail's internal code \\%03o",
			            r->line, c);
		} else {
			strbuf_put(out, s, 1);
		}
	}
	strbuf_put(out, "\r\n", 2);
	return 0;
}

static int number(const struct rec *r, int64_t *out, char *err, size_t errlen)
{
	char buf[32], *end;
	long long v;

	if (r->len == 0 || r->len >= sizeof(buf))
		return fail(err, errlen, "line %u: '%c' record is not a number", r->line, r->type);
	memcpy(buf, r->p, r->len);
	buf[r->len] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return fail(err, errlen, "line %u: '%c' record '%s' is not a number", r->line,
		            r->type, buf);
	*out = v;
	return 0;
}

/* Splits the text into records; returns their count or -1 with err. */
static long split(const char *buf, size_t len, struct rec **recs, char *err, size_t errlen)
{
	size_t cap = 64, n = 0;
	struct rec *v = malloc(cap * sizeof(*v));
	unsigned line = 0;
	bool ended = false;

	if (v == NULL)
		return fail(err, errlen, "out of memory");
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t l = nl ? (size_t)(nl - (buf + i)) : len - i;
		line++;
		if (nl == NULL) {
			free(v);
			return fail(err, errlen, "line %u: cut short (no line end)", line);
		}
		if (memchr(buf + i, '\0', l) != NULL) {
			free(v);
			return fail(err, errlen, "line %u: a NUL byte", line);
		}
		if (ended) {
			free(v);
			return fail(err, errlen,
			            "line %u: data after the '.' that ends the file "
			            "(Sendmail takes that for an attack)",
			            line);
		}
		if (l > 0 && (buf[i] == ' ' || buf[i] == '\t')) {
			if (n == 0) {
				free(v);
				return fail(err, errlen, "line 1: a continuation line first");
			}
			v[n - 1].len = (size_t)(buf + i + l - v[n - 1].p);
		} else if (l == 0) {
			free(v);
			return fail(err, errlen, "line %u: an empty line", line);
		} else {
			if (n == cap) {
				void *grown = realloc(v, (cap *= 2) * sizeof(*v));
				if (grown == NULL) {
					free(v);
					return fail(err, errlen, "out of memory");
				}
				v = grown;
			}
			v[n++] = (struct rec){buf[i], buf + i + 1, l - 1, line};
			if (buf[i] == '.' && l == 1)
				ended = true;
		}
		i += l + 1;
	}
	if (!ended) {
		free(v);
		return fail(err, errlen, "no '.' line at the end: the file is cut short");
	}
	*recs = v;
	return (long)n;
}

int smqf_parse(const char *buf, size_t len, const char *hostname, struct smqf *out, char *err,
               size_t errlen)
{
	struct smqf q;
	struct strbuf hdr = {0};
	struct rec *recs = NULL;
	char *orcpt = NULL;
	long n = split(buf, len, &recs, err, errlen);
	int64_t v = 0;
	int ret = -1;

	if (n < 0)
		return -1;
	memset(&q, 0, sizeof(q));
	if (n < 1 || recs[0].type != 'V' || recs[0].len != 1 || recs[0].p[0] != '8') {
		fail(err, errlen, "line 1: not 'V8' (a Sendmail 8.12 or later queue file)");
		goto out;
	}
	/* First pass: everything but the headers, which need the macros, the
	 * sender and the F flags wherever they stand in the file. */
	for (long i = 1; i < n; i++) {
		const struct rec *r = &recs[i];
		switch (r->type) {
		case 'T':
		case 'K':
		case 'N':
			if (number(r, &v, err, errlen) < 0)
				goto out;
			if (r->type == 'T')
				q.created = v;
			else if (r->type == 'K')
				q.last_try = v;
			else
				q.attempts = v > 1000000 ? 1000000 : (unsigned)v;
			break;
		case 'P': /* priority, I (df device and inode): recomputed */
		case 'I':
		case 'M': /* status text: ignored on reading, as Sendmail does */
		case 'L':
		case 'E':
		case 'D':
		case 'Y':
		case 'A': /* AUTH=: krelay does not pass it on */
		case 'r': /* final recipient: a DSN's own field */
		case '!': /* DELIVERBY: not offered */
		case 'H':
		case '.':
			break;
		case 'd':
			free(q.df_dir);
			if ((q.df_dir = unquote(r->p, r->len, "d", r->line, err, errlen)) == NULL)
				goto out;
			break;
		case 'B':
			if (r->len == 8 && strncasecmp(r->p, "8BITMIME", 8) == 0)
				q.body_type = 8;
			else if (r->len == 4 && strncasecmp(r->p, "7BIT", 4) == 0)
				q.body_type = 7;
			else if (r->len == 10 && strncasecmp(r->p, "BINARYMIME", 10) == 0)
				q.body_type = 9;
			else {
				fail(err, errlen, "line %u: body type '%.*s' is not known", r->line,
				     (int)r->len, r->p);
				goto out;
			}
			break;
		case 'F':
			for (size_t k = 0; k < r->len; k++) {
				switch (r->p[k]) {
				case '8':
					q.eight_bit = true;
					break;
				case 'b':
					q.delete_bcc = true;
					break;
				case 'e':
					q.smtputf8 = true;
					break;
				case 'd':
					if (q.ret == 0)
						q.ret = 'F';
					break;
				case 'n':
					q.ret = 'H';
					break;
				default: /* r (a bounce), s (split), w (warned) */
					break;
				}
			}
			break;
		case 'q':
			fail(err, errlen,
			     "line %u: quarantined ('%.*s'): release it with sendmail -qQ first",
			     r->line, (int)r->len, r->p);
			goto out;
		case 'C':
			/* a controlling user: the R lines after it came from
			 * .forward or :include: and are checked like any other */
			break;
		case '$':
			if (add_macro(&q, r, err, errlen) < 0)
				goto out;
			break;
		case 'S':
			free(q.sender);
			if ((q.sender = address(r->p, r->len, "sender", r->line, err, errlen)) ==
			    NULL)
				goto out;
			break;
		case 'Z':
			free(q.envid);
			if ((q.envid = unquote(r->p, r->len, "ENVID", r->line, err, errlen)) ==
			    NULL)
				goto out;
			break;
		case 'Q':
			free(orcpt);
			if ((orcpt = unquote(r->p, r->len, "ORCPT", r->line, err, errlen)) == NULL)
				goto out;
			break;
		case 'R':
			if (add_rcpt(&q, r, &orcpt, err, errlen) < 0)
				goto out;
			break;
		case 'V':
			fail(err, errlen, "line %u: a second V record", r->line);
			goto out;
		default:
			fail(err, errlen,
			     "line %u: unknown record '%c' (Sendmail itself calls such a "
			     "file bad)",
			     r->line, r->type);
			goto out;
		}
	}
	if (q.sender == NULL) {
		fail(err, errlen, "no S record: no envelope sender");
		goto out;
	}
	if (q.rcpt_count == 0) {
		fail(err, errlen, "no R record: no recipient left to deliver");
		goto out;
	}
	for (long i = 1; i < n; i++)
		if (recs[i].type == 'H' &&
		    add_header(&q, &hdr, &recs[i], hostname, err, errlen) < 0)
			goto out;
	strbuf_put(&hdr, "\r\n", 2);
	if (hdr.oom) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	q.headers = hdr.p;
	q.headers_len = hdr.len;
	hdr.p = NULL;
	*out = q;
	ret = 0;
out:
	free(recs);
	free(orcpt);
	strbuf_free(&hdr);
	if (ret < 0)
		smqf_free(&q);
	return ret;
}

void smqf_free(struct smqf *q)
{
	for (size_t i = 0; i < q->rcpt_count; i++) {
		free(q->rcpts[i].addr);
		free(q->rcpts[i].orcpt);
	}
	for (size_t i = 0; i < q->macro_count; i++) {
		free(q->macros[i].name);
		free(q->macros[i].value);
	}
	free(q->rcpts);
	free(q->macros);
	free(q->sender);
	free(q->envid);
	free(q->df_dir);
	free(q->headers);
	memset(q, 0, sizeof(*q));
}
