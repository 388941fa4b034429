/* submit: see submit.h. */
#include "submit.h"

#include "strbuf.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int failf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- addresses -------------------------------------------------------------- */

char *submit_addr(const char *addr, const char *host, char *err, size_t errlen)
{
	size_t len = strlen(addr);
	char *out;

	if (len >= 2 && addr[0] == '<' && addr[len - 1] == '>') {
		addr++;
		len -= 2;
	}
	if (len == 0) {
		failf(err, errlen, "empty address");
		return NULL;
	}
	if (len > 254) {
		failf(err, errlen, "address longer than 254 octets");
		return NULL;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)addr[i] <= ' ' || addr[i] == 0x7f || addr[i] == '<' ||
		    addr[i] == '>') {
			/* (a quoted local part may hold a space: "a b"@x) */
			const char *q = memchr(addr, '"', len);
			if (q == NULL || addr[i] != ' ' || (size_t)(q - addr) > i) {
				failf(err, errlen, "'%.*s' is not an address", (int)len, addr);
				return NULL;
			}
		}
	bool local = memchr(addr, '@', len) == NULL;
	size_t cap = len + (local ? strlen(host) + 2 : 1);
	if ((out = malloc(cap)) == NULL) {
		failf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(out, cap, "%.*s%s%s", (int)len, addr, local ? "@" : "", local ? host : "");
	return out;
}

/* One element of a list: the <angle> address when there was one, else the
 * collected addr-spec; a source route "@a,@b:" before it is dropped. */
static int finish(char *angle, bool had_angle, char *plain, const char *host, char **rcpts,
                  size_t max, size_t *n, char *err, size_t errlen)
{
	char *a = had_angle ? angle : plain, *r;

	if (had_angle && a[0] == '@' && (r = strchr(a, ':')) != NULL)
		a = r + 1;
	if (a[0] == '\0')
		return had_angle ? failf(err, errlen, "empty address <>") : 0; /* ", ," */
	if (*n >= max)
		return failf(err, errlen, "more than %zu recipients", max);
	if ((rcpts[*n] = submit_addr(a, host, err, errlen)) == NULL)
		return -1;
	(*n)++;
	return 0;
}

int submit_addr_list(const char *value, const char *host, char **rcpts, size_t max, size_t *nrcpt,
                     char *err, size_t errlen)
{
	size_t len = strlen(value), n = *nrcpt, pl = 0, al = 0;
	char *plain = malloc(len + 1), *angle = malloc(len + 1);
	bool in_quote = false, in_angle = false, had_angle = false, in_group = false;
	int depth = 0, ret = -1;

	if (plain == NULL || angle == NULL) {
		failf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i <= len; i++) {
		char ch = value[i];
		char *buf = in_angle ? angle : plain;
		size_t *bl = in_angle ? &al : &pl;

		if (ch == '\0' && (in_quote || depth > 0 || in_angle)) {
			failf(err, errlen, "unbalanced %s in '%s'",
			      in_quote ? "'\"'"
			      : depth  ? "'('"
			               : "'<'",
			      value);
			goto out;
		}
		if (in_quote) {
			buf[(*bl)++] = ch;
			if (ch == '\\' && value[i + 1] != '\0')
				buf[(*bl)++] = value[++i];
			else if (ch == '"')
				in_quote = false;
			continue;
		}
		if (depth > 0) { /* a comment: dropped */
			if (ch == '\\' && value[i + 1] != '\0')
				i++;
			else if (ch == '(')
				depth++;
			else if (ch == ')')
				depth--;
			continue;
		}
		switch (ch) {
		case '"':
			in_quote = true;
			buf[(*bl)++] = ch;
			break;
		case '(':
			depth = 1;
			break;
		case '<':
			if (in_angle) {
				failf(err, errlen, "'<' inside <...> in '%s'", value);
				goto out;
			}
			in_angle = had_angle = true;
			al = 0;
			break;
		case '>':
			if (!in_angle) {
				failf(err, errlen, "'>' without '<' in '%s'", value);
				goto out;
			}
			in_angle = false;
			break;
		case ':':
			if (in_angle || in_group) {
				buf[(*bl)++] = ch;
				break;
			}
			in_group = true; /* "name: a, b;": the name is no address */
			pl = 0;
			had_angle = false;
			break;
		case ';':
		case ',':
		case '\0':
			if (in_angle) {
				buf[(*bl)++] = ch;
				break;
			}
			if (ch == ';')
				in_group = false;
			plain[pl] = angle[al] = '\0';
			if (finish(angle, had_angle, plain, host, rcpts, max, &n, err, errlen) < 0)
				goto out;
			pl = al = 0;
			had_angle = false;
			break;
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break; /* folding white space: not part of an address */
		default:
			if (had_angle && !in_angle)
				break; /* text after <addr> (not allowed; ignored) */
			buf[(*bl)++] = ch;
		}
	}
	*nrcpt = n;
	ret = 0;
out:
	if (ret < 0)
		while (n > *nrcpt)
			free(rcpts[--n]);
	free(plain);
	free(angle);
	return ret;
}

/* ---- the message ------------------------------------------------------------ */

/* Whether line (len octets, no line end) starts a header field: a name of
 * printable characters but ':', then ':'. */
static bool is_field(const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && line[i] > ' ' && line[i] < 0x7f && line[i] != ':')
		i++;
	return i > 0 && i < len && line[i] == ':';
}

static bool field_is(const char *field, size_t flen, const char *name)
{
	size_t n = strlen(name);

	return flen > n && field[n] == ':' && strncasecmp(field, name, n) == 0;
}

/* A header field: its first line's offset in the input and its end (after
 * its continuation lines), both without the line ends. */
struct field {
	const char *start;
	size_t len; /* to the end of its last line, line ends included as LF */
};

int submit_prepare(const char *in, size_t inlen, const struct submit_opts *o, struct submit_msg *m,
                   char *err, size_t errlen)
{
	struct strbuf hdr = {0}, body = {0}, out = {0};
	const char *p = in, *end = in + inlen;
	bool in_header = true, first = true, has_from = false, has_date = false, has_msgid = false;
	char *val = NULL;
	size_t vlen = 0, vcap = 0;
	int ret = -1;

	memset(m, 0, sizeof(*m));
	/* lines: header fields into hdr (unfolded copies go to the -t parser),
	 * the rest into body, all with CRLF */
	bool bcc = false, collect = false, seen_field = false;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *line = p;

		p = nl ? nl + 1 : end;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (o->dot_ends && len == 1 && line[0] == '.')
			break;
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)line[i] >= 0x80)
				m->eight_bit = true;
		if (first && len >= 5 && memcmp(line, "From ", 5) == 0) {
			first = false;
			continue; /* an mbox separator, not a header */
		}
		first = false;
		if (in_header) {
			bool cont = len > 0 && (line[0] == ' ' || line[0] == '\t') && seen_field;
			if (!cont && collect) {
				/* the previous field is complete: its addresses */
				val[vlen] = '\0';
				if (submit_addr_list(val, o->hostname, m->rcpts, SUBMIT_RCPT_MAX,
				                     &m->nrcpt, err, errlen) < 0)
					goto out;
				collect = false;
			}
			if (cont) {
				if (!bcc)
					strbuf_put(&hdr, line, len), strbuf_put(&hdr, "\r\n", 2);
			} else if (len > 0 && is_field(line, len)) {
				seen_field = true;
				bcc = field_is(line, len, "Bcc");
				has_from |= field_is(line, len, "From");
				has_date |= field_is(line, len, "Date");
				has_msgid |= field_is(line, len, "Message-ID");
				collect = o->extract && (bcc || field_is(line, len, "To") ||
				                         field_is(line, len, "Cc"));
				vlen = 0;
				if (!bcc)
					strbuf_put(&hdr, line, len), strbuf_put(&hdr, "\r\n", 2);
			} else {
				/* the blank line (put back when the parts are joined),
				 * or a line that is no field: the body starts there */
				in_header = false;
				if (len == 0)
					continue;
			}
			if (collect) {
				const char *v = cont ? line : memchr(line, ':', len) + 1;
				size_t n = (size_t)(line + len - v);
				if (vlen + n + 2 > vcap) {
					vcap = (vlen + n + 2) * 2;
					char *nv = realloc(val, vcap);
					if (nv == NULL) {
						failf(err, errlen, "out of memory");
						goto out;
					}
					val = nv;
				}
				memcpy(val + vlen, v, n);
				vlen += n;
				val[vlen++] = ' ';
			}
			if (in_header)
				continue;
		}
		strbuf_put(&body, line, len);
		strbuf_put(&body, "\r\n", 2);
	}
	if (collect) {
		val[vlen] = '\0';
		if (submit_addr_list(val, o->hostname, m->rcpts, SUBMIT_RCPT_MAX, &m->nrcpt, err,
		                     errlen) < 0)
			goto out;
	}
	/* what Sendmail adds, ahead of what the program wrote */
	if (o->auth_warning != NULL)
		strbuf_printf(&out, "X-Authentication-Warning: %s\r\n", o->auth_warning);
	if (!has_from) {
		if (o->full_name != NULL && o->full_name[0] != '\0') {
			strbuf_put(&out, "From: \"", 7);
			for (const char *f = o->full_name; *f; f++) {
				if (*f == '"' || *f == '\\')
					strbuf_put(&out, "\\", 1);
				if (*f != '\r' && *f != '\n')
					strbuf_put(&out, f, 1);
			}
			strbuf_printf(&out, "\" <%s>\r\n", o->sender);
		} else {
			strbuf_printf(&out, "From: %s\r\n",
			              o->sender[0] ? o->sender : "MAILER-DAEMON");
		}
	}
	if (!has_date) {
		char date[64];
		struct tm tm;
		localtime_r(&o->now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
		strbuf_printf(&out, "Date: %s\r\n", date);
	}
	if (!has_msgid)
		strbuf_printf(&out, "Message-ID: <%llx.%lx.krelay@%s>\r\n",
		              (unsigned long long)o->now, o->unique, o->hostname);
	strbuf_put(&out, hdr.p ? hdr.p : "", hdr.len);
	strbuf_put(&out, "\r\n", 2);
	strbuf_put(&out, body.p ? body.p : "", body.len);
	if (out.oom || hdr.oom || body.oom) {
		failf(err, errlen, "out of memory");
		goto out;
	}
	m->data = out.p;
	m->len = out.len;
	out.p = NULL;
	ret = 0;
out:
	if (ret < 0)
		submit_msg_free(m);
	free(out.p);
	free(hdr.p);
	free(body.p);
	free(val);
	return ret;
}

void submit_msg_free(struct submit_msg *m)
{
	free(m->data);
	for (size_t i = 0; i < m->nrcpt; i++)
		free(m->rcpts[i]);
	memset(m, 0, sizeof(*m));
}
