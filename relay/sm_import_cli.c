/* sm_import_cli: `krelay import-sendmail` (see sm_import.h for what it
 * imports):
 *
 *   krelay import-sendmail [--access FILE] [--mailertable FILE]
 *                          [--relay-domains FILE] [-o FILE] sendmail.mc|sendmail.cf...
 *
 * The configuration goes to -o FILE (or stdout); a TransportTable and a
 * TLSPolicyTable, when there is anything for them, beside it (or in the
 * current directory), named krelay-transport and krelay-tls-policy.  Every
 * option line written is checked by krelay's own parser; one it refuses is
 * written as a comment with the reason. */
#include "sm_import_cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "sm_import.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;
	FILE *mem;

	if (f == NULL)
		return NULL;
	mem = open_memstream(&buf, &len);
	if (mem == NULL) {
		fclose(f);
		return NULL;
	}
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, mem);
	bool bad = ferror(f) != 0;
	fclose(f);
	fclose(mem);
	if (bad) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	return buf;
}

static int feed(struct smi *s, void (*fn)(struct smi *, const char *, const char *),
                const char *path)
{
	char *text = slurp(path);

	if (text == NULL) {
		fprintf(stderr, "krelay import-sendmail: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fn(s, text, path);
	free(text);
	return 0;
}

static int write_file(const char *path, const char *head, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(head, f) < 0 || fputs(text, f) < 0 || fclose(f) != 0) {
		fprintf(stderr, "krelay import-sendmail: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Runs every option line through krelay's parser; one it refuses becomes
 * a comment saying why.  Returns the checked text (malloc'ed). */
static char *checked(const char *text, unsigned *refused)
{
	struct config c;
	char *out = NULL, err[CONFIG_ERR_MAX];
	size_t olen = 0;
	FILE *mem = open_memstream(&out, &olen);
	const char *p = text;
	unsigned lineno = 0;

	if (mem == NULL)
		return NULL;
	config_defaults(&c);
	c.path = strdup("import");
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *line = strndup(p, len);

		p = nl ? nl + 1 : p + len;
		lineno++;
		if (line == NULL)
			break;
		if (line[0] != '#' && line[0] != '\0' &&
		    config_parse_line(&c, line, lineno, err, sizeof(err)) < 0) {
			const char *why = strstr(err, ": ");
			fprintf(mem, "# not imported: %s (krelay refuses it: %s)\n", line,
			        why ? why + 2 : err);
			(*refused)++;
		} else {
			fprintf(mem, "%s\n", line);
		}
		free(line);
	}
	config_free(&c);
	fclose(mem);
	return out;
}

static int usage(void)
{
	fprintf(stderr, "usage: krelay import-sendmail [--access FILE] [--mailertable FILE] "
	                "[--relay-domains FILE] [-o FILE] sendmail.mc|sendmail.cf...\n");
	return 2;
}

int sm_import_cli(int argc, char **argv)
{
	const char *access_file = NULL, *mailertable = NULL, *relay_domains = NULL, *out = NULL;
	char dir[PATH_MAX] = ".", tpath[PATH_MAX + 32], ppath[PATH_MAX + 32], head[512];
	struct smi s;
	int nconf = 0, ret = 1;
	unsigned refused = 0;

	smi_init(&s);
	for (int i = 0; i < argc; i++) {
		const char **opt = strcmp(argv[i], "--access") == 0          ? &access_file
		                   : strcmp(argv[i], "--mailertable") == 0   ? &mailertable
		                   : strcmp(argv[i], "--relay-domains") == 0 ? &relay_domains
		                   : strcmp(argv[i], "-o") == 0              ? &out
		                                                             : NULL;
		if (opt != NULL) {
			if (i + 1 >= argc)
				return usage();
			*opt = argv[++i];
		} else if (argv[i][0] == '-') {
			return usage();
		}
	}
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--access") == 0 || strcmp(argv[i], "--mailertable") == 0 ||
		    strcmp(argv[i], "--relay-domains") == 0 || strcmp(argv[i], "-o") == 0) {
			i++;
			continue;
		}
		if (feed(&s, smi_config, argv[i]) < 0)
			goto done;
		nconf++;
	}
	if (nconf == 0)
		return usage();
	/* the maps the configuration names, read from their text where given or
	 * where Sendmail keeps it */
	if (access_file == NULL && s.access_db && access("/etc/mail/access", R_OK) == 0)
		access_file = "/etc/mail/access";
	if (mailertable == NULL && s.mailertable[0] && access(s.mailertable, R_OK) == 0)
		mailertable = s.mailertable;
	if (access_file != NULL && feed(&s, smi_access, access_file) < 0)
		goto done;
	if (s.access_db && access_file == NULL)
		fprintf(stderr,
		        "krelay import-sendmail: the configuration uses the access map: name "
		        "its text with --access FILE to import its RELAY and TLS entries\n");
	if (mailertable != NULL && feed(&s, smi_mailertable, mailertable) < 0)
		goto done;
	if (s.mailertable[0] && mailertable == NULL)
		fprintf(stderr,
		        "krelay import-sendmail: FEATURE(mailertable) names %s: name its text "
		        "with --mailertable FILE\n",
		        s.mailertable);
	if (relay_domains != NULL && feed(&s, smi_relay_domains, relay_domains) < 0)
		goto done;
	smi_finish(&s);
	if (s.conf.oom || s.transport.oom || s.tls_policy.oom || s.relay_domains.oom ||
	    s.relay_clients.oom || s.subjects.oom || s.subject_issuers.oom) {
		fprintf(stderr, "krelay import-sendmail: out of memory\n");
		goto done;
	}
	if (out != NULL) {
		const char *slash = strrchr(out, '/');
		if (slash != NULL)
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - out), out);
		if (dir[0] == '\0')
			strcpy(dir, "/");
	}
	char absdir[PATH_MAX];
	if (realpath(dir, absdir) == NULL) {
		fprintf(stderr, "krelay import-sendmail: %s: %s\n", dir, strerror(errno));
		goto done;
	}
	snprintf(tpath, sizeof(tpath), "%s/krelay-transport", absdir);
	snprintf(ppath, sizeof(ppath), "%s/krelay-tls-policy", absdir);
	time_t now = time(NULL);
	char when[64];
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
	snprintf(head, sizeof(head),
	         "# written by krelay import-sendmail on %s: each setting follows the Sendmail "
	         "line it came from;\n# \"not imported\" lines say what has no krelay equivalent. "
	         "Check it with: krelay check -C FILE\n",
	         when);
	if (s.transport.len > 0) {
		if (write_file(tpath, head, s.transport.p) < 0)
			goto done;
		fprintf(stderr, "krelay import-sendmail: wrote %s\n", tpath);
	}
	if (s.tls_policy.len > 0) {
		if (write_file(ppath, head, s.tls_policy.p) < 0)
			goto done;
		fprintf(stderr, "krelay import-sendmail: wrote %s\n", ppath);
	}
	char *body = NULL;
	size_t blen = 0;
	FILE *mem = open_memstream(&body, &blen);
	if (mem == NULL)
		goto done;
	fputs(s.conf.p ? s.conf.p : "", mem);
	if (s.transport.len > 0)
		fprintf(mem, "\nTransportTable=%s\n", tpath);
	if (s.tls_policy.len > 0)
		fprintf(mem, "\nTLSPolicyTable=%s\n", ppath);
	fclose(mem);
	char *text = checked(body ? body : "", &refused);
	free(body);
	if (text == NULL)
		goto done;
	if (out != NULL) {
		ret = write_file(out, head, text) < 0 ? 1 : 0;
		if (ret == 0)
			fprintf(stderr, "krelay import-sendmail: wrote %s\n", out);
	} else {
		fputs(head, stdout);
		fputs(text, stdout);
		ret = fflush(stdout) == 0 ? 0 : 1;
	}
	free(text);
	fprintf(stderr,
	        "krelay import-sendmail: %u setting%s imported, %u not imported (see the "
	        "comments)\n",
	        s.imported - refused, s.imported - refused == 1 ? "" : "s", s.skipped + refused);
done:
	smi_free(&s);
	return ret;
}
