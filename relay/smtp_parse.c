/* smtp_parse: the SMTP command parser (see smtp_parse.h).
 *
 * Pure code: no I/O, no allocation.  Addresses follow RFC 5321 4.1.2
 * (Mailbox, Local-part, Domain, address literals) as extended by RFC 6531
 * (UTF-8 in local parts and domains when SMTPUTF8 is in effect).
 *
 * Error replies are static strings, except the one for an unsupported
 * parameter, which names the parameter and lives in a thread-local buffer:
 * it stays valid until the next smtp_parse_command() call on the same thread.
 *
 * RCPT TO has no SMTPUTF8 parameter of its own: SMTPUTF8 given on MAIL FROM
 * covers the whole transaction (RFC 6531 3.4), which this parser cannot see.
 * So RCPT accepts a UTF-8 address and sets cmd->smtputf8 to say that it
 * needs SMTPUTF8; the caller must answer "553 5.6.7" when the transaction's
 * MAIL FROM did not carry SMTPUTF8. */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#define LOCAL_PART_MAX 64 /* RFC 5321 4.5.3.1.1 */
#define LABEL_MAX      63 /* RFC 1035 2.3.4 */
#define PARAM_SHOW_MAX 32 /* octets of an unsupported keyword put in the reply */

static const char *const verb_names[SMTP_VERB_COUNT] = {
    [SMTP_UNKNOWN] = "UNKNOWN", [SMTP_HELO] = "HELO",         [SMTP_EHLO] = "EHLO",
    [SMTP_MAIL] = "MAIL",       [SMTP_RCPT] = "RCPT",         [SMTP_DATA] = "DATA",
    [SMTP_BDAT] = "BDAT",       [SMTP_RSET] = "RSET",         [SMTP_NOOP] = "NOOP",
    [SMTP_QUIT] = "QUIT",       [SMTP_VRFY] = "VRFY",         [SMTP_EXPN] = "EXPN",
    [SMTP_HELP] = "HELP",       [SMTP_STARTTLS] = "STARTTLS", [SMTP_AUTH] = "AUTH",
};

static const char ERR_UNKNOWN[] = "500 5.5.2 Error: command not recognized";
static const char ERR_BADCHAR[] = "500 5.5.2 Error: bad character in command";
static const char ERR_MAIL_SYNTAX[] = "501 5.5.4 Syntax: MAIL FROM:<address>";
static const char ERR_RCPT_SYNTAX[] = "501 5.5.4 Syntax: RCPT TO:<address>";
static const char ERR_BAD_SENDER[] = "501 5.1.7 Bad sender address syntax";
static const char ERR_BAD_RCPT[] = "501 5.1.3 Bad recipient address syntax";
static const char ERR_NON_ASCII[] = "553 5.6.7 Error: non-ASCII address requires SMTPUTF8";
static const char ERR_SIZE[] = "501 5.5.4 Syntax: SIZE=<bytes>";
static const char ERR_BODY[] = "501 5.5.4 Error: BODY=7BIT or BODY=8BITMIME";
static const char ERR_SMTPUTF8[] = "501 5.5.4 Syntax: SMTPUTF8 takes no value";
static const char ERR_REQUIRETLS[] = "501 5.5.4 Syntax: REQUIRETLS takes no value";
static const char ERR_DUP_PARAM[] = "501 5.5.4 Error: duplicate parameter";
static const char ERR_BDAT[] = "501 5.5.4 Syntax: BDAT chunk-size [LAST]";

static _Thread_local char param_err[96];

const char *smtp_verb_name(enum smtp_verb v)
{
	if ((unsigned)v >= SMTP_VERB_COUNT)
		return "UNKNOWN";
	return verb_names[v];
}

/* ASCII-only case folding: the C library's tolower() depends on the locale. */
static int lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* s[0..n) equals word, ignoring ASCII case. */
static bool ieq(const char *s, size_t n, const char *word)
{
	size_t wl = strlen(word);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)s[i]) != lower((unsigned char)word[i]))
			return false;
	return true;
}

/* s[0..n) starts with prefix, ignoring ASCII case. */
static bool iprefix(const char *s, size_t n, const char *prefix)
{
	size_t pl = strlen(prefix);

	return n >= pl && ieq(s, pl, prefix);
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5321 4.1.2 atext (RFC 5322 3.2.3). */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 5321 4.1.2 qtextSMTP: %d32-33 / %d35-91 / %d93-126. */
static bool is_qtext(unsigned char c)
{
	return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

static bool has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* Well-formed UTF-8 (RFC 3629): no overlong forms, surrogates or values
 * above U+10FFFF. */
static bool utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t more;
		unsigned char lo = 0x80, hi = 0xbf;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			more = 2;
			if (c == 0xe0)
				lo = 0xa0;
			else if (c == 0xed)
				hi = 0x9f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			more = 3;
			if (c == 0xf0)
				lo = 0x90;
			else if (c == 0xf4)
				hi = 0x8f;
		} else {
			return false;
		}
		if (n - i - 1 < more)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= more; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		i += more + 1;
	}
	return true;
}

/* RFC 1870 size-value = 1*20DIGIT; a value past 2^64-1 is valid syntax
 * that no server can take: it saturates, so the session answers 552. */
static bool parse_u64(const char *s, size_t n, uint64_t *out);
static bool parse_size(const char *s, size_t n, uint64_t *out)
{
	if (parse_u64(s, n, out))
		return true;
	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	*out = UINT64_MAX;
	return true;
}

/* 1 to 20 decimal digits whose value fits in a uint64_t. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (!is_digit((unsigned char)s[i]))
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str]
 * (RFC 5321 4.1.2), or a U-label when utf8 (RFC 6531 3.3). */
static bool valid_labels(const char *s, size_t n, bool utf8)
{
	size_t i = 0;

	if (n == 0)
		return false;
	for (;;) {
		size_t start = i;

		while (i < n && s[i] != '.') {
			unsigned char c = (unsigned char)s[i];

			if (!is_alpha(c) && !is_digit(c) && c != '-' && !(utf8 && c >= 0x80))
				return false;
			i++;
		}
		if (i == start || i - start > LABEL_MAX)
			return false;
		if (s[start] == '-' || s[i - 1] == '-')
			return false;
		if (i == n)
			return true;
		i++; /* the '.'; a trailing one leaves an empty label */
	}
}

/* IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT, 0-255. */
static bool valid_ipv4(const char *s, size_t n)
{
	size_t i = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		size_t digits = 0;

		if (part > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		while (i < n && is_digit((unsigned char)s[i]) && digits < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
			digits++;
		}
		if (digits == 0 || v > 255)
			return false;
	}
	return i == n;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]".
 * General-address-literal needs an IANA-registered tag; IPv6 is the only
 * one, so nothing else is accepted. */
static bool valid_literal(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char bin[16];

	if (n < 2 || s[0] != '[' || s[n - 1] != ']')
		return false;
	s++;
	n -= 2;
	if (!iprefix(s, n, "IPv6:"))
		return valid_ipv4(s, n);
	s += 5;
	n -= 5;
	if (n == 0 || n >= sizeof(buf))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_digit(c) && !(lower(c) >= 'a' && lower(c) <= 'f') && c != ':' && c != '.')
			return false;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, bin) == 1;
}

static bool valid_domain(const char *s, size_t n, bool utf8)
{
	if (n > 0 && s[0] == '[')
		return valid_literal(s, n);
	return valid_labels(s, n, utf8);
}

/* Mailbox = Local-part "@" ( Domain / address-literal ).  *at is set to the
 * index of the '@' separating the two. */
static bool valid_mailbox(const char *s, size_t n, bool utf8, size_t *at)
{
	size_t i = 0;

	if (n == 0)
		return false;
	if (s[0] == '"') {
		/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
		i = 1;
		for (;;) {
			unsigned char c;

			if (i >= n)
				return false;
			c = (unsigned char)s[i];
			if (c == '"') {
				i++;
				break;
			}
			if (c == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (i + 1 >= n)
					return false;
				c = (unsigned char)s[i + 1];
				if (!(c >= 32 && c <= 126) && !(utf8 && c >= 0x80))
					return false;
				i += 2;
				continue;
			}
			if (!is_qtext(c) && !(utf8 && c >= 0x80))
				return false;
			i++;
		}
	} else {
		/* Dot-string = Atom *("." Atom) */
		for (;;) {
			size_t start = i;

			while (i < n && (is_atext((unsigned char)s[i]) ||
			                 (utf8 && (unsigned char)s[i] >= 0x80)))
				i++;
			if (i == start)
				return false;
			if (i < n && s[i] == '.') {
				i++;
				continue;
			}
			break;
		}
	}
	if (i > LOCAL_PART_MAX)
		return false;
	if (i >= n || s[i] != '@')
		return false;
	*at = i;
	return valid_domain(s + i + 1, n - i - 1, utf8);
}

/* A-d-l = At-domain *( "," At-domain ) ":"; At-domain = "@" Domain.
 * Returns the length of the route including its ':', or 0 when invalid. */
static size_t route_len(const char *s, size_t n, bool utf8)
{
	size_t i = 0;

	for (;;) {
		size_t start;

		if (i >= n || s[i] != '@')
			return 0;
		start = ++i;
		while (i < n && s[i] != ',' && s[i] != ':')
			i++;
		if (i >= n || !valid_labels(s + start, i - start, utf8))
			return 0;
		if (s[i++] == ':')
			return i;
	}
}

/* Index of the '>' closing a path whose '<' is just before s[i], skipping
 * quoted strings (a quoted local part may hold '>'); n when there is none. */
static size_t path_end(const char *s, size_t n, size_t i)
{
	bool quoted = false;

	for (; i < n; i++) {
		if (quoted) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				quoted = false;
		} else if (s[i] == '"') {
			quoted = true;
		} else if (s[i] == '>') {
			return i;
		}
	}
	return n;
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool valid_keyword(const char *s, size_t n)
{
	if (n == 0 || !(is_alpha((unsigned char)s[0]) || is_digit((unsigned char)s[0])))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_alpha(c) && !is_digit(c) && c != '-')
			return false;
	}
	return true;
}

static const char *unsupported(const char *kw, size_t n)
{
	snprintf(param_err, sizeof(param_err), "555 5.5.4 Error: unsupported parameter '%.*s%s'",
	         (int)(n > PARAM_SHOW_MAX ? PARAM_SHOW_MAX : n), kw,
	         n > PARAM_SHOW_MAX ? "..." : "");
	return param_err;
}

/* Mail-parameters (RFC 5321 4.1.2): esmtp-param *(SP esmtp-param), where
 * esmtp-param = esmtp-keyword ["=" esmtp-value].  s[0..n) is what follows
 * the closing '>' (empty, or starting with a space). */
static const char *parse_params(struct smtp_cmd *cmd, const char *s, size_t n, bool is_mail)
{
	bool seen_size = false, seen_body = false, seen_utf8 = false, seen_rtls = false;
	size_t i = 0;

	for (;;) {
		const char *p, *val;
		size_t start, pl, kl, vl;

		while (i < n && s[i] == ' ')
			i++;
		if (i >= n)
			return NULL;
		start = i;
		while (i < n && s[i] != ' ')
			i++;
		p = s + start;
		pl = i - start;
		for (kl = 0; kl < pl && p[kl] != '='; kl++)
			;
		val = kl < pl ? p + kl + 1 : NULL;
		vl = kl < pl ? pl - kl - 1 : 0;
		if (!valid_keyword(p, kl))
			return is_mail ? ERR_MAIL_SYNTAX : ERR_RCPT_SYNTAX;
		if (!is_mail)
			return unsupported(p, kl); /* NOTIFY, ORCPT: DSN is not offered */
		if (ieq(p, kl, "SIZE")) {
			if (seen_size)
				return ERR_DUP_PARAM;
			seen_size = true;
			if (val == NULL || !parse_size(val, vl, &cmd->size))
				return ERR_SIZE;
			cmd->has_size = true;
		} else if (ieq(p, kl, "BODY")) {
			if (seen_body)
				return ERR_DUP_PARAM;
			seen_body = true;
			if (val != NULL && ieq(val, vl, "7BIT"))
				cmd->body = SMTP_BODY_7BIT;
			else if (val != NULL && ieq(val, vl, "8BITMIME"))
				cmd->body = SMTP_BODY_8BITMIME;
			else
				return ERR_BODY;
		} else if (ieq(p, kl, "SMTPUTF8")) {
			if (seen_utf8)
				return ERR_DUP_PARAM;
			seen_utf8 = true;
			if (val != NULL)
				return ERR_SMTPUTF8;
			cmd->smtputf8 = true;
		} else if (ieq(p, kl, "REQUIRETLS")) {
			/* RFC 8689: the message may only go on over authenticated TLS */
			if (seen_rtls)
				return ERR_DUP_PARAM;
			seen_rtls = true;
			if (val != NULL)
				return ERR_REQUIRETLS;
			cmd->requiretls = true;
		} else {
			return unsupported(p, kl);
		}
	}
}

/* "MAIL FROM:<path> [params]" and "RCPT TO:<path> [params]". */
static const char *parse_path_cmd(struct smtp_cmd *cmd, bool is_mail)
{
	const char *a = cmd->arg;
	size_t n = cmd->arg_len;
	const char *syntax = is_mail ? ERR_MAIL_SYNTAX : ERR_RCPT_SYNTAX;
	const char *bad = is_mail ? ERR_BAD_SENDER : ERR_BAD_RCPT;
	const char *kw = is_mail ? "FROM:" : "TO:";
	const char *path, *err;
	size_t i, open, close, pl, skip, at;
	bool utf8;

	if (!iprefix(a, n, kw))
		return syntax;
	i = strlen(kw);
	while (i < n && a[i] == ' ') /* "MAIL FROM: <a@b>": common, tolerated */
		i++;
	if (i >= n || a[i] != '<')
		return syntax;
	open = i;
	close = path_end(a, n, open + 1);
	if (close >= n)
		return syntax;
	if (close + 1 < n && a[close + 1] != ' ')
		return syntax;
	err = parse_params(cmd, a + close + 1, n - close - 1, is_mail);
	if (err != NULL)
		return err;

	if (close - open + 1 > SMTP_PATH_MAX)
		return bad;
	path = a + open + 1;
	pl = close - open - 1;
	if (has_8bit(path, pl)) {
		if (is_mail && !cmd->smtputf8)
			return ERR_NON_ASCII;
		if (!utf8_valid(path, pl))
			return bad;
		cmd->smtputf8 = true; /* for RCPT: the address needs SMTPUTF8 */
	}
	utf8 = cmd->smtputf8;

	if (pl == 0) { /* the null reverse-path */
		if (!is_mail)
			return bad;
		cmd->addr[0] = '\0';
		cmd->domain = NULL;
		return NULL;
	}
	if (!is_mail && ieq(path, pl, "postmaster")) { /* RFC 5321 4.5.1 */
		memcpy(cmd->addr, path, pl);
		cmd->addr[pl] = '\0';
		cmd->domain = NULL;
		return NULL;
	}
	skip = 0;
	if (path[0] == '@') { /* source route: accepted and ignored, 4.1.2 */
		skip = route_len(path, pl, utf8);
		if (skip == 0)
			return bad;
	}
	path += skip;
	pl -= skip;
	if (!valid_mailbox(path, pl, utf8, &at))
		return bad;
	memcpy(cmd->addr, path, pl);
	cmd->addr[pl] = '\0';
	cmd->domain = cmd->addr + at + 1;
	return NULL;
}

/* "BDAT chunk-size [LAST]" (RFC 3030). */
static const char *parse_bdat(struct smtp_cmd *cmd)
{
	const char *a = cmd->arg;
	size_t n = cmd->arg_len, i = 0;

	while (i < n && a[i] != ' ')
		i++;
	if (!parse_u64(a, i, &cmd->chunk_size))
		return ERR_BDAT;
	while (i < n && a[i] == ' ')
		i++;
	if (i == n)
		return NULL;
	if (!ieq(a + i, n - i, "LAST"))
		return ERR_BDAT;
	cmd->last = true;
	return NULL;
}

const char *smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t vlen = 0, start, end;

	memset(cmd, 0, sizeof(*cmd));
	cmd->arg = "";
	cmd->arg_len = 0;

	while (vlen < len && line[vlen] != ' ')
		vlen++;
	for (int v = SMTP_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
		if (ieq(line, vlen, verb_names[v])) {
			cmd->verb = (enum smtp_verb)v;
			break;
		}
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c < 0x20 || c == 0x7f)
			return ERR_BADCHAR;
	}
	if (cmd->verb == SMTP_UNKNOWN)
		return ERR_UNKNOWN;

	start = vlen;
	while (start < len && line[start] == ' ')
		start++;
	end = len;
	while (end > start && line[end - 1] == ' ')
		end--;
	if (end > start) {
		cmd->arg = line + start;
		cmd->arg_len = end - start;
	}

	switch (cmd->verb) {
	case SMTP_HELO:
		return cmd->arg_len ? NULL : "501 5.5.4 Syntax: HELO hostname";
	case SMTP_EHLO:
		return cmd->arg_len ? NULL : "501 5.5.4 Syntax: EHLO hostname";
	case SMTP_MAIL:
		return parse_path_cmd(cmd, true);
	case SMTP_RCPT:
		return parse_path_cmd(cmd, false);
	case SMTP_DATA:
		return cmd->arg_len ? "501 5.5.4 Syntax: DATA" : NULL;
	case SMTP_RSET:
		return cmd->arg_len ? "501 5.5.4 Syntax: RSET" : NULL;
	case SMTP_QUIT:
		return cmd->arg_len ? "501 5.5.4 Syntax: QUIT" : NULL;
	case SMTP_STARTTLS:
		return cmd->arg_len ? "501 5.5.4 Syntax: STARTTLS" : NULL;
	case SMTP_VRFY:
		return cmd->arg_len ? NULL : "501 5.5.4 Syntax: VRFY address";
	case SMTP_EXPN:
		return cmd->arg_len ? NULL : "501 5.5.4 Syntax: EXPN address";
	case SMTP_BDAT:
		return parse_bdat(cmd);
	case SMTP_NOOP:
	case SMTP_HELP:
	case SMTP_AUTH:
	case SMTP_UNKNOWN:
	case SMTP_VERB_COUNT:
		break;
	}
	return NULL;
}

enum smtp_line_result smtp_line_next(struct smtp_lines *st, const char *buf, size_t len,
                                     size_t *consumed, size_t *line_len)
{
	const char *nl = len ? memchr(buf, '\n', len) : NULL;

	*consumed = 0;
	*line_len = 0;
	if (nl != NULL) {
		size_t i = (size_t)(nl - buf);

		*consumed = i + 1;
		if (i == 0 || buf[i - 1] != '\r') {
			st->discarding = false;
			return SMTP_LINE_BARE_LF;
		}
		if (st->discarding) {
			st->discarding = false;
			return SMTP_LINE_TOO_LONG;
		}
		if (i - 1 > SMTP_LINE_MAX - 2)
			return SMTP_LINE_TOO_LONG;
		*line_len = i - 1;
		return SMTP_LINE_OK;
	}
	/* No LF.  SMTP_LINE_MAX octets without one already make a line over
	 * the limit (998 + CRLF), and a caller holding at most SMTP_LINE_MAX
	 * could never see its end, so drop it.  A trailing CR stays: it may
	 * pair with an LF in the next read. */
	if (len > 0 && (st->discarding || len >= SMTP_LINE_MAX)) {
		st->discarding = true;
		*consumed = buf[len - 1] == '\r' ? len - 1 : len;
	}
	return SMTP_LINE_MORE;
}
