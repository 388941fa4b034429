/* shaping: see shaping.h. */
#include "shaping.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "hash.h"

#define TOKENS_MAX 24

enum where { WHERE_DEFAULT, WHERE_DOMAIN, WHERE_SITE };

/* which settings a rule names */
enum {
	SET_MAX_CONNECTIONS = 1u << 0,
	SET_CONN_RATE = 1u << 1,
	SET_MSG_RATE = 1u << 2,
	SET_MAX_DELIVERIES = 1u << 3,
	SET_IDLE_TIMEOUT = 1u << 4,
	SET_CONNECT_TIMEOUT = 1u << 5,
	SET_POOL = 1u << 6,
};

struct rule {
	unsigned line;
	enum where where;
	char pattern[256];
	int source; /* -1: any */
	unsigned set;
	struct shaping_limits v;
	int reply; /* index into replies, -1: a rule of limits */
};

struct shaping_table {
	struct shaping_source *src;
	size_t nsrc;
	struct shaping_pool *pools;
	size_t npools;
	struct rule *rules;
	size_t nrules;
	struct shaping_reply_rule *replies;
	size_t nreplies;
};

struct parse {
	struct shaping_table *t;
	const char *path;
	unsigned line;
	char *err;
	size_t errlen;
};

static int fail(struct parse *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct parse *ps, const char *fmt, ...)
{
	char why[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(ps->err, ps->errlen, "%s:%u: %s", ps->path, ps->line, why);
	return -1;
}

static void *grow(void *p, size_t n, size_t size)
{
	void *q = realloc(p, (n + 1) * size);

	if (q != NULL)
		memset((char *)q + n * size, 0, size);
	return q;
}

/* ---- values ---------------------------------------------------------------- */

static const char *digits(const char *s, uint64_t *v, uint64_t max)
{
	uint64_t n = 0;

	if (!isdigit((unsigned char)*s))
		return NULL;
	for (; isdigit((unsigned char)*s); s++) {
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > max)
			return NULL;
	}
	*v = n;
	return s;
}

int shaping_parse_rate(const char *s, struct shaping_rate *r, char *why, size_t len)
{
	static const struct {
		const char *name;
		uint32_t secs;
	} units[] = {{"s", 1},    {"sec", 1},     {"m", 60},    {"min", 60},
	             {"h", 3600}, {"hour", 3600}, {"d", 86400}, {"day", 86400}};
	uint64_t n;
	const char *p = digits(s, &n, 1000000000);

	if (p == NULL || n == 0 || *p != '/') {
		snprintf(why, len, "'%s' is not a rate (N/s, N/m, N/h or N/d, N from 1)", s);
		return -1;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(p + 1, units[i].name) == 0) {
			r->n = (uint32_t)n;
			r->per_s = units[i].secs;
			return 0;
		}
	}
	snprintf(why, len, "'%s': the unit after '/' is s, m, h or d", s);
	return -1;
}

int shaping_parse_duration(const char *s, unsigned *secs)
{
	return config_duration(s, secs);
}

static bool valid_name(const char *s)
{
	if (*s == '\0' || strlen(s) > SHAPING_NAME_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

static int find_source(const struct shaping_table *t, const char *name)
{
	for (size_t i = 0; i < t->nsrc; i++)
		if (strcmp(t->src[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int find_pool(const struct shaping_table *t, const char *name)
{
	for (size_t i = 0; i < t->npools; i++)
		if (strcmp(t->pools[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* glibc's regcomp and regexec may take memory and time without bound for
 * stacked repetitions ("a++++", "(a{200}){200}"), which POSIX leaves
 * undefined anyway: they are refused, as are counts above REPEAT_MAX.
 * NULL when re is fine, else why not. */
#define REPEAT_MAX 100
static const char *regex_trouble(const char *re)
{
	bool after_repeat = false;

	for (const char *p = re; *p != '\0'; p++) {
		if (*p == '\\') {
			if (p[1] == '\0')
				return "it ends with a backslash";
			p++;
			after_repeat = false;
			continue;
		}
		if (*p == '[') {
			/* a bracket expression: ']' first is a member */
			const char *q = p + 1;

			if (*q == '^')
				q++;
			if (*q == ']')
				q++;
			while (*q != '\0' && *q != ']')
				q++;
			if (*q == '\0')
				return "a '[' is not closed";
			p = q;
			after_repeat = false;
			continue;
		}
		if (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
			if (after_repeat)
				return "a repetition follows another";
			if (*p == '{') {
				unsigned long n = 0;

				for (p++; *p != '\0' && *p != '}'; p++) {
					if (*p >= '0' && *p <= '9') {
						n = n * 10 + (unsigned long)(*p - '0');
						if (n > REPEAT_MAX)
							return "a count above 100 in {}";
					} else if (*p == ',') {
						n = 0;
					} else {
						break;
					}
				}
				if (*p != '}')
					return "a '{' is not closed";
			}
			after_repeat = true;
			continue;
		}
		if (*p == ')' && after_repeat) {
			/* (x*)* and the like: a repeated group of a repetition */
			const char *q = p + 1;

			if (*q == '*' || *q == '+' || *q == '?' || *q == '{')
				return "a repeated group ends with a repetition";
		}
		after_repeat = false;
	}
	return NULL;
}

/* ---- lines ----------------------------------------------------------------- */

/* Splits a line into words; a double-quoted part of a word may hold
 * blanks (\" is a quote in it, any other backslash stays).  Returns the
 * count, or -1 on an unterminated quote. */
static int tokenize(char *line, char **tok, int max)
{
	int n = 0;
	char *r = line, *w;

	for (;;) {
		while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n' || *r == '\v' ||
		       *r == '\f')
			r++;
		if (*r == '\0' || *r == '#')
			return n;
		if (n == max)
			return max + 1;
		tok[n++] = w = r;
		while (*r != '\0' && *r != ' ' && *r != '\t' && *r != '\r' && *r != '\n' &&
		       *r != '\v' && *r != '\f') {
			if (*r != '"') {
				*w++ = *r++;
				continue;
			}
			for (r++; *r != '"'; r++) {
				if (*r == '\0')
					return -1;
				if (*r == '\\' && r[1] == '"')
					r++;
				*w++ = *r;
			}
			r++;
		}
		if (*r != '\0')
			r++;
		*w = '\0';
	}
}

static int parse_source(struct parse *ps, char **tok, int n)
{
	struct shaping_table *t = ps->t;
	struct shaping_source s;

	if (n < 3 || n > 4)
		return fail(ps, "expected \"source NAME ADDRESS [ehlo=NAME]\"");
	memset(&s, 0, sizeof(s));
	if (!valid_name(tok[1]))
		return fail(ps, "'%s' is not a source name (letters, digits, '-', '_', '.')",
		            tok[1]);
	if (find_source(t, tok[1]) >= 0)
		return fail(ps, "source '%s' is defined twice", tok[1]);
	if (t->nsrc == SHAPING_SOURCE_MAX)
		return fail(ps, "too many sources (at most %d)", SHAPING_SOURCE_MAX);
	snprintf(s.name, sizeof(s.name), "%s", tok[1]);
	if (strlen(tok[2]) >= sizeof(s.addr_text))
		return fail(ps, "'%s' is not an IP address", tok[2]);
	snprintf(s.addr_text, sizeof(s.addr_text), "%s", tok[2]);
	if (inet_pton(AF_INET, tok[2], &((struct sockaddr_in *)&s.addr)->sin_addr) == 1) {
		s.addr.ss_family = AF_INET;
		s.addrlen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, tok[2], &((struct sockaddr_in6 *)&s.addr)->sin6_addr) == 1) {
		s.addr.ss_family = AF_INET6;
		s.addrlen = sizeof(struct sockaddr_in6);
	} else {
		return fail(ps, "'%s' is not an IP address", tok[2]);
	}
	if (n == 4) {
		const char *h = tok[3] + 5;

		if (strncasecmp(tok[3], "ehlo=", 5) != 0)
			return fail(ps, "unknown word '%s' (only ehlo=NAME may follow the address)",
			            tok[3]);
		if (*h == '\0' || strlen(h) >= sizeof(s.ehlo) ||
		    strspn(h, "abcdefghijklmnopqrstuvwxyz"
		              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		              "0123456789-.") != strlen(h))
			return fail(ps, "'%s' is not a host name", h);
		snprintf(s.ehlo, sizeof(s.ehlo), "%s", h);
	}
	if ((t->src = grow(t->src, t->nsrc, sizeof(*t->src))) == NULL)
		return fail(ps, "out of memory");
	t->src[t->nsrc++] = s;
	return 0;
}

static int parse_pool(struct parse *ps, char **tok, int n)
{
	struct shaping_table *t = ps->t;
	struct shaping_pool p;

	if (n < 3)
		return fail(ps, "expected \"pool NAME SOURCE[:WEIGHT]...\"");
	memset(&p, 0, sizeof(p));
	if (!valid_name(tok[1]))
		return fail(ps, "'%s' is not a pool name (letters, digits, '-', '_', '.')", tok[1]);
	if (find_pool(t, tok[1]) >= 0)
		return fail(ps, "pool '%s' is defined twice", tok[1]);
	snprintf(p.name, sizeof(p.name), "%s", tok[1]);
	for (int i = 2; i < n; i++) {
		char *colon = strchr(tok[i], ':');
		uint64_t w = 1;
		int s;

		if (colon != NULL) {
			const char *end;

			*colon = '\0';
			end = digits(colon + 1, &w, 1000000);
			if (end == NULL || *end != '\0' || w == 0)
				return fail(ps, "'%s': the weight is a number from 1", colon + 1);
		}
		if ((s = find_source(t, tok[i])) < 0)
			return fail(ps, "no source '%s' (define it on an earlier line)", tok[i]);
		for (unsigned k = 0; k < p.n; k++)
			if (p.src[k] == (unsigned)s)
				return fail(ps, "source '%s' is twice in the pool", tok[i]);
		if (p.n == SHAPING_POOL_MAX)
			return fail(ps, "too many sources in one pool (at most %d)",
			            SHAPING_POOL_MAX);
		p.src[p.n] = (unsigned)s;
		p.weight[p.n++] = (unsigned)w;
	}
	if ((t->pools = grow(t->pools, t->npools, sizeof(*t->pools))) == NULL)
		return fail(ps, "out of memory");
	t->pools[t->npools++] = p;
	return 0;
}

static int parse_setting(struct parse *ps, struct rule *r, const char *key, const char *val,
                         struct shaping_reply_rule *rr, bool *has_for)
{
	char why[160];
	uint64_t n;
	const char *end;

	if (rr != NULL) {
		if (strcasecmp(key, "suspend") == 0) {
			if (shaping_parse_duration(val, &rr->duration_s) < 0 || rr->duration_s == 0)
				return fail(ps, "suspend=%s: not a duration (30s, 10m, 2h, 1d)",
				            val);
			rr->action = SHAPING_SUSPEND;
			return 0;
		}
		if (strcasecmp(key, "rate") == 0) {
			if (shaping_parse_rate(val, &rr->rate, why, sizeof(why)) < 0)
				return fail(ps, "rate=: %s", why);
			rr->action = SHAPING_SLOW;
			return 0;
		}
		if (strcasecmp(key, "for") == 0) {
			if (shaping_parse_duration(val, &rr->duration_s) < 0 || rr->duration_s == 0)
				return fail(ps, "for=%s: not a duration (30s, 10m, 2h, 1d)", val);
			*has_for = true;
			return 0;
		}
		return fail(ps, "'%s' cannot be on a reply rule (suspend=, or rate= with for=)",
		            key);
	}
	if (strcasecmp(key, "max_connections") == 0 ||
	    strcasecmp(key, "max_deliveries_per_connection") == 0) {
		end = digits(val, &n, 1000000000);
		if (end == NULL || *end != '\0' || n == 0)
			return fail(ps, "%s=%s: a number from 1", key, val);
		if (strcasecmp(key, "max_connections") == 0) {
			r->v.max_connections = (unsigned)n;
			r->set |= SET_MAX_CONNECTIONS;
		} else {
			r->v.max_deliveries = (unsigned)n;
			r->set |= SET_MAX_DELIVERIES;
		}
		return 0;
	}
	if (strcasecmp(key, "max_connection_rate") == 0 ||
	    strcasecmp(key, "max_message_rate") == 0) {
		bool conn = strcasecmp(key, "max_connection_rate") == 0;

		if (shaping_parse_rate(val, conn ? &r->v.conn_rate : &r->v.msg_rate, why,
		                       sizeof(why)) < 0)
			return fail(ps, "%s=: %s", key, why);
		r->set |= conn ? SET_CONN_RATE : SET_MSG_RATE;
		return 0;
	}
	if (strcasecmp(key, "idle_timeout") == 0 || strcasecmp(key, "connect_timeout") == 0) {
		bool idle = strcasecmp(key, "idle_timeout") == 0;
		unsigned s;

		if (shaping_parse_duration(val, &s) < 0 || s == 0 || s > 3600)
			return fail(ps, "%s=%s: a duration from 1s to 1h", key, val);
		if (idle) {
			r->v.idle_timeout_s = s;
			r->set |= SET_IDLE_TIMEOUT;
		} else {
			r->v.connect_timeout_s = s;
			r->set |= SET_CONNECT_TIMEOUT;
		}
		return 0;
	}
	if (strcasecmp(key, "pool") == 0) {
		if (r->source >= 0)
			return fail(
			    ps, "pool= cannot be on a source: rule (the pool picks the source)");
		if ((r->v.pool = find_pool(ps->t, val)) < 0)
			return fail(ps, "no pool '%s' (define it on an earlier line)", val);
		r->set |= SET_POOL;
		return 0;
	}
	return fail(ps,
	            "unknown setting '%s' (max_connections, max_connection_rate, max_message_rate, "
	            "max_deliveries_per_connection, idle_timeout, connect_timeout, pool, reply)",
	            key);
}

static int parse_rule(struct parse *ps, char **tok, int n)
{
	struct shaping_table *t = ps->t;
	struct rule r;
	struct shaping_reply_rule rr;
	bool reply = false, has_for = false, has_action = false;
	const char *why;
	int i = 1;

	memset(&r, 0, sizeof(r));
	memset(&rr, 0, sizeof(rr));
	r.line = rr.line = ps->line;
	r.source = -1;
	r.reply = -1;
	if (strcasecmp(tok[0], "default") == 0) {
		r.where = WHERE_DEFAULT;
	} else if (strncasecmp(tok[0], "domain:", 7) == 0 || strncasecmp(tok[0], "site:", 5) == 0) {
		const char *pat = strchr(tok[0], ':') + 1;

		r.where = tolower((unsigned char)tok[0][0]) == 'd' ? WHERE_DOMAIN : WHERE_SITE;
		if (*pat == '\0' || strlen(pat) >= sizeof(r.pattern))
			return fail(ps, "'%s': a pattern must follow the ':'", tok[0]);
		snprintf(r.pattern, sizeof(r.pattern), "%s", pat);
	} else {
		return fail(ps,
		            "'%s': a line starts with source, pool, default, domain:PATTERN or "
		            "site:PATTERN",
		            tok[0]);
	}
	if (i < n && strncasecmp(tok[i], "source:", 7) == 0) {
		if ((r.source = find_source(t, tok[i] + 7)) < 0)
			return fail(ps, "no source '%s' (define it on an earlier line)",
			            tok[i] + 7);
		i++;
	}
	for (int k = i; k < n; k++)
		if (strncasecmp(tok[k], "reply=", 6) == 0)
			reply = true;
	if (i == n)
		return fail(ps, "no setting after '%s'", tok[i - 1]);
	for (; i < n; i++) {
		char *eq = strchr(tok[i], '=');

		if (eq == NULL || eq == tok[i]) {
			fail(ps, "'%s' is not SETTING=VALUE", tok[i]);
			goto fail;
		}
		*eq = '\0';
		if (strcasecmp(tok[i], "reply") == 0) {
			int rc;

			if (eq[1] == '\0' || strlen(eq + 1) >= sizeof(rr.pattern)) {
				fail(ps, "reply= needs a regular expression (at most 255 bytes)");
				goto fail;
			}
			if (rr.re != NULL) {
				fail(ps, "one reply= per line");
				goto fail;
			}
			snprintf(rr.pattern, sizeof(rr.pattern), "%s", eq + 1);
			if ((why = regex_trouble(rr.pattern)) != NULL) {
				fail(ps, "reply=\"%s\": %s", rr.pattern, why);
				goto fail;
			}
			if ((rr.re = malloc(sizeof(regex_t))) == NULL) {
				fail(ps, "out of memory");
				goto fail;
			}
			rc = regcomp(rr.re, rr.pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB);
			if (rc != 0) {
				char msg[128];

				regerror(rc, rr.re, msg, sizeof(msg));
				free(rr.re);
				return fail(ps, "reply=\"%s\": %s", rr.pattern, msg);
			}
			continue;
		}
		if (reply &&
		    (strcasecmp(tok[i], "suspend") == 0 || strcasecmp(tok[i], "rate") == 0))
			has_action = true;
		if (parse_setting(ps, &r, tok[i], eq + 1, reply ? &rr : NULL, &has_for) < 0)
			goto fail;
	}
	if (reply) {
		if (!has_action) {
			fail(ps,
			     "a reply rule needs suspend=DURATION, or rate=RATE with for=DURATION");
			goto fail;
		}
		if (rr.action == SHAPING_SLOW && !has_for) {
			fail(ps, "rate= needs for=DURATION (how long the lower rate lasts)");
			goto fail;
		}
		if (rr.action == SHAPING_SUSPEND && has_for) {
			fail(ps, "suspend= takes its own duration; for= goes with rate=");
			goto fail;
		}
		if ((t->replies = grow(t->replies, t->nreplies, sizeof(*t->replies))) == NULL) {
			fail(ps, "out of memory");
			goto fail;
		}
		r.reply = (int)t->nreplies;
		t->replies[t->nreplies++] = rr;
	}
	if ((t->rules = grow(t->rules, t->nrules, sizeof(*t->rules))) == NULL) {
		if (r.reply >= 0) {
			t->nreplies--;
			r.reply = -1;
		}
		fail(ps, "out of memory");
		goto fail;
	}
	t->rules[t->nrules++] = r;
	return 0;
fail:
	if (r.reply < 0 && rr.re != NULL) {
		regfree(rr.re);
		free(rr.re);
	}
	return -1;
}

static int parse_line(struct parse *ps, char *line)
{
	char *tok[TOKENS_MAX];
	int n = tokenize(line, tok, TOKENS_MAX);

	if (n < 0)
		return fail(ps, "a double quote is not closed");
	if (n > TOKENS_MAX)
		return fail(ps, "too many words (at most %d)", TOKENS_MAX);
	if (n == 0)
		return 0;
	if (strcasecmp(tok[0], "source") == 0)
		return parse_source(ps, tok, n);
	if (strcasecmp(tok[0], "pool") == 0)
		return parse_pool(ps, tok, n);
	return parse_rule(ps, tok, n);
}

struct shaping_table *shaping_parse(const char *text, const char *path, char *err, size_t errlen)
{
	struct parse ps = {calloc(1, sizeof(struct shaping_table)), path, 0, err, errlen};
	char *copy = strdup(text), *line;

	if (ps.t == NULL || copy == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		free(copy);
		free(ps.t);
		return NULL;
	}
	/* line by line, empty ones counted (strtok_r would skip them) */
	line = copy;
	while (line != NULL) {
		char *nl = strchr(line, '\n');

		if (nl != NULL)
			*nl = '\0';
		ps.line++;
		if (parse_line(&ps, line) < 0) {
			free(copy);
			shaping_free(ps.t);
			return NULL;
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	free(copy);
	return ps.t;
}

struct shaping_table *shaping_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *text = NULL;
	size_t cap = 0, len = 0, got;
	struct shaping_table *t;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *p = realloc(text, cap = 2 * cap + 8192);

			if (p == NULL || cap > (16u << 20)) {
				snprintf(err, errlen, "%s: %s", path,
				         p == NULL ? "out of memory" : "larger than 16 MiB");
				free(p != NULL ? p : text);
				fclose(f);
				return NULL;
			}
			text = p;
		}
		got = fread(text + len, 1, 4096, f);
		len += got;
		if (got < 4096)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		free(text);
		fclose(f);
		return NULL;
	}
	fclose(f);
	text[len] = '\0';
	if (strlen(text) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		free(text);
		return NULL;
	}
	t = shaping_parse(text, path, err, errlen);
	free(text);
	return t;
}

void shaping_free(struct shaping_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nreplies; i++) {
		regfree(t->replies[i].re);
		free(t->replies[i].re);
	}
	free(t->replies);
	free(t->rules);
	free(t->pools);
	free(t->src);
	free(t);
}

size_t shaping_nsources(const struct shaping_table *t)
{
	return t->nsrc;
}

const struct shaping_source *shaping_source(const struct shaping_table *t, size_t i)
{
	return i < t->nsrc ? &t->src[i] : NULL;
}

const struct shaping_pool *shaping_pool(const struct shaping_table *t, int i)
{
	return i >= 0 && (size_t)i < t->npools ? &t->pools[i] : NULL;
}

/* ---- matching ------------------------------------------------------------ */

static bool where_matches(const struct rule *r, const char *domain, const char *const *mx,
                          size_t nmx)
{
	switch (r->where) {
	case WHERE_DEFAULT:
		return true;
	case WHERE_DOMAIN:
		return fnmatch(r->pattern, domain, FNM_CASEFOLD) == 0;
	case WHERE_SITE:
		for (size_t i = 0; i < nmx; i++)
			if (fnmatch(r->pattern, mx[i], FNM_CASEFOLD) == 0)
				return true;
		return false;
	}
	return false;
}

void shaping_match(const struct shaping_table *t, const char *domain, const char *const *mx,
                   size_t nmx, int source, struct shaping_limits *out)
{
	memset(out, 0, sizeof(*out));
	out->pool = -1;
	for (size_t i = 0; t != NULL && i < t->nrules; i++) {
		const struct rule *r = &t->rules[i];

		if (r->source >= 0 && r->source != source)
			continue;
		if (!where_matches(r, domain, mx, nmx))
			continue;
		if (r->reply >= 0) {
			if (out->nreply < SHAPING_REPLY_MAX)
				out->reply[out->nreply++] = &t->replies[r->reply];
			continue;
		}
		if (r->where == WHERE_DOMAIN)
			out->by_domain = true;
		if (r->set & SET_MAX_CONNECTIONS)
			out->max_connections = r->v.max_connections;
		if (r->set & SET_CONN_RATE)
			out->conn_rate = r->v.conn_rate;
		if (r->set & SET_MSG_RATE)
			out->msg_rate = r->v.msg_rate;
		if (r->set & SET_MAX_DELIVERIES)
			out->max_deliveries = r->v.max_deliveries;
		if (r->set & SET_IDLE_TIMEOUT)
			out->idle_timeout_s = r->v.idle_timeout_s;
		if (r->set & SET_CONNECT_TIMEOUT)
			out->connect_timeout_s = r->v.connect_timeout_s;
		if (r->set & SET_POOL)
			out->pool = r->v.pool;
	}
}

const struct shaping_reply_rule *shaping_reply_match(const struct shaping_limits *l,
                                                     const char *reply)
{
	for (unsigned i = 0; i < l->nreply; i++)
		if (regexec(l->reply[i]->re, reply, 0, NULL, 0) == 0)
			return l->reply[i];
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *shaping_site_name(const char *const *mx, size_t nmx, char *out, size_t len)
{
	char **names = calloc(nmx ? nmx : 1, sizeof(*names));
	size_t used = 0, n = 0;
	uint32_t h = FNV1A_INIT; /* of the whole */

	if (len == 0)
		return out;
	out[0] = '\0';
	if (names == NULL)
		return out;
	for (size_t i = 0; i < nmx; i++) {
		size_t l = strlen(mx[i]);

		if (l > 0 && mx[i][l - 1] == '.')
			l--;
		if ((names[n] = strndup(mx[i], l)) == NULL)
			break;
		for (char *p = names[n]; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
		n++;
	}
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		h = fnv1a_add(fnv1a_add(h, i > 0 ? "," : ""), names[i]);
		if (used < len - 1)
			used += (size_t)snprintf(out + used, len - used, "%s%s", i > 0 ? "," : "",
			                         names[i]);
	}
	if (used >= len - 1 && len > 10) {
		/* cut: the hash of the whole keeps two long sites apart */
		snprintf(out + len - 10, 10, "~%08x", (unsigned)h);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return out;
}

/* ---- pacing ------------------------------------------------------------ */

int64_t gcra_interval(const struct shaping_rate *r)
{
	return r->n == 0 ? 0 : (int64_t)r->per_s * 1000000000LL / r->n;
}

/* The tolerance: one interval, and at least GCRA_SLACK_NS, so that a
 * timer that fires a little late does not lose the rate (the next cell's
 * time is kept rather than counted from the late one). */
static int64_t tolerance(int64_t t)
{
	return t > GCRA_SLACK_NS ? t : GCRA_SLACK_NS;
}

int64_t gcra_wait(int64_t tat, int64_t now, const struct shaping_rate *r)
{
	int64_t t = gcra_interval(r);

	if (t == 0 || tat - tolerance(t) <= now)
		return 0;
	return tat - tolerance(t) - now;
}

int64_t gcra_take(int64_t *tat, int64_t now, const struct shaping_rate *r)
{
	int64_t t = gcra_interval(r);
	int64_t wait = gcra_wait(*tat, now, r);

	if (t == 0 || wait > 0)
		return wait;
	*tat = (*tat > now ? *tat : now) + t;
	return 0;
}

int shaping_pool_next(const struct shaping_pool *p, int *cur, const bool *usable)
{
	int best = -1;
	long total = 0;

	for (unsigned i = 0; i < p->n; i++) {
		if (usable != NULL && !usable[i])
			continue;
		cur[i] += (int)p->weight[i];
		total += p->weight[i];
		if (best < 0 || cur[i] > cur[best])
			best = (int)i;
	}
	if (best >= 0)
		cur[best] -= (int)total;
	return best;
}
