/* tlsrpt_cli: see tlsrpt_cli.h.  Reads QueueDirectory/tlsrpt/DATE (written
 * by the relay, tlsrpt_log.c) and, for MTA-STS domains, the policy cached
 * in QueueDirectory/sts/DOMAIN. */
#include "tlsrpt_cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "dns.h"
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

/* The day's report for dom (section 4.4), organization and contact from
 * Hostname, an MTA-STS domain's policy from the cache. */
static void write_report(const struct config *c, const struct tlsrpt_day *d, const char *dom,
                         const char *date, FILE *out)
{
	char contact[320];
	size_t plen = 0;
	char *policy = sts_cached(c, dom, &plen);

	snprintf(contact, sizeof(contact), "postmaster@%s", c->hostname);
	struct tlsrpt_report_info info = {.date = date,
	                                  .organization = c->hostname,
	                                  .contact = contact,
	                                  .sts_policy = policy,
	                                  .sts_policy_len = plen};
	tlsrpt_report_json(d, dom, &info, out);
	free(policy);
}

/* ---- --send: RFC 8460 section 3 and 5 ---- */

/* gzip of in[0..n) in *out (malloc'd). */
static int gzip_buf(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
	z_stream z;
	size_t cap = n + n / 100 + 64;
	int rc;

	memset(&z, 0, sizeof(z));
	if ((*out = malloc(cap)) == NULL)
		return -1;
	if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK) {
		free(*out);
		return -1;
	}
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)n;
	z.next_out = *out;
	z.avail_out = (uInt)cap;
	rc = deflate(&z, Z_FINISH);
	*outlen = z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END) {
		free(*out);
		return -1;
	}
	return 0;
}

/* The report as a message (section 5.3), given to `krelay sendmail` on
 * its standard input: the relay queues it as any other. */
static int send_mail(const struct config *c, const char *to, const char *domain, const char *date,
                     const char *id, const unsigned char *gz, size_t gzlen, char *why, size_t wl)
{
	char sender[320], boundary[64], datehdr[64], self[64];
	unsigned char rnd[12];
	time_t now = time(NULL), start;
	struct tm tm;
	int pipefd[2], status;
	pid_t pid;
	FILE *m;

	snprintf(sender, sizeof(sender), "postmaster@%s", c->hostname);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(why, wl, "no random bytes");
		return -1;
	}
	snprintf(boundary, sizeof(boundary), "tlsrpt-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
	         rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	memset(&tm, 0, sizeof(tm));
	sscanf(date, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	start = timegm(&tm);
	gmtime_r(&now, &tm);
	strftime(datehdr, sizeof(datehdr), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (pipe(pipefd) < 0) {
		snprintf(why, wl, "pipe: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) < 0) {
		snprintf(why, wl, "fork: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	if (pid == 0) {
		char *args[10];
		int k = 0;

		dup2(pipefd[0], STDIN_FILENO);
		close(pipefd[0]);
		close(pipefd[1]);
		snprintf(self, sizeof(self), "/proc/self/exe");
		args[k++] = "krelay";
		args[k++] = "sendmail";
		if (c->path != NULL) {
			args[k++] = "-C";
			args[k++] = c->path;
		}
		args[k++] = "-i";
		args[k++] = "-f";
		args[k++] = sender;
		args[k++] = (char *)to;
		args[k] = NULL;
		execv(self, args);
		_exit(127);
	}
	close(pipefd[0]);
	m = fdopen(pipefd[1], "w");
	fprintf(m,
	        "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\n"
	        "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
	        "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n"
	        "Message-ID: <%s.%02x%02x%02x%02x@%s>\r\nMIME-Version: 1.0\r\n"
	        "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"%s\"\r\n\r\n"
	        "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
	        "This is an aggregate TLS report (RFC 8460) from %s for %s on %s.\r\n\r\n"
	        "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
	        "Content-Transfer-Encoding: base64\r\n"
	        "Content-Disposition: attachment; filename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
	        sender, to, datehdr, domain, c->hostname, id, domain, c->hostname, date, rnd[8],
	        rnd[9], rnd[10], rnd[11], c->hostname, boundary, boundary, c->hostname, domain,
	        date, boundary, c->hostname, domain, (long long)start, (long long)start + 86399);
	for (size_t i = 0; i < gzlen; i += 57) {
		unsigned char line[80];
		int n = EVP_EncodeBlock(line, gz + i, (int)(gzlen - i < 57 ? gzlen - i : 57));
		fprintf(m, "%.*s\r\n", n, line);
	}
	fprintf(m, "\r\n--%s--\r\n", boundary);
	fclose(m);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, wl, "krelay sendmail exited %d",
		         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return -1;
	}
	return 0;
}

/* POST to an https: rua (section 5.4), its host resolved by DNSServer. */
static int send_https(const struct config *c, const char *url, const unsigned char *gz,
                      size_t gzlen, char *why, size_t wl)
{
	char *host = NULL, *port = NULL, resolve[600], ip[64], err[256],
	     errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdr = NULL, *res = NULL;
	CURLU *u = curl_url();
	long code = 0;
	CURLcode rc;
	CURL *e = NULL;
	int ret = -1;

	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
		snprintf(why, wl, "not a URL");
		goto done;
	}
	if (dns_addr_sync(c->dns_server, host, ip, sizeof(ip), err, sizeof(err)) < 0) {
		snprintf(why, wl, "%.100s: %.100s", host, err);
		goto done;
	}
	snprintf(resolve, sizeof(resolve), "%s:%s:%s%s%s", host, port, strchr(ip, ':') ? "[" : "",
	         ip, strchr(ip, ':') ? "]" : "");
	if ((e = curl_easy_init()) == NULL || (res = curl_slist_append(NULL, resolve)) == NULL ||
	    (hdr = curl_slist_append(NULL, "Content-Type: application/tlsrpt+gzip")) == NULL) {
		snprintf(why, wl, "libcurl: out of memory");
		goto done;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_RESOLVE, res);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(e, CURLOPT_CAINFO, c->mta_sts_ca_file);
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, gz);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)gzlen);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "krelay-tlsrpt/1");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	if (rc != CURLE_OK)
		snprintf(why, wl, "%.200s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else if (code < 200 || code > 299)
		snprintf(why, wl, "HTTP status %ld", code);
	else
		ret = 0;
done:
	curl_slist_free_all(hdr);
	curl_slist_free_all(res);
	if (e != NULL)
		curl_easy_cleanup(e);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return ret;
}

/* Each domain of the day with exactly one TLSRPT record gets its report at
 * every rua (section 3: none, or more than one record: none is sent). */
static int send_reports(const struct config *c, const struct tlsrpt_day *d, const char *date,
                        const char *only)
{
	int failures = 0;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	for (size_t i = 0; tlsrpt_day_domain(d, i) != NULL; i++) {
		const char *dom = tlsrpt_day_domain(d, i);
		char name[TLSRPT_NAME_MAX + 16], err[256], id[TLSRPT_NAME_MAX + 128];
		char **txt = NULL, *json = NULL;
		size_t ntxt = 0, jlen = 0, gzlen = 0;
		struct tlsrpt_rua rua, one;
		unsigned char *gz = NULL;
		int found = 0;
		FILE *j;

		if (only != NULL && strcasecmp(only, dom) != 0)
			continue;
		snprintf(name, sizeof(name), "_smtp._tls.%s", dom);
		if (dns_txt_sync(c->dns_server, name, &txt, &ntxt, err, sizeof(err)) < 0) {
			printf("%s: %s: %s: not sent\n", dom, name, err);
			failures++;
			continue;
		}
		for (size_t k = 0; k < ntxt; k++) {
			int r = tlsrpt_txt_parse(txt[k], strlen(txt[k]), &one);
			if (r != 0 && ++found == 1)
				rua = one;
			if (r < 0)
				found = 2; /* unusable: as if several */
			free(txt[k]);
		}
		free(txt);
		if (found != 1) {
			printf("%s: %s record at %s: not sent\n", dom,
			       found == 0 ? "no TLSRPT" : "no usable", name);
			continue;
		}
		if ((j = open_memstream(&json, &jlen)) == NULL)
			return 1;
		write_report(c, d, dom, date, j);
		fclose(j);
		snprintf(id, sizeof(id), "%s_%s@%s", date, dom, c->hostname);
		if (gzip_buf(json, jlen, &gz, &gzlen) < 0) {
			printf("%s: gzip failed: not sent\n", dom);
			free(json);
			failures++;
			continue;
		}
		for (size_t k = 0; k < rua.n; k++) {
			int r = rua.uri[k].mailto
			            ? send_mail(c, rua.uri[k].v, dom, date, id, gz, gzlen, err,
			                        sizeof(err))
			            : send_https(c, rua.uri[k].v, gz, gzlen, err, sizeof(err));
			printf("%s: %s%s: %s%s\n", dom, rua.uri[k].mailto ? "mailto:" : "",
			       rua.uri[k].v, r == 0 ? "sent" : "failed: ", r == 0 ? "" : err);
			failures += r < 0;
		}
		free(gz);
		free(json);
	}
	curl_global_cleanup();
	return failures ? 1 : 0;
}

int tlsrpt_cli(const struct config *c, int argc, char **argv)
{
	char today[16], yesterday[16];
	const char *date = today, *only = NULL;
	struct tlsrpt_day *d;
	bool report, send;
	time_t now = time(NULL), before = now - 86400;
	struct tm tm;
	int ret;

	gmtime_r(&now, &tm);
	strftime(today, sizeof(today), "%Y-%m-%d", &tm);
	gmtime_r(&before, &tm);
	strftime(yesterday, sizeof(yesterday), "%Y-%m-%d", &tm);
	if (argc < 1 ||
	    (strcmp(argv[0], "--show") != 0 && strcmp(argv[0], "--report") != 0 &&
	     strcmp(argv[0], "--send") != 0) ||
	    argc > 3 || (strcmp(argv[0], "--show") == 0 && argc > 2)) {
		fprintf(stderr, "usage: krelay tlsrpt [-C FILE] --show [DATE] | --report [DATE] "
		                "[DOMAIN] | --send [DATE] [DOMAIN]\n");
		return 2;
	}
	report = strcmp(argv[0], "--report") == 0;
	send = strcmp(argv[0], "--send") == 0;
	if (send)
		date = yesterday; /* a day is reported once it is over */
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
	if (send) {
		ret = send_reports(c, d, date, only);
		tlsrpt_day_free(d);
		return ret;
	}
	if (!report) {
		tlsrpt_day_show(d, stdout);
		tlsrpt_day_free(d);
		return 0;
	}
	for (size_t i = 0; tlsrpt_day_domain(d, i) != NULL; i++) {
		const char *dom = tlsrpt_day_domain(d, i);

		if (only != NULL && strcasecmp(only, dom) != 0)
			continue;
		write_report(c, d, dom, date, stdout);
	}
	tlsrpt_day_free(d);
	return 0;
}
