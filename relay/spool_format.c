/* spool_format: see spool_format.h. */
#include "spool_format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENV_MAGIC "krelay-envelope 1\n"

struct sbuf {
	char *p;
	size_t len, cap;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
	if (b->len < b->cap) {
		size_t k = b->cap - b->len < n ? b->cap - b->len : n;
		memcpy(b->p + b->len, s, k);
	}
	b->len += n;
}

static void put_str(struct sbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Values may hold any byte but '%', CR, LF and controls verbatim. */
static void put_val(struct sbuf *b, const char *s)
{
	for (; s != NULL && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '%' || c < 0x20 || c == 0x7f) {
			char esc[4];
			snprintf(esc, sizeof(esc), "%%%02X", c);
			put(b, esc, 3);
		} else {
			put(b, (const char *)s, 1);
		}
	}
}

static void put_kv(struct sbuf *b, const char *key, const char *val)
{
	put_str(b, key);
	put(b, " ", 1);
	put_val(b, val);
	put(b, "\n", 1);
}

size_t spool_env_format(const struct spool_env *e, char *buf, size_t cap)
{
	struct sbuf b = {buf, 0, cap};
	char num[64];

	put_str(&b, ENV_MAGIC);
	put_kv(&b, "id", e->id);
	snprintf(num, sizeof(num), "%" PRId64, e->arrival);
	put_kv(&b, "arrival", num);
	snprintf(num, sizeof(num), "%" PRIu64, e->body_size);
	put_kv(&b, "size", num);
	put_kv(&b, "dotlines", e->dot_lines ? "1" : "0");
	put_kv(&b, "crlf", e->final_crlf ? "1" : "0");
	put_kv(&b, "8bit", e->eight_bit ? "1" : "0");
	put_kv(&b, "smtputf8", e->smtputf8 ? "1" : "0");
	if (e->requiretls)
		put_kv(&b, "requiretls", "1");
	put_kv(&b, "body", e->body_type == 8 ? "8BITMIME" : e->body_type == 7 ? "7BIT" : "-");
	put_kv(&b, "client", e->client);
	put_kv(&b, "helo", e->helo);
	put_kv(&b, "tls", e->tls);
	put_kv(&b, "clientcert", e->client_cert);
	if (e->attempts > 0) {
		snprintf(num, sizeof(num), "%u", e->attempts);
		put_kv(&b, "attempts", num);
		snprintf(num, sizeof(num), "%" PRId64, e->next_attempt);
		put_kv(&b, "next", num);
		put_kv(&b, "error", e->last_error ? e->last_error : "");
	}
	put_kv(&b, "sender", e->sender);
	for (size_t i = 0; i < e->rcpt_count; i++) {
		char key[8] = {'r', 'c', 'p', 't', ' ', e->rcpts[i].state, 0};
		put_kv(&b, key, e->rcpts[i].addr);
	}
	put_str(&b, "end\n");
	if (b.len < cap)
		buf[b.len] = '\0';
	return b.len;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned hex_val(char c)
{
	return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static char *unescape(const char *s, size_t n)
{
	char *out = malloc(n + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
			*o++ = (char)(hex_val(s[i + 1]) << 4 | hex_val(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

/* A number written by spool_env_format: decimal digits only (no sign, no
 * space, no "0x"), at most 19 of them. */
static int parse_dec(const char *v, uint64_t *out)
{
	size_t n = strlen(v);
	uint64_t x = 0;

	if (n == 0 || n > 19 || strspn(v, "0123456789") != n)
		return -1;
	for (size_t i = 0; i < n; i++)
		x = x * 10 + (uint64_t)(v[i] - '0');
	*out = x;
	return 0;
}

static int set_flag(const char *v, bool *out)
{
	if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
		return -1;
	*out = v[0] == '1';
	return 0;
}

/* One "key value" line. */
static int env_field(struct spool_env *e, const char *key, char *val)
{
	char **slot = NULL;
	uint64_t num;

	if (strcmp(key, "id") == 0) {
		if (!spool_id_valid(val))
			return -1;
		memcpy(e->id, val, SPOOL_ID_LEN + 1);
	} else if (strcmp(key, "arrival") == 0) {
		if (parse_dec(val, &num) < 0 || num > INT64_MAX)
			return -1;
		e->arrival = (int64_t)num;
	} else if (strcmp(key, "size") == 0) {
		if (parse_dec(val, &e->body_size) < 0)
			return -1;
	} else if (strcmp(key, "dotlines") == 0) {
		return set_flag(val, &e->dot_lines);
	} else if (strcmp(key, "crlf") == 0) {
		return set_flag(val, &e->final_crlf);
	} else if (strcmp(key, "8bit") == 0) {
		return set_flag(val, &e->eight_bit);
	} else if (strcmp(key, "smtputf8") == 0) {
		return set_flag(val, &e->smtputf8);
	} else if (strcmp(key, "requiretls") == 0) {
		return set_flag(val, &e->requiretls);
	} else if (strcmp(key, "body") == 0) {
		e->body_type = strcmp(val, "8BITMIME") == 0 ? 8 : strcmp(val, "7BIT") == 0 ? 7 : 0;
	} else if (strcmp(key, "attempts") == 0) {
		if (parse_dec(val, &num) < 0 || num > UINT32_MAX)
			return -1;
		e->attempts = (unsigned)num;
	} else if (strcmp(key, "next") == 0) {
		if (parse_dec(val, &num) < 0 || num > INT64_MAX)
			return -1;
		e->next_attempt = (int64_t)num;
	} else if (strcmp(key, "error") == 0) {
		slot = &e->last_error;
	} else if (strcmp(key, "client") == 0) {
		slot = &e->client;
	} else if (strcmp(key, "helo") == 0) {
		slot = &e->helo;
	} else if (strcmp(key, "tls") == 0) {
		slot = &e->tls;
	} else if (strcmp(key, "clientcert") == 0) {
		slot = &e->client_cert;
	} else if (strcmp(key, "sender") == 0) {
		slot = &e->sender;
	} else {
		return -1;
	}
	if (slot != NULL) {
		free(*slot);
		*slot = strdup(val);
		if (*slot == NULL)
			return -1;
	}
	return 0;
}

static int env_rcpt(struct spool_env *e, char *val)
{
	struct spool_rcpt *r;
	char state = val[0];

	if ((state != 'P' && state != 'D' && state != 'F' && state != 'B') || val[1] != ' ' ||
	    val[2] == '\0')
		return -1;
	r = realloc(e->rcpts, (e->rcpt_count + 1) * sizeof(*r));
	if (r == NULL)
		return -1;
	e->rcpts = r;
	r[e->rcpt_count].state = state;
	r[e->rcpt_count].addr = strdup(val + 2);
	if (r[e->rcpt_count].addr == NULL)
		return -1;
	e->rcpt_count++;
	return 0;
}

int spool_env_parse(const char *buf, size_t len, struct spool_env *e, char *err, size_t errlen)
{
	const char *p = buf, *end = buf + len;
	unsigned lineno = 1;
	bool ended = false;

	memset(e, 0, sizeof(*e));
	e->final_crlf = true;
	if (len < sizeof(ENV_MAGIC) - 1 || memcmp(buf, ENV_MAGIC, sizeof(ENV_MAGIC) - 1) != 0) {
		snprintf(err, errlen, "envelope: bad magic");
		return -1;
	}
	p += sizeof(ENV_MAGIC) - 1;
	while (p < end && !ended) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *sp;
		char key[16], *val;
		int bad;

		lineno++;
		if (nl == NULL)
			break;
		if (nl - p == 3 && memcmp(p, "end", 3) == 0) {
			ended = true;
			break;
		}
		sp = memchr(p, ' ', (size_t)(nl - p));
		if (sp == NULL || sp - p >= (long)sizeof(key)) {
			snprintf(err, errlen, "envelope line %u: no key", lineno);
			goto fail;
		}
		memcpy(key, p, (size_t)(sp - p));
		key[sp - p] = '\0';
		val = unescape(sp + 1, (size_t)(nl - sp - 1));
		if (val == NULL)
			goto fail;
		bad = strcmp(key, "rcpt") == 0 ? env_rcpt(e, val) : env_field(e, key, val);
		free(val);
		if (bad) {
			snprintf(err, errlen, "envelope line %u: bad %s", lineno, key);
			goto fail;
		}
		p = nl + 1;
	}
	if (!ended || e->id[0] == '\0' || e->sender == NULL || e->rcpt_count == 0) {
		snprintf(err, errlen, "envelope: incomplete");
		goto fail;
	}
	return 0;
fail:
	spool_env_free(e);
	return -1;
}

void spool_env_free(struct spool_env *e)
{
	for (size_t i = 0; i < e->rcpt_count; i++)
		free(e->rcpts[i].addr);
	free(e->rcpts);
	free(e->sender);
	free(e->client);
	free(e->helo);
	free(e->tls);
	free(e->client_cert);
	free(e->last_error);
	memset(e, 0, sizeof(*e));
}

void spool_trailer_format(char out[SPOOL_TRAILER_LEN], uint64_t env_off, uint32_t env_len)
{
	char tmp[SPOOL_TRAILER_LEN + 1];

	snprintf(tmp, sizeof(tmp), "\nKRELAY-ENV %016" PRIx64 " %08" PRIx32 "\n", env_off, env_len);
	memcpy(out, tmp, SPOOL_TRAILER_LEN);
}

int spool_trailer_parse(const char *in, uint64_t *env_off, uint32_t *env_len)
{
	/* "\nKRELAY-ENV " 16 hex digits " " 8 hex digits "\n", exactly: no sign,
	 * no "0x", no space inside a number */
	static const char head[] = "\nKRELAY-ENV ";
	const size_t h = sizeof(head) - 1;
	uint64_t off = 0;
	uint32_t len = 0;

	if (memcmp(in, head, h) != 0 || in[h + 16] != ' ' || in[h + 25] != '\n' ||
	    h + 26 != SPOOL_TRAILER_LEN)
		return -1;
	for (size_t i = 0; i < 16; i++) {
		if (!is_hex(in[h + i]))
			return -1;
		off = off << 4 | hex_val(in[h + i]);
	}
	for (size_t i = 0; i < 8; i++) {
		if (!is_hex(in[h + 17 + i]))
			return -1;
		len = len << 4 | hex_val(in[h + 17 + i]);
	}
	*env_off = off;
	*env_len = len;
	return 0;
}

unsigned spool_id_owner(const char *id, unsigned workers)
{
	unsigned long long v = strtoull(id, NULL, 16);

	return workers ? (unsigned)((v >> 24) & 0xff) % workers : 0;
}

bool spool_id_valid(const char *id)
{
	size_t i;

	for (i = 0; id[i]; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F')))
			return false;
	return i == SPOOL_ID_LEN;
}
