/* tlsrpt_cli: see tlsrpt_cli.h.  Reads QueueDirectory/tlsrpt/DATE (written
 * by the relay, tlsrpt_log.c) and, for MTA-STS domains, the policy cached
 * in QueueDirectory/sts/DOMAIN. */
#include "tlsrpt_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sts_policy.h"
#include "tlsrpt.h"

static bool valid_date(const char *s)
{
	int y, m, d;
	char extra;

	return strlen(s) == 10 && sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &extra) == 3 && m >= 1 &&
	       m <= 12 && d >= 1 && d <= 31;
}

/* The day's file into a tlsrpt_day; NULL with a message when unreadable. */
static struct tlsrpt_day *load_day(const struct config *c, const char *date)
{
	char path[4096], line[1024];
	struct tlsrpt_day *d;
	struct tlsrpt_event e;
	unsigned skipped = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/tlsrpt/%s", c->queue_directory, date);
	if ((d = tlsrpt_day_new()) == NULL) {
		fprintf(stderr, "krelay tlsrpt: out of memory\n");
		return NULL;
	}
	if ((f = fopen(path, "r")) == NULL) {
		if (errno == ENOENT)
			return d; /* nothing recorded that day */
		fprintf(stderr, "krelay tlsrpt: %s: %s\n", path, strerror(errno));
		tlsrpt_day_free(d);
		return NULL;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (tlsrpt_line_parse(line, strlen(line), &e) < 0) {
			skipped++;
			continue;
		}
		if (tlsrpt_day_add(d, &e) < 0) {
			fprintf(stderr, "krelay tlsrpt: out of memory\n");
			fclose(f);
			tlsrpt_day_free(d);
			return NULL;
		}
	}
	fclose(f);
	if (skipped > 0)
		fprintf(stderr, "krelay tlsrpt: %s: %u line%s not understood, left out\n", path,
		        skipped, skipped == 1 ? "" : "s");
	return d;
}

/* The cached MTA-STS policy of domain (after its header line), or NULL. */
static char *sts_cached(const struct config *c, const char *domain, size_t *len)
{
	char path[4096], *buf, *nl;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "%s/sts/%s", c->queue_directory, domain);
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	buf = malloc(STS_POLICY_MAX + 256);
	n = buf ? fread(buf, 1, STS_POLICY_MAX + 255, f) : 0;
	fclose(f);
	if (buf == NULL || (nl = memchr(buf, '\n', n)) == NULL) {
		free(buf);
		return NULL;
	}
	*len = n - (size_t)(nl + 1 - buf);
	memmove(buf, nl + 1, *len);
	return buf;
}

int tlsrpt_cli(const struct config *c, int argc, char **argv)
{
	char today[16], contact[320];
	const char *date = today, *only = NULL;
	struct tlsrpt_day *d;
	bool report;
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(today, sizeof(today), "%Y-%m-%d", &tm);
	if (argc < 1 || (strcmp(argv[0], "--show") != 0 && strcmp(argv[0], "--report") != 0) ||
	    argc > 3 || (strcmp(argv[0], "--show") == 0 && argc > 2)) {
		fprintf(stderr, "usage: krelay tlsrpt [-C FILE] --show [DATE] | --report [DATE] "
		                "[DOMAIN]\n");
		return 2;
	}
	report = strcmp(argv[0], "--report") == 0;
	if (argc >= 2)
		date = argv[1];
	if (argc == 3)
		only = argv[2];
	if (!valid_date(date)) {
		fprintf(stderr, "krelay tlsrpt: '%s' is not a date (YYYY-MM-DD)\n", date);
		return 2;
	}
	if ((d = load_day(c, date)) == NULL)
		return 1;
	if (!report) {
		tlsrpt_day_show(d, stdout);
		tlsrpt_day_free(d);
		return 0;
	}
	snprintf(contact, sizeof(contact), "postmaster@%s", c->hostname);
	for (size_t i = 0; tlsrpt_day_domain(d, i) != NULL; i++) {
		const char *dom = tlsrpt_day_domain(d, i);
		size_t plen = 0;
		char *policy;

		if (only != NULL && strcasecmp(only, dom) != 0)
			continue;
		policy = sts_cached(c, dom, &plen);
		struct tlsrpt_report_info info = {.date = date,
		                                  .organization = c->hostname,
		                                  .contact = contact,
		                                  .sts_policy = policy,
		                                  .sts_policy_len = plen};
		tlsrpt_report_json(d, dom, &info, stdout);
		free(policy);
	}
	tlsrpt_day_free(d);
	return 0;
}
