/* bench_source: options, the run loop and the report of
 * `krelay-bench source` (connections are in bench_source_conn.c). */
#include "bench_source.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_stats.h"
#include "bench_tls.h"

#define RING_ENTRIES   1024
#define QUIT_GRACE_S   2.0 /* for QUITs after the last message */
#define MAX_CONCURRENT 20000

static const char usage_text[] =
    "usage: krelay-bench source --to HOST:PORT --messages N --size SIZE --concurrency C\n"
    "        [--per-conn M] [--rcpts R] [--tls none|starttls|smtps] [--ca FILE]\n"
    "        [--cert FILE --key FILE] [--no-pipelining] [--bdat] [--helo NAME] [--from ADDR]\n"
    "        [--rcpt-domain DOMAIN] [--timeout SECONDS] [--json] [--progress] [--tls-max 1.2|1.3]\n"
    "Sends N messages of SIZE bytes over C connections, M messages per connection\n"
    "(default 100; 0 = unlimited), each to R recipients (default 1).  SIZE: 4096, 4k,\n"
    "100k, 1m, 10m, or weighted sizes: mix:4k=70,100k=25,1m=5.  Each message carries\n"
    "X-Bench: <seq> <bodylen> <checksum> for `krelay-bench sink --verify`.  --bdat sends\n"
    "BDAT LAST instead of DATA when the server offers CHUNKING.  --ca verifies the\n"
    "server's certificate chain; --tls-max 1.2 (OpenSSL 3.0 hands receive to kTLS only in\n"
    "TLS 1.2).  Reports messages/s, MB/s (10^6 bytes), the latency of\n"
    "the final reply (from MAIL to the reply after the content), errors and its own CPU\n"
    "time per message; one JSON object with --json; a progress line on stderr when it is\n"
    "a terminal or with --progress.  Exit 0 when every message was accepted, 1 when some\n"
    "failed (or --timeout, default 600 s, ran out), 2 on bad arguments or when the\n"
    "target cannot be reached at start.\n";

enum {
	O_TO = 1,
	O_MESSAGES,
	O_SIZE,
	O_CONCURRENCY,
	O_PER_CONN,
	O_RCPTS,
	O_TLS,
	O_CA,
	O_CERT,
	O_KEY,
	O_NO_PIPELINING,
	O_BDAT,
	O_HELO,
	O_FROM,
	O_RCPT_DOMAIN,
	O_TIMEOUT,
	O_JSON,
	O_PROGRESS,
	O_TLS_MAX,
	O_HELP,
};

static const struct option long_opts[] = {
    {"to", required_argument, NULL, O_TO},
    {"messages", required_argument, NULL, O_MESSAGES},
    {"size", required_argument, NULL, O_SIZE},
    {"concurrency", required_argument, NULL, O_CONCURRENCY},
    {"per-conn", required_argument, NULL, O_PER_CONN},
    {"rcpts", required_argument, NULL, O_RCPTS},
    {"tls", required_argument, NULL, O_TLS},
    {"ca", required_argument, NULL, O_CA},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"no-pipelining", no_argument, NULL, O_NO_PIPELINING},
    {"bdat", no_argument, NULL, O_BDAT},
    {"helo", required_argument, NULL, O_HELO},
    {"from", required_argument, NULL, O_FROM},
    {"rcpt-domain", required_argument, NULL, O_RCPT_DOMAIN},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"json", no_argument, NULL, O_JSON},
    {"progress", no_argument, NULL, O_PROGRESS},
    {"tls-max", required_argument, NULL, O_TLS_MAX},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static const char *const tls_names[] = {"none", "starttls", "smtps"};

static uint64_t count_arg(const char *opt, const char *text, uint64_t min, uint64_t max)
{
	uint64_t v;

	if (bench_parse_count(text, max, &v) < 0 || v < min)
		bench_usage_error("source",
		                  "--%s: \"%s\" is not a number from %" PRIu64 " to %" PRIu64, opt,
		                  text, min, max);
	return v;
}

/* Copies a name or address argument, refusing what would break a command. */
static void text_arg(const char *opt, const char *text, char *out, size_t len)
{
	if (strlen(text) >= len || text[strcspn(text, " <>\r\n\t")] != '\0')
		bench_usage_error(
		    "source", "--%s: \"%s\" is not usable (no spaces, <, >; under %zu characters)",
		    opt, text, len);
	snprintf(out, len, "%s", text);
}

static void parse_args(struct source_opts *o, int argc, char **argv)
{
	bool have_to = false, have_n = false, have_size = false, have_c = false;
	char err[400];
	int c;

	memset(o, 0, sizeof(*o));
	o->per_conn = 100;
	o->rcpts = 1;
	o->pipelining = true;
	o->timeout_s = 600;
	o->progress = isatty(STDERR_FILENO);
	snprintf(o->rcpt_domain, sizeof(o->rcpt_domain), "example.com");
	snprintf(o->helo, sizeof(o->helo), "krelay-bench.localhost");
	snprintf(o->from, sizeof(o->from), "bench@krelay-bench.localhost");
	while ((c = bench_getopt("source", argc, argv, long_opts)) != -1) {
		switch (c) {
		case O_TO:
			if (bench_parse_addr(optarg, &o->to, err, sizeof(err)) < 0)
				bench_usage_error("source", "--to %s", err);
			if (o->to.ss.ss_family == AF_INET6
			        ? ((struct sockaddr_in6 *)&o->to.ss)->sin6_port == 0
			        : ((struct sockaddr_in *)&o->to.ss)->sin_port == 0)
				bench_usage_error("source", "--to %s: port 0", optarg);
			have_to = true;
			break;
		case O_MESSAGES:
			o->messages = count_arg("messages", optarg, 1, 1000000000);
			have_n = true;
			break;
		case O_SIZE:
			if (size_dist_parse(optarg, &o->size, err, sizeof(err)) < 0)
				bench_usage_error("source", "--size: %s", err);
			have_size = true;
			break;
		case O_CONCURRENCY:
			o->concurrency =
			    (unsigned)count_arg("concurrency", optarg, 1, MAX_CONCURRENT);
			have_c = true;
			break;
		case O_PER_CONN:
			o->per_conn = count_arg("per-conn", optarg, 0, UINT32_MAX);
			break;
		case O_RCPTS:
			o->rcpts = (unsigned)count_arg("rcpts", optarg, 1, 1000);
			break;
		case O_TLS:
			if (strcmp(optarg, "none") == 0)
				o->tls = SRC_TLS_NONE;
			else if (strcmp(optarg, "starttls") == 0)
				o->tls = SRC_TLS_STARTTLS;
			else if (strcmp(optarg, "smtps") == 0)
				o->tls = SRC_TLS_SMTPS;
			else
				bench_usage_error("source",
				                  "--tls: \"%s\" is not none, starttls or smtps",
				                  optarg);
			break;
		case O_CA:
			o->ca = optarg;
			break;
		case O_CERT:
			o->cert = optarg;
			break;
		case O_KEY:
			o->key = optarg;
			break;
		case O_NO_PIPELINING:
			o->pipelining = false;
			break;
		case O_BDAT:
			o->bdat = true;
			break;
		case O_HELO:
			text_arg("helo", optarg, o->helo, sizeof(o->helo));
			break;
		case O_FROM:
			text_arg("from", optarg, o->from, sizeof(o->from));
			break;
		case O_RCPT_DOMAIN:
			text_arg("rcpt-domain", optarg, o->rcpt_domain, sizeof(o->rcpt_domain));
			break;
		case O_TIMEOUT:
			o->timeout_s = (unsigned)count_arg("timeout", optarg, 1, 30 * 86400);
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_PROGRESS:
			o->progress = true;
			break;
		case O_TLS_MAX:
			o->tls_max = bench_tls_version("source", optarg);
			break;
		case O_HELP:
			fputs(usage_text, stdout);
			exit(0);
		}
	}
	if (!have_to)
		bench_usage_error("source", "--to HOST:PORT is required");
	if (!have_n)
		bench_usage_error("source", "--messages N is required");
	if (!have_size)
		bench_usage_error("source", "--size SIZE is required");
	if (!have_c)
		bench_usage_error("source", "--concurrency C is required");
	if ((o->cert == NULL) != (o->key == NULL))
		bench_usage_error("source", "--cert and --key go together");
	if (o->tls == SRC_TLS_NONE && (o->ca != NULL || o->cert != NULL))
		bench_usage_error("source", "--ca, --cert and --key need --tls starttls or smtps");
}

void source_outcome(struct source *s, bool ok, uint64_t bytes, double latency_s, const char *error)
{
	if (s->finished)
		return;
	if (ok) {
		s->lat_ms[s->ok++] = (float)bench_ms(latency_s);
		s->bytes += bytes;
	} else {
		s->errors++;
		for (unsigned i = 0; error != NULL && i <= s->nsamples; i++) {
			if (i == s->nsamples) {
				if (i < SOURCE_SAMPLES)
					snprintf(s->samples[s->nsamples++], sizeof(s->samples[0]),
					         "%s", error);
				break;
			}
			if (strcmp(s->samples[i], error) == 0)
				break; /* samples are distinct errors */
		}
	}
	if (s->ok + s->errors == s->o.messages) {
		s->finished = true;
		s->end_mono = bench_mono_now();
		s->end_unix = bench_unix_now();
		s->cpu1 = bench_cpu_seconds();
	}
}

/* Ends the run now: what has no outcome yet failed with why. */
static void finish_early(struct source *s, const char *why)
{
	uint64_t left = s->o.messages - s->ok - s->errors;

	if (s->finished)
		return;
	while (left-- > 1)
		s->errors++;
	source_outcome(s, false, 0, 0, why); /* the last one, which finishes the run */
	for (struct src_conn *c = s->conns; c != NULL; c = src_conn_next(c))
		src_conn_abort(c);
}

static void progress(struct source *s, double now, uint64_t *last_done, double *last_t)
{
	uint64_t done = s->ok + s->errors;
	double dt = now - *last_t;

	fprintf(stderr,
	        "\r%7.1f s  %" PRIu64 "/%" PRIu64 " done, %" PRIu64 " errors, %.0f msg/s   ",
	        now - s->start_mono, done, s->o.messages, s->errors,
	        dt > 0 ? (double)(done - *last_done) / dt : 0.0);
	*last_done = done;
	*last_t = now;
}

static void run(struct source *s)
{
	double deadline, next_tick, last_t, quit_until = 0;
	uint64_t last_done = 0;
	char why[300];

	s->start_mono = last_t = bench_mono_now();
	s->start_unix = bench_unix_now();
	s->cpu0 = bench_cpu_seconds();
	deadline = s->start_mono + s->o.timeout_s;
	next_tick = s->start_mono + 1;
	for (unsigned i = 0; i < s->o.concurrency && i < s->o.messages; i++)
		src_conn_start(s);
	while (!s->fatal) {
		int ret = ring_run_once(&s->ring, 100);
		double now = bench_mono_now();

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
			snprintf(why, sizeof(why), "io_uring: %s", strerror(-ret));
			finish_early(s, why);
			break;
		}
		if (!s->finished && now >= deadline) {
			snprintf(why, sizeof(why), "%s: no outcome within --timeout %u s",
			         s->o.to.text, s->o.timeout_s);
			finish_early(s, why);
		}
		if (!s->finished && bench_signalled()) {
			snprintf(why, sizeof(why), "interrupted by signal %d",
			         (int)bench_signalled());
			finish_early(s, why);
		}
		if (s->o.progress && now >= next_tick) {
			progress(s, now, &last_done, &last_t);
			next_tick = now + 1;
		}
		if (!s->finished)
			continue;
		if (s->nconns == 0)
			break;
		if (quit_until == 0) {
			quit_until = now + QUIT_GRACE_S;
		} else if (now >= quit_until) {
			for (struct src_conn *c = s->conns; c != NULL; c = src_conn_next(c))
				src_conn_abort(c);
			if (now >= quit_until + QUIT_GRACE_S)
				break; /* closes that never completed: leave them */
		}
	}
	if (s->o.progress) {
		progress(s, bench_mono_now(), &last_done, &last_t);
		fputc('\n', stderr);
	}
}

static void report(struct source *s)
{
	const struct source_opts *o = &s->o;
	double secs = s->end_mono - s->start_mono, cpu = s->cpu1 - s->cpu0;
	double rate = secs > 0 ? (double)s->ok / secs : 0;
	double mbs = secs > 0 ? (double)s->bytes / 1e6 / secs : 0;
	double us = s->ok > 0 ? cpu * 1e6 / (double)s->ok : 0;
	struct lat_stats l;

	lat_compute(s->lat_ms, s->ok, &l);
	if (o->json) {
		printf("{\"messages_ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"error_samples\":[",
		       s->ok, s->errors);
		for (unsigned i = 0; i < s->nsamples; i++) {
			if (i > 0)
				putchar(',');
			bench_json_str(stdout, s->samples[i]);
		}
		printf(
		    "],\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"start_unix\":%.6f,\"end_unix\":%.6f"
		    ",\"msgs_per_s\":%.3f,\"mb_per_s\":%.3f,\"latency_ms\":{\"p50\":%.3f,"
		    "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},\"cpu_s\":%.6f,\"cpu_us_per_msg\":%.3f"
		    ",\"tls\":\"%s\",\"concurrency\":%u,\"size\":",
		    s->bytes, secs, s->start_unix, s->end_unix, rate, mbs, l.p50, l.p90, l.p99,
		    l.max, cpu, us, tls_names[o->tls], o->concurrency);
		bench_json_str(stdout, o->size.text);
		printf(",\"messages\":%" PRIu64 ",\"per_conn\":%" PRIu64 ",\"rcpts\":%u"
		       ",\"pipelining\":%s,\"bdat\":%s,\"connections\":%" PRIu64 ",\"target\":",
		       o->messages, o->per_conn, o->rcpts, o->pipelining ? "true" : "false",
		       o->bdat ? "true" : "false", s->connections);
		bench_json_str(stdout, o->to.text);
		printf("}\n");
		return;
	}
	printf("krelay-bench source: %" PRIu64 " x %s to %s (%s, %u connections, %" PRIu64
	       " per connection, %u rcpt)\n",
	       o->messages, o->size.text, o->to.text, tls_names[o->tls], o->concurrency,
	       o->per_conn, o->rcpts);
	printf("  accepted %" PRIu64 ", errors %" PRIu64 " in %.3f s = %.1f msg/s, %.2f MB/s\n",
	       s->ok, s->errors, secs, rate, mbs);
	printf("  final reply latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", l.p50,
	       l.p90, l.p99, l.max);
	printf("  source CPU %.3f s = %.1f us per message; %" PRIu64 " connections\n", cpu, us,
	       s->connections);
	for (unsigned i = 0; i < s->nsamples; i++)
		printf("  error: %s\n", s->samples[i]);
}

int bench_source_main(int argc, char **argv)
{
	static struct source s;
	char err[600];
	int ret;

	parse_args(&s.o, argc, argv);
	bench_raise_nofile();
	probe_run(&s.caps);
	if (s.o.tls != SRC_TLS_NONE) {
		s.ctx = bench_tls_client(s.o.ca, s.o.cert, s.o.key, err, sizeof(err));
		if (s.ctx == NULL)
			bench_usage_error("source", "%s", err);
		if (s.o.tls_max != 0)
			SSL_CTX_set_max_proto_version(s.ctx, s.o.tls_max);
	}
	snprintf(s.run_id, sizeof(s.run_id), "%lx.%d", (unsigned long)bench_unix_now(),
	         (int)getpid());
	s.mp.from = s.o.from;
	s.mp.rcpt_domain = s.o.rcpt_domain;
	s.mp.run_id = s.run_id;
	s.lat_ms = malloc(s.o.messages * sizeof(*s.lat_ms));
	if (s.lat_ms == NULL || body_pool_init(&s.pool, s.o.size.max) < 0) {
		fprintf(stderr, "%s source: out of memory for %s messages\n", BENCH_PROG,
		        s.o.size.text);
		return BENCH_EXIT_FAILED;
	}
	ret = ring_init(&s.ring, RING_ENTRIES);
	if (ret == 0)
		ret = ring_enable(&s.ring);
	if (ret < 0) {
		fprintf(stderr, "%s source: io_uring: %s\n", BENCH_PROG, strerror(-ret));
		return BENCH_EXIT_FAILED;
	}
	bench_catch_signals();

	run(&s);
	if (s.fatal) {
		fprintf(stderr, "%s source: %s\n", BENCH_PROG, s.fatal_msg);
		return BENCH_EXIT_USAGE;
	}
	report(&s);
	fflush(stdout);
	ring_exit(&s.ring);
	body_pool_free(&s.pool);
	free(s.lat_ms);
	SSL_CTX_free(s.ctx);
	return s.errors == 0 ? BENCH_EXIT_OK : BENCH_EXIT_FAILED;
}
