/* dnsq: relay/dns.c and relay/route.c from the command line, on a ring, for
 * the integration tests.
 *
 *   dnsq SERVER mx DOMAIN     "status S", then "mx PREF HOST" in answer
 *                             order ("." for a null MX's empty host)
 *   dnsq SERVER addr HOST     "status S", then "addr A" (IPv6 first)
 *   dnsq SERVER route DOMAIN  route_lookup, MX lookup, route_order_mx, then
 *                             the address lookups of each exchanger in order:
 *                             "status S" (of the MX lookup), "nullmx", or for
 *                             each host "mx PREF HOST" (or "implicit HOST"
 *                             when the domain has no MX), then its "addr A"
 *                             lines or "noaddr HOST S"
 *   dnsq SERVER txt NAME      "status S", then "txt TEXT" per record (its
 *                             strings joined)
 *   dnsq SERVER cancel NAME   starts an MX and an address lookup of NAME,
 *                             turns the ring once, calls dns_free: "cancel
 *                             mx S" and "cancel addr S" as the callbacks come
 *                             (from the ring, after dns_free returned)
 *
 *   dnsq --dnssec ANCHOR SERVER mx|addr|tlsa|cancel NAME
 *                             the same through the validating resolver
 *                             (dns_init_dnssec, ANCHOR a trust-anchor file):
 *                             "status S secure" or "status S insecure";
 *                             tlsa looks up _25._tcp.NAME (NAME "HOST:PORT"
 *                             for another port): "tlsa U S M HEX" lines;
 *                             after a BOGUS status, "why_bogus TEXT"
 *
 * SERVER is "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" (or a comma-separated
 * list of them: the DNSServer option), or "-" for /etc/resolv.conf.
 * S is OK, NXDOMAIN, NODATA, TEMPFAIL or BOGUS.  Exits 0 when the lookups finished
 * (whatever their status), 1 when they did not finish within 10 s or could
 * not start, 2 on bad usage. */
#include "dns.h"
#include "ring.h"
#include "route.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char *const status_names[] = {
    [DNS_OK] = "OK",         [DNS_NXDOMAIN] = "NXDOMAIN",
    [DNS_NODATA] = "NODATA", [DNS_TEMPFAIL] = "TEMPFAIL",
    [DNS_BOGUS] = "BOGUS",
};

static bool dnssec_mode;

static void print_status(struct dns *d, enum dns_status st, bool secure)
{
	if (!dnssec_mode) {
		printf("status %s\n", status_names[st]);
		return;
	}
	printf("status %s %s\n", status_names[st], secure ? "secure" : "insecure");
	if (st == DNS_BOGUS)
		printf("why_bogus %s\n", dns_why_bogus(d));
}

struct job {
	struct dns *dns;
	bool done;
	bool stopping; /* dns_free called: ignore the cancelled callbacks */
	bool in_free;  /* inside dns_free (cancel mode) */
	int cancelled; /* cancel mode: callbacks seen */
	/* route */
	struct route_hop hop;
	struct dns_mx mx[DNS_MX_MAX];
	size_t nmx, next;
	bool implicit;
};

static uint64_t rng_state;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* After dns_free: every op of the handle completes at once (cancelled
 * polls, a nop), so a quiet turn means it has freed itself. */
static void drain(struct ring *ring)
{
	double deadline = now_s() + 5;

	while (now_s() < deadline && ring_run_once(ring, 50) > 0)
		;
}

static unsigned rnd(void *ctx, unsigned bound)
{
	/* xorshift64*: plenty for shuffling exchangers. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (unsigned)((rng_state * 2685821657736338717ULL) >> 33) % bound;
}

static void print_addrs(const struct dns_addr *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char buf[INET6_ADDRSTRLEN];
		const void *bin;

		if (a[i].sa.ss_family == AF_INET6)
			bin = &((const struct sockaddr_in6 *)&a[i].sa)->sin6_addr;
		else
			bin = &((const struct sockaddr_in *)&a[i].sa)->sin_addr;
		if (inet_ntop(a[i].sa.ss_family, bin, buf, sizeof(buf)) == NULL)
			snprintf(buf, sizeof(buf), "?");
		printf("addr %s\n", buf);
	}
}

static void mx_cb(void *arg, enum dns_status st, bool secure, const struct dns_mx *mx, size_t n)
{
	struct job *j = arg;

	if (j->stopping)
		return;
	print_status(j->dns, st, secure);
	for (size_t i = 0; i < n; i++)
		printf("mx %u %s\n", mx[i].pref, mx[i].host[0] ? mx[i].host : ".");
	j->done = true;
}

static void addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a, size_t n)
{
	struct job *j = arg;

	if (j->stopping)
		return;
	print_status(j->dns, st, secure);
	print_addrs(a, n);
	j->done = true;
}

static void txt_cb(void *arg, enum dns_status st, bool secure, const struct dns_txt *t, size_t n)
{
	struct job *j = arg;

	if (j->stopping)
		return;
	print_status(j->dns, st, secure);
	for (size_t i = 0; i < n; i++)
		printf("txt %.*s\n", (int)t[i].len, t[i].s);
	j->done = true;
}

static void tlsa_cb(void *arg, enum dns_status st, bool secure, const struct dns_tlsa *t, size_t n)
{
	struct job *j = arg;

	if (j->stopping)
		return;
	print_status(j->dns, st, secure);
	for (size_t i = 0; i < n; i++) {
		printf("tlsa %u %u %u ", t[i].usage, t[i].selector, t[i].mtype);
		for (size_t k = 0; k < t[i].len; k++)
			printf("%02x", t[i].data[k]);
		printf("\n");
	}
	j->done = true;
}

static void cancel_mx_cb(void *arg, enum dns_status st, bool secure, const struct dns_mx *mx,
                         size_t n)
{
	struct job *j = arg;

	printf("cancel mx %s%s\n", status_names[st], j->in_free ? " (inside dns_free)" : "");
	j->cancelled++;
}

static void cancel_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                           size_t n)
{
	struct job *j = arg;

	printf("cancel addr %s%s\n", status_names[st], j->in_free ? " (inside dns_free)" : "");
	j->cancelled++;
}

/* cancel mode: dns_free with two lookups outstanding. */
static int cancel_mode(struct ring *ring, struct job *j, const char *name)
{
	double deadline;

	dns_query_mx(j->dns, name, cancel_mx_cb, j);
	dns_query_addr(j->dns, name, cancel_addr_cb, j);
	ring_run_once(ring, 0);
	j->in_free = true;
	dns_free(j->dns);
	j->in_free = false;
	deadline = now_s() + 5;
	while (j->cancelled < 2 && now_s() < deadline)
		ring_run_once(ring, 100);
	drain(ring);
	return j->cancelled == 2 ? 0 : 1;
}

static void route_next(struct job *j);

static void route_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                          size_t n)
{
	struct job *j = arg;

	if (j->stopping)
		return;
	if (st == DNS_OK)
		print_addrs(a, n);
	else
		printf("noaddr %s %s\n", j->mx[j->next].host, status_names[st]);
	j->next++;
	route_next(j); /* a query from a callback: runs on a later turn */
}

/* Looks up the addresses of the next exchanger, or ends. */
static void route_next(struct job *j)
{
	if (j->next == j->nmx) {
		j->done = true;
		return;
	}
	if (j->implicit)
		printf("implicit %s\n", j->mx[j->next].host);
	else
		printf("mx %u %s\n", j->mx[j->next].pref, j->mx[j->next].host);
	dns_query_addr(j->dns, j->mx[j->next].host, route_addr_cb, j);
}

static void route_mx_cb(void *arg, enum dns_status st, bool secure, const struct dns_mx *mx,
                        size_t n)
{
	struct job *j = arg;
	int k;

	if (j->stopping)
		return;
	print_status(j->dns, st, secure);
	if (st == DNS_NODATA) {
		/* RFC 5321 5.1: no MX, the domain is its own exchanger. */
		j->implicit = true;
		snprintf(j->mx[0].host, sizeof(j->mx[0].host), "%s", j->hop.host);
		j->mx[0].pref = 0;
		j->nmx = 1;
		route_next(j);
		return;
	}
	if (st != DNS_OK) {
		j->done = true;
		return;
	}
	memcpy(j->mx, mx, n * sizeof(*mx));
	k = route_order_mx(j->mx, n, rnd, NULL);
	if (k < 0) {
		printf("nullmx\n");
		j->done = true;
		return;
	}
	j->nmx = (size_t)k;
	route_next(j);
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: dnsq [--dnssec ANCHOR] SERVER|- mx|addr|txt|tlsa|route|cancel NAME\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct ring ring;
	struct job job;
	char err[256];
	const char *server, *what, *name;
	double deadline;
	int rc = 0, ret;
	char *anchor = NULL;

	if (argc == 6 && strcmp(argv[1], "--dnssec") == 0) {
		if (dns_anchor_read(argv[2], &anchor, err, sizeof(err)) < 0) {
			fprintf(stderr, "dnsq: %s\n", err);
			return 1;
		}
		dnssec_mode = true;
		argc -= 2;
		argv += 2;
	}
	if (argc != 4)
		return usage();
	server = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
	what = argv[2];
	name = argv[3];
	if (strcmp(what, "mx") != 0 && strcmp(what, "addr") != 0 && strcmp(what, "route") != 0 &&
	    strcmp(what, "cancel") != 0 && strcmp(what, "tlsa") != 0 && strcmp(what, "txt") != 0)
		return usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (getrandom(&rng_state, sizeof(rng_state), GRND_NONBLOCK) != sizeof(rng_state))
		rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	rng_state |= 1;

	ret = ring_init(&ring, 64);
	if (ret == 0)
		ret = ring_enable(&ring);
	if (ret < 0) {
		fprintf(stderr, "dnsq: ring: %s\n", strerror(-ret));
		return 1;
	}
	memset(&job, 0, sizeof(job));
	if ((dnssec_mode ? dns_init_dnssec(&job.dns, &ring, server, anchor, err, sizeof(err))
	                 : dns_init(&job.dns, &ring, server, err, sizeof(err))) < 0) {
		fprintf(stderr, "dnsq: %s\n", err);
		ring_exit(&ring);
		free(anchor);
		return 1;
	}
	free(anchor);

	if (strcmp(what, "cancel") == 0) {
		rc = cancel_mode(&ring, &job, name);
		ring_exit(&ring);
		return rc;
	}
	if (strcmp(what, "mx") == 0) {
		dns_query_mx(job.dns, name, mx_cb, &job);
	} else if (strcmp(what, "addr") == 0) {
		dns_query_addr(job.dns, name, addr_cb, &job);
	} else if (strcmp(what, "txt") == 0) {
		dns_query_txt(job.dns, name, txt_cb, &job);
	} else if (strcmp(what, "tlsa") == 0) {
		char host[DNS_NAME_MAX + 1], *colon;
		unsigned port = 25;

		snprintf(host, sizeof(host), "%s", name);
		if ((colon = strrchr(host, ':')) != NULL) {
			*colon = '\0';
			port = (unsigned)atoi(colon + 1);
		}
		dns_query_tlsa(job.dns, host, port, tlsa_cb, &job);
	} else {
		route_lookup(NULL, NULL, name, &job.hop);
		if (job.hop.mx) {
			dns_query_mx(job.dns, job.hop.host, route_mx_cb, &job);
		} else {
			/* An address literal or a bracketed host: no MX. */
			printf("status OK\n");
			snprintf(job.mx[0].host, sizeof(job.mx[0].host), "%s", job.hop.host);
			job.nmx = 1;
			job.implicit = true;
			route_next(&job);
		}
	}
	if (job.done) {
		fprintf(stderr, "dnsq: a callback ran inside a dns_query call\n");
		rc = 1;
	}

	deadline = now_s() + 10;
	while (!job.done && now_s() < deadline) {
		ret = ring_run_once(&ring, 100);
		if (ret < 0) {
			fprintf(stderr, "dnsq: ring_run_once: %s\n", strerror(-ret));
			rc = 1;
			break;
		}
	}
	if (!job.done) {
		printf("status TIMEOUT\n");
		rc = 1;
	}

	/* dns_free cancels what is left (its callbacks still come, through
	 * the ring) and frees the handle once its ops are idle. */
	job.stopping = true;
	dns_free(job.dns);
	drain(&ring);
	ring_exit(&ring);
	return rc;
}
