/* tls_policy: see tls_policy.h. */
#include "tls_policy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

#define TLS_POLICY_KEY_MAX 256 /* ".": a DNS name (253) with its dot and more */

struct entry {
	char *key; /* lower case, no trailing dot */
	int level;
};

struct tls_policy_table {
	struct entry *e;
	size_t n;
};

void tls_policy_free(struct tls_policy_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->e[i].key);
	free(t->e);
	free(t);
}

static char *lower_key(const char *s)
{
	size_t n = strlen(s);
	char *k = malloc(n + 1);

	if (k == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		k[i] = (char)tolower((unsigned char)s[i]);
	k[n] = '\0';
	if (n > 1 && k[n - 1] == '.')
		k[n - 1] = '\0';
	return k;
}

static int add(struct tls_policy_table *t, const char *key, const char *level, char *err,
               unsigned long errlen, const char *path, unsigned line)
{
	int lv = config_tls_policy_parse(level);
	struct entry *e;

	if (lv < 0) {
		snprintf(
		    err, errlen,
		    "%s:%u: '%s' is not a TLS policy (none, may, encrypt, verify, dane, dane-only)",
		    path, line, level);
		return -1;
	}
	char *k = lower_key(key);

	if (k == NULL) {
		snprintf(err, errlen, "%s:%u: out of memory", path, line);
		return -1;
	}
	for (size_t i = 0; i < t->n; i++) {
		/* the keys as looked up: "a.example." and "A.example" are one */
		if (strcmp(t->e[i].key, k) == 0) {
			snprintf(err, errlen, "%s:%u: '%s' is listed twice", path, line, key);
			free(k);
			return -1;
		}
	}
	e = realloc(t->e, (t->n + 1) * sizeof(*e));
	if (e == NULL) {
		snprintf(err, errlen, "%s:%u: out of memory", path, line);
		free(k);
		return -1;
	}
	t->e = e;
	e[t->n].key = k;
	e[t->n++].level = lv;
	return 0;
}

struct tls_policy_table *tls_policy_load(const char *path, char *err, unsigned long errlen)
{
	struct tls_policy_table *t = calloc(1, sizeof(*t));
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	unsigned lineno = 0;
	FILE *f = fopen(path, "re");

	if (t == NULL || f == NULL) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		free(t);
		if (f != NULL)
			fclose(f);
		return NULL;
	}
	/* whole lines, however long (a line read in pieces would make the tail
	 * of a long comment a live entry) */
	while ((got = getline(&line, &cap, f)) >= 0) {
		char *hash, *tok[3], *save = NULL;
		int n = 0;

		lineno++;
		if ((size_t)got != strlen(line)) {
			snprintf(err, errlen, "%s:%u: line contains a NUL byte", path, lineno);
			goto fail;
		}
		if ((hash = strchr(line, '#')) != NULL)
			*hash = '\0';
		for (char *p = strtok_r(line, " \t\r\n\v\f", &save); p != NULL && n < 3;
		     p = strtok_r(NULL, " \t\r\n\v\f", &save))
			tok[n++] = p;
		if (n == 0)
			continue;
		if (n != 2) {
			snprintf(err, errlen, "%s:%u: expected \"domain level\"", path, lineno);
			goto fail;
		}
		if (strlen(tok[0]) > TLS_POLICY_KEY_MAX) {
			snprintf(err, errlen, "%s:%u: name longer than %d characters", path, lineno,
			         TLS_POLICY_KEY_MAX);
			goto fail;
		}
		if (add(t, tok[0], tok[1], err, errlen, path, lineno) < 0)
			goto fail;
	}
	free(line);
	fclose(f);
	return t;
fail:
	free(line);
	fclose(f);
	tls_policy_free(t);
	return NULL;
}

static const struct entry *find(const struct tls_policy_table *t, const char *key)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->e[i].key, key) == 0)
			return &t->e[i];
	return NULL;
}

int tls_policy_lookup(const struct tls_policy_table *t, const char *host, int dflt)
{
	const struct entry *e;
	const char *p;

	if (t == NULL || host == NULL)
		return dflt;
	if ((e = find(t, host)) != NULL)
		return e->level;
	for (p = strchr(host, '.'); p != NULL; p = strchr(p + 1, '.'))
		if ((e = find(t, p)) != NULL)
			return e->level;
	return dflt;
}

bool tls_policy_any_dane(const struct tls_policy_table *t)
{
	for (size_t i = 0; t != NULL && i < t->n; i++)
		if (TLS_POLICY_IS_DANE(t->e[i].level))
			return true;
	return false;
}
