/* sm_import: see sm_import.h. */
#include "sm_import.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void smi_init(struct smi *s)
{
	memset(s, 0, sizeof(*s));
}

void smi_free(struct smi *s)
{
	strbuf_free(&s->conf);
	strbuf_free(&s->transport);
	strbuf_free(&s->tls_policy);
	strbuf_free(&s->relay_domains);
	strbuf_free(&s->relay_clients);
	strbuf_free(&s->subject_issuers);
	strbuf_free(&s->subjects);
	memset(s, 0, sizeof(*s));
}

/* The original text on one line, shortened: for the comments. */
static const char *oneline(const char *orig, char *buf, size_t len)
{
	size_t n = 0;

	for (const char *p = orig; *p && n + 4 < len; p++) {
		if (*p == '\n' || *p == '\r' || *p == '\t') {
			if (n > 0 && buf[n - 1] != ' ')
				buf[n++] = ' ';
		} else {
			buf[n++] = *p;
		}
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	if (orig[0] != '\0' && n + 4 >= len)
		memcpy(buf + n - 3, "...", 3);
	buf[n] = '\0';
	return buf;
}

static void skip(struct smi *s, const char *file, unsigned line, const char *orig, const char *why)
{
	char o[240];

	strbuf_printf(&s->conf, "# %s:%u: not imported: %s (%s)\n", file, line,
	              oneline(orig, o, sizeof(o)), why);
	s->skipped++;
}

static void take(struct smi *s, const char *file, unsigned line, const char *orig, const char *name,
                 const char *value)
{
	char o[240];

	strbuf_printf(&s->conf, "# %s:%u: %s\n%s=%s\n", file, line, oneline(orig, o, sizeof(o)),
	              name, value);
	s->imported++;
}

static char *trim(char *p)
{
	char *e;

	while (isspace((unsigned char)*p))
		p++;
	e = p + strlen(p);
	while (e > p && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return p;
}

/* The next line of *p into buf (without its newline, cut at len - 1);
 * false at the end of the text. */
static bool next_line(const char **p, char *buf, size_t len)
{
	const char *nl = strchr(*p, '\n');
	size_t n = nl ? (size_t)(nl - *p) : strlen(*p);

	if (**p == '\0')
		return false;
	snprintf(buf, len, "%.*s", (int)(n < len - 1 ? n : len - 1), *p);
	*p = nl ? nl + 1 : *p + n;
	return true;
}

/* ---- options ------------------------------------------------------------------ */

struct optmap {
	const char *cf, *mc, *krelay;
	const char *why; /* when krelay is NULL: why not */
};

static const struct optmap optmap[] = {
    {"CACertPath", "confCACERT_PATH", "CACertPath", NULL},
    {"CACertFile", "confCACERT", "CACertFile", NULL},
    {"ServerCertFile", "confSERVER_CERT", "ServerCertFile", NULL},
    {"ServerKeyFile", "confSERVER_KEY", "ServerKeyFile", NULL},
    {"ClientCertFile", "confCLIENT_CERT", "ClientCertFile", NULL},
    {"ClientKeyFile", "confCLIENT_KEY", "ClientKeyFile", NULL},
    {"CipherList", "confCIPHER_LIST", "CipherList", NULL},
    {"CipherSuites", NULL, "CipherSuites", NULL},
    {"ServerSSLOptions", "confSERVER_SSL_OPTIONS", "ServerSSLOptions", NULL},
    {"ClientSSLOptions", "confCLIENT_SSL_OPTIONS", "ClientSSLOptions", NULL},
    {"RunAsUser", "confRUN_AS_USER", "RunAsUser", NULL},
    {"LogLevel", "confLOG_LEVEL", "LogLevel", NULL},
    {"MaxMessageSize", "confMAX_MESSAGE_SIZE", "MaxMessageSize", NULL},
    {"MaxRecipientsPerMessage", "confMAX_RCPTS_PER_MESSAGE", "MaxRecipients", NULL},
    {"MaxDaemonChildren", "confMAX_DAEMON_CHILDREN", "MaxConnections", NULL},
    {"DeliveryMode", "confDELIVERY_MODE", "DeliveryMode", NULL},
    {"Timeout.queuereturn", "confTO_QUEUERETURN", "QueueLifetime", NULL},
    {"CRLFile", "confCRL", NULL,
     "krelay does not check CRLs: revoke by removing the CA or listing fingerprints"},
    {"CRLPath", "confCRL_PATH", NULL, "krelay does not check CRLs"},
    {"DHParameters", "confDH_PARAMETERS", NULL,
     "krelay's key exchange is ECDHE, and DHE with OpenSSL's built-in groups"},
    {"TLSSrvOptions", "confTLS_SRV_OPTIONS", NULL,
     "krelay always asks for a client certificate and always has a server one"},
    {"TLSFallbacktoClear", "confTLS_FALLBACK_TO_CLEAR", NULL,
     "krelay with TLSPolicy=may tries the next attempt in the clear after a failed handshake"},
    {"Timeout.starttls", "confTO_STARTTLS", NULL, "krelay's CommandTimeout covers STARTTLS"},
    {"QueueDirectory", "QUEUE_DIR", NULL,
     "krelay keeps its own queue (QueueDirectory, /var/spool/krelay); Sendmail's stays "
     "Sendmail's"},
    {"CertFingerprintAlgorithm", "confCERT_FINGERPRINT_ALGORITHM", NULL,
     "krelay logs SHA-256 fingerprints"},
};

static const struct optmap *find_opt(const char *name, bool mc)
{
	for (size_t i = 0; i < sizeof(optmap) / sizeof(optmap[0]); i++) {
		const char *n = mc ? optmap[i].mc : optmap[i].cf;
		if (n != NULL && strcmp(n, name) == 0)
			return &optmap[i];
	}
	return NULL;
}

/* "relay:[host]", "esmtp:host", "[host]": the next hop without a mailer. */
static const char *hop_of(const char *v)
{
	const char *colon = strchr(v, ':'), *br = strchr(v, '[');

	if (colon != NULL && (br == NULL || colon < br) &&
	    (strncmp(v, "relay:", 6) == 0 || strncmp(v, "esmtp:", 6) == 0 ||
	     strncmp(v, "smtp:", 5) == 0 || strncmp(v, "smtp8:", 6) == 0 ||
	     strncmp(v, "dsmtp:", 6) == 0))
		return colon + 1;
	return v;
}

static void option(struct smi *s, const char *file, unsigned line, const char *orig,
                   const char *name, char *value, bool mc)
{
	const struct optmap *m = find_opt(name, mc);

	value = trim(value);
	if (m == NULL) {
		skip(s, file, line, orig, "no krelay equivalent");
		return;
	}
	if (m->krelay == NULL) {
		skip(s, file, line, orig, m->why);
		return;
	}
	if (strcmp(m->krelay, "ServerCertFile") == 0 || strcmp(m->krelay, "ServerKeyFile") == 0) {
		char *comma = strchr(value, ',');
		if (comma != NULL) {
			*comma = '\0';
			strbuf_printf(
			    &s->conf,
			    "# %s:%u: (the second %s after the comma, %s, is not imported: krelay "
			    "serves one certificate)\n",
			    file, line, m->krelay, trim(comma + 1));
		}
	}
	if (strcmp(m->krelay, "MaxConnections") == 0 && strcmp(value, "0") == 0) {
		skip(s, file, line, orig,
		     "0 is Sendmail's 'no limit': krelay keeps its own default");
		return;
	}
	if (strcmp(m->krelay, "DeliveryMode") == 0 && (value[0] == 'd' || value[0] == 'D')) {
		skip(s, file, line, orig, "krelay has no deferred mode: queueonly is the nearest");
		return;
	}
	take(s, file, line, orig, m->krelay, value);
}

/* DaemonPortOptions / DAEMON_OPTIONS: "Port=smtp, Addr=127.0.0.1, M=s". */
static void daemon_options(struct smi *s, const char *file, unsigned line, const char *orig,
                           char *spec)
{
	char addr[64] = "", port[32] = "25", mods[32] = "", listen[128];
	bool inet6 = false;

	for (char *sv = NULL, *kv = strtok_r(spec, ",", &sv); kv; kv = strtok_r(NULL, ",", &sv)) {
		char *eq = strchr(kv, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		char *k = trim(kv), *v = trim(eq + 1);
		if (strcasecmp(k, "Addr") == 0 || strcasecmp(k, "A") == 0)
			snprintf(addr, sizeof(addr), "%s", v);
		else if (strcasecmp(k, "Port") == 0 || strcasecmp(k, "P") == 0)
			snprintf(port, sizeof(port), "%s", v);
		else if (strcasecmp(k, "Modifiers") == 0 || strcasecmp(k, "M") == 0)
			snprintf(mods, sizeof(mods), "%s", v);
		else if (strcasecmp(k, "Family") == 0 || strcasecmp(k, "F") == 0)
			inet6 = strcasecmp(v, "inet6") == 0;
	}
	if (strcmp(port, "smtp") == 0)
		strcpy(port, "25");
	else if (strcmp(port, "smtps") == 0)
		strcpy(port, "465");
	else if (strcmp(port, "submission") == 0)
		strcpy(port, "587");
	if (strchr(mods, 'a') != NULL) {
		skip(s, file, line, orig,
		     "M=a requires AUTH, which krelay does not offer: not opened as an "
		     "unauthenticated port");
		return;
	}
	if (strspn(port, "0123456789") != strlen(port) || port[0] == '\0') {
		skip(s, file, line, orig, "port is not a number or smtp/smtps/submission");
		return;
	}
	if (addr[0] == '\0')
		snprintf(addr, sizeof(addr), "%s", inet6 ? "::" : "0.0.0.0");
	snprintf(listen, sizeof(listen), inet6 || strchr(addr, ':') ? "[%s]:%s%s" : "%s:%s%s", addr,
	         port, strchr(mods, 's') ? " smtps" : "");
	if (strchr(mods, 'S') != NULL)
		strbuf_printf(
		    &s->conf,
		    "# %s:%u: (M=S, no STARTTLS on this port, is not imported: krelay offers it "
		    "wherever it has a certificate)\n",
		    file, line);
	take(s, file, line, orig, "Listen", listen);
}

static void smart_host(struct smi *s, const char *file, unsigned line, const char *orig,
                       char *value)
{
	value = trim(value);
	if (value[0] == '\0') {
		strbuf_printf(&s->conf, "# %s:%u: %s (empty: no smart host)\n", file, line, orig);
		return;
	}
	take(s, file, line, orig, "SmartHost", hop_of(value));
}

static void add_list(struct smi *s, struct strbuf *b, const char *item)
{
	strbuf_printf(b, "%s%s", b->len ? "," : "", item);
}

/* ---- sendmail.cf ------------------------------------------------------------- */

static void cf_block_end(struct smi *s, const char *file, unsigned *n, unsigned start, unsigned end)
{
	if (*n == 0)
		return;
	strbuf_printf(
	    &s->conf,
	    "# %s:%u-%u: %u line%s not imported (rules, mailers, classes, maps, macros: krelay "
	    "routes by TransportTable, SmartHost and RelayDomains)\n",
	    file, start, end, *n, *n == 1 ? "" : "s");
	s->skipped++;
	*n = 0;
}

/* sendmail.cf lines: O options, DS (smart host), Dj (host name); the rest
 * (rulesets, mailers, classes, other macros) in blocks, each one comment. */
static void cf_lines(struct smi *s, const char *text, const char *file, unsigned first_line)
{
	unsigned line = first_line - 1, block_n = 0, block_start = 0, block_end = 0;
	const char *p = text;

	char l[4096], orig[4096];

	while (next_line(&p, l, sizeof(l))) {
		line++;
		size_t ll = strlen(l);
		if (ll > 0 && l[ll - 1] == '\r')
			l[--ll] = '\0';
		snprintf(orig, sizeof(orig), "%s", l);
		if (l[0] == '#' || trim(l)[0] == '\0')
			continue; /* comments and blank lines: neither config nor the end of a block
			           */
		snprintf(l, sizeof(l), "%s", orig);
		bool ours = (l[0] == 'O' && (l[1] == ' ' || l[1] == '\t')) ||
		            (l[0] == 'D' && (l[1] == 'S' || l[1] == 'j'));
		if (!ours) {
			if (block_n++ == 0)
				block_start = line;
			block_end = line;
			continue;
		}
		cf_block_end(s, file, &block_n, block_start, block_end);
		if (l[0] == 'D') {
			if (l[1] == 'S')
				smart_host(s, file, line, orig, l + 2);
			else
				take(s, file, line, orig, "Hostname", trim(l + 2));
			continue;
		}
		char *nv = trim(l + 2), *eq = strchr(nv, '=');
		if (eq == NULL) {
			skip(s, file, line, orig, "an option without a value");
			continue;
		}
		*eq = '\0';
		if (strcmp(trim(nv), "DaemonPortOptions") == 0)
			daemon_options(s, file, line, orig, eq + 1);
		else
			option(s, file, line, orig, trim(nv), eq + 1, false);
	}
	cf_block_end(s, file, &block_n, block_start, block_end);
}

/* ---- sendmail.mc --------------------------------------------------------------- */

/* One m4 argument without its quotes: "`x'" is x, whitespace around it goes. */
static char *unquote(char *a)
{
	size_t n;

	a = trim(a);
	n = strlen(a);
	if (n >= 2 && a[0] == '`' && a[n - 1] == '\'') {
		a[n - 1] = '\0';
		a++;
	}
	return a;
}

/* Splits "NAME(a, b, c)" into its name and up to 4 unquoted arguments;
 * returns the count of arguments, -1 when it is not a call. */
static int split_call(char *stmt, char **name, char **args, int max)
{
	char *open = strchr(stmt, '('), *p;
	int depth = 0, quote = 0, n = 0;

	*name = trim(stmt);
	if (open == NULL) {
		for (p = *name; *p; p++)
			if (!(isalnum((unsigned char)*p) || *p == '_'))
				return -1;
		return 0;
	}
	*open = '\0';
	*name = trim(stmt);
	args[n++] = open + 1;
	for (p = open + 1; *p; p++) {
		if (*p == '`')
			quote++;
		else if (*p == '\'' && quote > 0)
			quote--;
		else if (quote == 0 && *p == '(')
			depth++;
		else if (quote == 0 && *p == ')' && depth-- == 0) {
			*p = '\0';
			break;
		} else if (quote == 0 && depth == 0 && *p == ',' && n < max) {
			*p = '\0';
			args[n++] = p + 1;
		}
	}
	for (int i = 0; i < n; i++)
		args[i] = unquote(args[i]);
	return n;
}

static void mc_feature(struct smi *s, const char *file, unsigned line, const char *orig, char **a,
                       int n)
{
	const char *f = n > 0 ? a[0] : "";

	if (strcmp(f, "access_db") == 0) {
		s->access_db = true;
		strbuf_printf(
		    &s->conf,
		    "# %s:%u: %s (the access map: its RELAY and TLS entries are imported from "
		    "its text with --access FILE)\n",
		    file, line, orig);
	} else if (strcmp(f, "mailertable") == 0) {
		/* "hash -o /etc/mail/mailertable.db" or nothing (the default) */
		const char *spec = n > 1 && a[1][0] ? a[1] : "/etc/mail/mailertable.db";
		const char *path = strrchr(spec, ' ');
		path = path ? path + 1 : spec;
		snprintf(s->mailertable, sizeof(s->mailertable), "%s", path);
		size_t pl = strlen(s->mailertable);
		if (pl > 3 && strcmp(s->mailertable + pl - 3, ".db") == 0)
			s->mailertable[pl - 3] = '\0';
		strbuf_printf(&s->conf,
		              "# %s:%u: %s (imported from its text with --mailertable FILE: see "
		              "TransportTable)\n",
		              file, line, orig);
	} else if (strcmp(f, "no_default_msa") == 0) {
		strbuf_printf(&s->conf,
		              "# %s:%u: %s (krelay opens no MSA port by default either)\n", file,
		              line, orig);
	} else {
		skip(s, file, line, orig, "a Sendmail feature krelay does not have");
	}
}

static void mc_statement(struct smi *s, char *stmt, const char *file, unsigned line)
{
	char orig[1024], *name, *a[4] = {0};
	int n;

	snprintf(orig, sizeof(orig), "%s", trim(stmt));
	if (orig[0] == '\0' || orig[0] == '#')
		return;
	n = split_call(stmt, &name, a, 4);
	if (n < 0) {
		skip(s, file, line, orig, "not an m4 call krelay knows");
		return;
	}
	if (strcmp(name, "define") == 0 && n >= 1) {
		char *v = n > 1 ? a[1] : (char *)"";
		if (strcmp(a[0], "SMART_HOST") == 0)
			smart_host(s, file, line, orig, v);
		else if (strcmp(a[0], "confDOMAIN_NAME") == 0)
			take(s, file, line, orig, "Hostname", v);
		else if (strcmp(a[0], "_USE_ETC_MAIL_") == 0)
			strbuf_printf(&s->conf, "# %s:%u: %s (file layout: nothing to import)\n",
			              file, line, orig);
		else
			option(s, file, line, orig, a[0], v, true);
	} else if (strcmp(name, "DAEMON_OPTIONS") == 0 && n >= 1) {
		daemon_options(s, file, line, orig, a[0]);
	} else if (strcmp(name, "FEATURE") == 0) {
		mc_feature(s, file, line, orig, a, n);
	} else if (strcmp(name, "RELAY_DOMAIN") == 0 && n >= 1) {
		char *sv = NULL;
		for (char *d = strtok_r(a[0], " \t", &sv); d; d = strtok_r(NULL, " \t", &sv))
			add_list(s, &s->relay_domains, d);
		strbuf_printf(&s->conf, "# %s:%u: %s (see RelayDomains below)\n", file, line, orig);
		s->imported++;
	} else if (strcmp(name, "RELAY_DOMAIN_FILE") == 0) {
		strbuf_printf(&s->conf,
		              "# %s:%u: %s (imported from the file with --relay-domains FILE: see "
		              "RelayDomains)\n",
		              file, line, orig);
	} else if (strcmp(name, "include") == 0 && n >= 1 && strstr(a[0], "/cf/m4/cf.m4") == NULL) {
		strbuf_printf(
		    &s->conf,
		    "# %s:%u: %s (not read: an included file; name it too to import what it "
		    "sets)\n",
		    file, line, orig);
		s->skipped++;
	} else if (strcmp(name, "divert") == 0 || strcmp(name, "VERSIONID") == 0 ||
	           strcmp(name, "OSTYPE") == 0 || strcmp(name, "DOMAIN") == 0 ||
	           strcmp(name, "include") == 0 || strcmp(name, "MAILER") == 0 ||
	           strcmp(name, "MAILER_DEFINITIONS") == 0) {
		strbuf_printf(
		    &s->conf,
		    "# %s:%u: %s (m4 and mailer set-up of sendmail.cf itself: nothing to import)\n",
		    file, line, orig);
	} else {
		skip(s, file, line, orig, "no krelay equivalent");
	}
}

/* Whether text is m4 (a .mc) rather than a sendmail.cf. */
static bool is_mc(const char *text)
{
	return strstr(text, "dnl") != NULL || strstr(text, "define(`") != NULL ||
	       strstr(text, "FEATURE(") != NULL || strstr(text, "DAEMON_OPTIONS(") != NULL ||
	       strstr(text, "divert(") != NULL;
}

static void mc_text(struct smi *s, const char *text, const char *file)
{
	size_t len = strlen(text);
	char *stmt = malloc(len + 1), *local = malloc(len + 1);
	size_t sl = 0, ll = 0;
	unsigned line = 1, start = 1, local_start = 0;
	int depth = 0, quote = 0;
	bool in_local = false;

	if (stmt == NULL || local == NULL) {
		s->conf.oom = true;
		goto out;
	}
	for (size_t i = 0; i <= len; i++) {
		char ch = text[i];
		/* dnl: to the end of the line, outside quotes */
		if (quote == 0 && ch == 'd' && strncmp(text + i, "dnl", 3) == 0 &&
		    (i == 0 || !isalnum((unsigned char)text[i - 1]))) {
			while (text[i] && text[i] != '\n')
				i++;
			ch = text[i];
		}
		if (in_local) {
			/* LOCAL_CONFIG: sendmail.cf lines, up to the next m4 section */
			bool line_start = i == 0 || text[i - 1] == '\n';
			if (line_start && (strncmp(text + i, "LOCAL_", 6) == 0 ||
			                   strncmp(text + i, "MAILER", 6) == 0)) {
				local[ll] = '\0';
				cf_lines(s, local, file, local_start);
				in_local = false;
				ll = 0;
				start = line;
			} else {
				if (ch != '\0')
					local[ll++] = ch;
				if (ch == '\n')
					line++;
				if (ch == '\0') {
					local[ll] = '\0';
					cf_lines(s, local, file, local_start);
				}
				continue;
			}
		}
		if (ch == '`')
			quote++;
		else if (ch == '\'' && quote > 0)
			quote--;
		else if (quote == 0 && ch == '(')
			depth++;
		else if (quote == 0 && ch == ')' && depth > 0)
			depth--;
		if ((ch == '\n' || ch == '\0') && depth == 0 && quote == 0) {
			stmt[sl] = '\0';
			char *t = trim(stmt);
			if (strcmp(t, "LOCAL_CONFIG") == 0) {
				in_local = true;
				local_start = line + 1;
				strbuf_printf(
				    &s->conf,
				    "# %s:%u: LOCAL_CONFIG (its sendmail.cf lines follow)\n", file,
				    line);
			} else if (t[0] != '\0' && t[0] != '#') {
				mc_statement(s, t, file, start);
			}
			sl = 0;
			if (ch == '\n')
				line++;
			start = line;
			continue;
		}
		if (ch == '\n')
			line++;
		if (ch != '\0' && !(sl == 0 && isspace((unsigned char)ch)))
			stmt[sl++] = ch;
	}
out:
	free(stmt);
	free(local);
}

void smi_config(struct smi *s, const char *text, const char *file)
{
	strbuf_printf(&s->conf, "\n# ---- from %s (%s) ----\n", file,
	              is_mc(text) ? "sendmail.mc" : "sendmail.cf");
	if (is_mc(text))
		mc_text(s, text, file);
	else
		cf_lines(s, text, file, 1);
}

/* ---- the access map ------------------------------------------------------------ */

/* "10.1.2" -> "10.1.2.0/24"; "IPv6:2001:db8" -> "2001:db8::/32"; 0 or -1. */
static int prefix_cidr(const char *key, char *out, size_t len)
{
	if (strncasecmp(key, "IPv6:", 5) == 0) {
		const char *p = key + 5;
		int groups = 1;
		for (const char *q = p; *q; q++)
			if (*q == ':')
				groups++;
		if (strstr(p, "::") != NULL || groups > 8)
			return -1;
		char full[80];
		struct in6_addr a;
		snprintf(full, sizeof(full), "%s%s", p, groups < 8 ? "::" : "");
		if (inet_pton(AF_INET6, full, &a) != 1)
			return -1;
		snprintf(out, len, "%s/%d", full, groups * 16);
		return 0;
	}
	unsigned o[4] = {0};
	int n = 0;
	const char *p = key;
	while (n < 4) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || v > 255)
			return -1;
		o[n++] = (unsigned)v;
		if (*end == '\0')
			break;
		if (*end != '.')
			return -1;
		p = end + 1;
	}
	if (*p != '\0' && n == 4 && strchr(p, '.') != NULL)
		return -1;
	snprintf(out, len, "%u.%u.%u.%u/%d", o[0], o[1], o[2], o[3], n * 8);
	return 0;
}

/* A TLS requirement's level: VERIFY[:bits] -> verify, ENCR:bits -> encrypt. */
static const char *tls_level(const char *v, const char **extra)
{
	const char *p = v;

	*extra = NULL;
	if (strncmp(p, "TEMP+", 5) == 0 || strncmp(p, "PERM+", 5) == 0)
		p += 5;
	const char *plus = strchr(p, '+');
	if (plus != NULL)
		*extra = plus;
	if (strncmp(p, "VERIFY", 6) == 0)
		return "verify";
	if (strncmp(p, "ENCR", 4) == 0)
		return "encrypt";
	return NULL;
}

void smi_access(struct smi *s, const char *text, const char *file)
{
	const char *p = text;
	unsigned line = 0;

	strbuf_printf(&s->conf, "\n# ---- from %s (the access map) ----\n", file);
	char l[2048], key[1024] = "", val[1024] = "", cidr[96];

	while (next_line(&p, l, sizeof(l))) {
		key[0] = val[0] = '\0';
		line++;
		char *t = trim(l);
		if (t[0] == '\0' || t[0] == '#')
			continue;
		if (sscanf(t, "%1023s %1023[^\n]", key, val) < 1)
			continue;
		char *v = trim(val), *colon = strchr(key, ':');
		const char *tag = colon ? key : "", *k = colon ? colon + 1 : key;
		if (colon)
			*colon = '\0';
		const char *extra;
		const char *lvl = tls_level(v, &extra);
		char orig[2100];
		snprintf(orig, sizeof(orig), "%s%s%s %s", tag, colon ? ":" : "", k, v);
		if (strcasecmp(tag, "Connect") == 0 && strcmp(v, "RELAY") == 0) {
			if (prefix_cidr(k, cidr, sizeof(cidr)) < 0) {
				skip(s, file, line, orig,
				     "RelayClients takes addresses, not host names: add its "
				     "network");
				continue;
			}
			add_list(s, &s->relay_clients, cidr);
			strbuf_printf(&s->conf, "# %s:%u: %s (see RelayClients below: %s)\n", file,
			              line, orig, cidr);
			s->imported++;
		} else if (strcasecmp(tag, "To") == 0 && strcmp(v, "RELAY") == 0 &&
		           strchr(k, '@') == NULL) {
			add_list(s, &s->relay_domains, k);
			strbuf_printf(&s->conf, "# %s:%u: %s (see RelayDomains below)\n", file,
			              line, orig);
			s->imported++;
		} else if ((strcasecmp(tag, "TLS_Srv") == 0 || strcasecmp(tag, "TLS_Rcpt") == 0) &&
		           lvl != NULL && strchr(k, '@') == NULL) {
			if (k[0] == '\0') {
				take(s, file, line, orig, "TLSPolicy", lvl);
			} else {
				strbuf_printf(&s->tls_policy, "# %s:%u: %s\n%s %s\n", file, line,
				              orig, k, lvl);
				strbuf_printf(&s->conf, "# %s:%u: %s (see TLSPolicyTable: %s %s)\n",
				              file, line, orig, k, lvl);
				s->imported++;
			}
			if (extra != NULL)
				strbuf_printf(
				    &s->conf,
				    "# %s:%u: (the extension %s is not imported: krelay's verify "
				    "checks "
				    "the chain and the next hop's name)\n",
				    file, line, extra);
		} else if (strcasecmp(tag, "Try_TLS") == 0 && strcasecmp(v, "NO") == 0) {
			strbuf_printf(&s->tls_policy, "# %s:%u: %s\n%s none\n", file, line, orig,
			              k);
			strbuf_printf(&s->conf, "# %s:%u: %s (see TLSPolicyTable: %s none)\n", file,
			              line, orig, k);
			s->imported++;
		} else if (strcasecmp(tag, "CertIssuer") == 0 && strcmp(v, "RELAY") == 0 &&
		           k[0] == '/') {
			take(s, file, line, orig, "RelayClientIssuer", k);
		} else if (strcasecmp(tag, "CertIssuer") == 0 && strcmp(v, "SUBJECT") == 0 &&
		           k[0] == '/') {
			strbuf_printf(&s->subject_issuers, "%s\t%s:%u\n", k, file, line);
			strbuf_printf(&s->conf, "# %s:%u: %s (see RelayClientSubject below)\n",
			              file, line, orig);
			s->imported++;
		} else if (strcasecmp(tag, "CertSubject") == 0 && strcmp(v, "RELAY") == 0 &&
		           k[0] == '/') {
			strbuf_printf(&s->subjects, "%s\t%s:%u\n", k, file, line);
			strbuf_printf(&s->conf, "# %s:%u: %s (see RelayClientSubject below)\n",
			              file, line, orig);
			s->imported++;
		} else if (strcasecmp(tag, "TLS_Clt") == 0) {
			skip(s, file, line, orig,
			     "krelay has no per-client TLS requirement: RelayClientCerts decides "
			     "who "
			     "may relay");
		} else {
			skip(s, file, line, orig, "no krelay equivalent");
		}
	}
}

/* ---- mailertable, relay-domains ---------------------------------------------------- */

void smi_mailertable(struct smi *s, const char *text, const char *file)
{
	const char *p = text;
	unsigned line = 0;

	strbuf_printf(&s->conf, "\n# ---- from %s (the mailertable: see TransportTable) ----\n",
	              file);
	char l[2048], key[1024], val[1024];

	while (next_line(&p, l, sizeof(l))) {
		line++;
		char *t = trim(l);
		if (t[0] == '\0' || t[0] == '#')
			continue;
		if (sscanf(t, "%1023s %1023s", key, val) != 2) {
			skip(s, file, line, t, "not 'domain mailer:host'");
			continue;
		}
		const char *hop = hop_of(val);
		if (hop == val) {
			skip(
			    s, file, line, t,
			    "only relay:, esmtp:, smtp:, smtp8: and dsmtp: next hops have a krelay "
			    "equivalent");
			continue;
		}
		strbuf_printf(&s->transport, "# %s:%u: %s\n%s %s\n", file, line, t, key, hop);
		s->imported++;
	}
}

void smi_relay_domains(struct smi *s, const char *text, const char *file)
{
	const char *p = text;
	unsigned line = 0;

	char l[1024];

	while (next_line(&p, l, sizeof(l))) {
		line++;
		char *t = trim(l);
		if (t[0] == '\0' || t[0] == '#')
			continue;
		add_list(s, &s->relay_domains, t);
		strbuf_printf(&s->conf, "# %s:%u: %s (see RelayDomains below)\n", file, line, t);
		s->imported++;
	}
}

/* Each CertSubject:DN RELAY with each CertIssuer:DN SUBJECT: Sendmail looks
 * at the subject of a verified certificate from such an issuer. */
static void pair_subjects(struct smi *s)
{
	const char *si = s->subject_issuers.p, *sj;

	if (s->subjects.len == 0)
		return;
	if (s->subject_issuers.len == 0) {
		strbuf_printf(&s->conf,
		              "\n# not imported: CertSubject RELAY entries without a CertIssuer "
		              "SUBJECT entry (Sendmail never looks at them either)\n");
		s->skipped++;
		return;
	}
	strbuf_printf(&s->conf, "\n");
	for (; si && *si; si = strchr(si, '\n') + 1) {
		int il = (int)strcspn(si, "\t");
		for (sj = s->subjects.p; sj && *sj; sj = strchr(sj, '\n') + 1) {
			int jl = (int)strcspn(sj, "\t");
			strbuf_printf(&s->conf, "RelayClientSubject=%.*s %.*s\n", il, si, jl, sj);
		}
	}
}

void smi_finish(struct smi *s)
{
	pair_subjects(s);
	if (s->relay_domains.len > 0)
		strbuf_printf(&s->conf, "\nRelayDomains=%s\n", s->relay_domains.p);
	if (s->relay_clients.len > 0)
		strbuf_printf(
		    &s->conf,
		    "# Sendmail relays for the local machine too (Connect:127.0.0.1 RELAY in its "
		    "default access map): so does this line\nRelayClients=127.0.0.0/8,::1/128,%s\n",
		    s->relay_clients.p);
}
