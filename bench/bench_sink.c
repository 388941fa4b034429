/* bench_sink: options, listeners, worker threads and the report of
 * `krelay-bench sink` (the sessions are in bench_sink_session.c). */
#include "bench_sink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_tls.h"

#define RING_ENTRIES 1024
#define STOP_GRACE_S 2.0 /* for replies still going out when stopping */
#define MAX_THREADS  64

static const char usage_text[] =
    "usage: krelay-bench sink --listen HOST:PORT [--listen ...] [--smtps HOST:PORT ...]\n"
    "        [--cert FILE --key FILE] [--ca FILE --verify-client] [--verify | --discard]\n"
    "        [--expect N] [--timeout SECONDS] [--no-chunking] [--threads N] [--json]\n"
    "        [--ready-file FILE] [--hostname NAME] [--tls-max 1.2|1.3]\n"
    "An SMTP server that counts messages and bytes.  STARTTLS is offered when --cert is\n"
    "given; --smtps listeners speak implicit TLS.  --verify checks each body against its\n"
    "X-Bench checksum (a mismatch is counted, logged and answered 554); --discard (the\n"
    "default) only counts.  --verify-client asks for a client certificate and answers MAIL\n"
    "with 530 unless one verified against --ca.  Stops after --expect N messages were\n"
    "answered, on SIGTERM/SIGINT, or after --timeout (default 600) seconds, and prints\n"
    "what it received (one JSON object with --json).  Exit 0; 1 when the timeout came\n"
    "before --expect; 2 on bad arguments or when a listener cannot be opened.\n";

enum {
	O_LISTEN = 1,
	O_SMTPS,
	O_CERT,
	O_KEY,
	O_CA,
	O_VERIFY_CLIENT,
	O_VERIFY,
	O_DISCARD,
	O_EXPECT,
	O_TIMEOUT,
	O_NO_CHUNKING,
	O_JSON,
	O_READY,
	O_THREADS,
	O_HOSTNAME,
	O_TLS_MAX,
	O_HELP,
};

static const struct option long_opts[] = {
    {"listen", required_argument, NULL, O_LISTEN},
    {"smtps", required_argument, NULL, O_SMTPS},
    {"cert", required_argument, NULL, O_CERT},
    {"key", required_argument, NULL, O_KEY},
    {"ca", required_argument, NULL, O_CA},
    {"verify-client", no_argument, NULL, O_VERIFY_CLIENT},
    {"verify", no_argument, NULL, O_VERIFY},
    {"discard", no_argument, NULL, O_DISCARD},
    {"expect", required_argument, NULL, O_EXPECT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"no-chunking", no_argument, NULL, O_NO_CHUNKING},
    {"json", no_argument, NULL, O_JSON},
    {"ready-file", required_argument, NULL, O_READY},
    {"threads", required_argument, NULL, O_THREADS},
    {"hostname", required_argument, NULL, O_HOSTNAME},
    {"tls-max", required_argument, NULL, O_TLS_MAX},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static void add_listener(struct sink_opts *o, const char *text, bool smtps)
{
	char err[400];

	if (o->nlisten == SINK_MAX_LISTEN)
		bench_usage_error("sink", "at most %d listeners", SINK_MAX_LISTEN);
	if (bench_parse_addr(text, &o->listen[o->nlisten], err, sizeof(err)) < 0)
		bench_usage_error("sink", "--%s %s", smtps ? "smtps" : "listen", err);
	o->listen_smtps[o->nlisten++] = smtps;
}

static void parse_args(struct sink_opts *o, int argc, char **argv)
{
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->chunking = true;
	o->timeout_s = 600;
	o->threads = 1;
	snprintf(o->hostname, sizeof(o->hostname), "krelay-bench.sink");
	while ((c = bench_getopt("sink", argc, argv, long_opts)) != -1) {
		switch (c) {
		case O_LISTEN:
		case O_SMTPS:
			add_listener(o, optarg, c == O_SMTPS);
			break;
		case O_CERT:
			o->cert = optarg;
			break;
		case O_KEY:
			o->key = optarg;
			break;
		case O_CA:
			o->ca = optarg;
			break;
		case O_VERIFY_CLIENT:
			o->verify_client = true;
			break;
		case O_VERIFY:
			o->verify = true;
			break;
		case O_DISCARD:
			o->verify = false;
			break;
		case O_EXPECT:
			if (bench_parse_count(optarg, UINT64_MAX / 2, &o->expect) < 0 ||
			    o->expect == 0)
				bench_usage_error(
				    "sink", "--expect: \"%s\" is not a positive count", optarg);
			break;
		case O_TIMEOUT:
			if (bench_parse_count(optarg, 30 * 86400, &v) < 0 || v == 0)
				bench_usage_error(
				    "sink", "--timeout: \"%s\" is not a positive number of seconds",
				    optarg);
			o->timeout_s = (unsigned)v;
			break;
		case O_NO_CHUNKING:
			o->chunking = false;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_READY:
			o->ready_file = optarg;
			break;
		case O_THREADS:
			if (bench_parse_count(optarg, MAX_THREADS, &v) < 0 || v == 0)
				bench_usage_error("sink", "--threads: \"%s\" is not 1..%d", optarg,
				                  MAX_THREADS);
			o->threads = (unsigned)v;
			break;
		case O_HOSTNAME:
			snprintf(o->hostname, sizeof(o->hostname), "%s", optarg);
			break;
		case O_TLS_MAX:
			o->tls_max = bench_tls_version("sink", optarg);
			break;
		case O_HELP:
			fputs(usage_text, stdout);
			exit(0);
		}
	}
	if (o->nlisten == 0)
		bench_usage_error("sink", "--listen HOST:PORT (or --smtps HOST:PORT) is required");
	if ((o->cert == NULL) != (o->key == NULL))
		bench_usage_error("sink", "--cert and --key go together");
	for (unsigned i = 0; i < o->nlisten; i++)
		if (o->listen_smtps[i] && o->cert == NULL)
			bench_usage_error("sink", "--smtps %s needs --cert and --key",
			                  o->listen[i].text);
	if (o->verify_client && (o->ca == NULL || o->cert == NULL))
		bench_usage_error("sink", "--verify-client needs --ca and --cert/--key");
	if (o->ca != NULL && !o->verify_client)
		bench_usage_error("sink", "--ca is only for --verify-client");
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
	}
}

/* Opens listener i of worker w; the first worker's port (maybe chosen by the
 * kernel for port 0) is then used by the others (SO_REUSEPORT). */
static int open_listener(struct sink *s, struct sink_worker *w, unsigned i)
{
	struct bench_addr *a = &s->o.listen[i];
	int one = 1, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (s->nw > 1)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 4096) < 0)
		goto fail;
	if (w->index == 0) {
		a->len = sizeof(a->ss);
		getsockname(fd, (struct sockaddr *)&a->ss, &a->len);
	}
	return fd;
fail:
	fprintf(stderr, "%s sink: cannot listen on %s: %s\n", BENCH_PROG, a->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static void accept_cb(struct ring_op *op, int res, unsigned flags);

static void retry_cb(struct ring_op *op, int res, unsigned flags)
{
	struct sink_listener *l = op->owner;

	if (!l->w->stopping && !ring_op_busy(&l->op))
		ring_accept_multishot(&l->w->ring, &l->op, l->fd);
}

static void accept_cb(struct ring_op *op, int res, unsigned flags)
{
	struct sink_listener *l = op->owner;
	struct sink_worker *w = l->w;

	if (res >= 0) {
		if (w->stopping)
			close(res);
		else
			sink_session_start(w, res, l->smtps);
	}
	if (!(flags & IORING_CQE_F_MORE) && !w->stopping) {
		if (res < 0) { /* EMFILE and the like: wait a little */
			l->retry_ts.tv_sec = 0;
			l->retry_ts.tv_nsec = 100 * 1000 * 1000;
			ring_timeout(&w->ring, &l->op_retry, &l->retry_ts);
		} else {
			ring_accept_multishot(&w->ring, &l->op, l->fd);
		}
	}
}

static int worker_init(struct sink *s, struct sink_worker *w, unsigned index)
{
	int ret;

	w->s = s;
	w->index = index;
	ret = ring_init(&w->ring, RING_ENTRIES);
	if (ret < 0) {
		fprintf(stderr, "%s sink: io_uring: %s\n", BENCH_PROG, strerror(-ret));
		return -1;
	}
	for (unsigned i = 0; i < s->o.nlisten; i++) {
		struct sink_listener *l = &w->lst[i];

		l->w = w;
		l->smtps = s->o.listen_smtps[i];
		l->fd = open_listener(s, w, i);
		if (l->fd < 0)
			return -1;
		ring_op_init(&l->op, RING_ACCEPT, accept_cb, l);
		ring_op_init(&l->op_retry, RING_TIMEOUT, retry_cb, l);
		w->nlst++;
	}
	return 0;
}

static bool listeners_idle(struct sink_worker *w)
{
	for (unsigned i = 0; i < w->nlst; i++)
		if (ring_op_busy(&w->lst[i].op) || ring_op_busy(&w->lst[i].op_retry))
			return false;
	return true;
}

static void begin_stop(struct sink_worker *w)
{
	w->stopping = true;
	for (unsigned i = 0; i < w->nlst; i++)
		shutdown(w->lst[i].fd, SHUT_RDWR); /* ends the multishot accept */
}

static void *worker_main(void *arg)
{
	struct sink_worker *w = arg;
	struct sink *s = w->s;
	double stop_at = 0;
	int ret = ring_enable(&w->ring);

	if (ret < 0) {
		fprintf(stderr, "%s sink: io_uring enable: %s\n", BENCH_PROG, strerror(-ret));
		atomic_store(&s->stop, true);
		return NULL;
	}
	for (unsigned i = 0; i < w->nlst; i++)
		ring_accept_multishot(&w->ring, &w->lst[i].op, w->lst[i].fd);
	for (;;) {
		ret = ring_run_once(&w->ring, 100);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
			fprintf(stderr, "%s sink: io_uring: %s\n", BENCH_PROG, strerror(-ret));
			atomic_store(&s->stop, true);
		}
		if (bench_signalled())
			atomic_store(&s->stop, true);
		if (!atomic_load(&s->stop) && bench_mono_now() >= s->deadline) {
			atomic_store(&s->timed_out, true);
			atomic_store(&s->stop, true);
		}
		if (!atomic_load(&s->stop))
			continue;
		if (!w->stopping) {
			begin_stop(w);
			stop_at = bench_mono_now() + STOP_GRACE_S;
		}
		/* Idle sessions close now, the others once their replies are out. */
		for (struct sink_conn *c = w->conns, *next; c != NULL; c = next) {
			next = sink_session_next(c);
			sink_session_stop(c, bench_mono_now() >= stop_at);
		}
		if (w->nconns == 0 && listeners_idle(w))
			break;
		if (bench_mono_now() >= stop_at + STOP_GRACE_S)
			break; /* something would not finish: leave it */
	}
	return NULL;
}

static void worker_exit(struct sink_worker *w)
{
	for (unsigned i = 0; i < w->nlst; i++)
		close(w->lst[i].fd);
	ring_exit(&w->ring);
}

static int write_ready_file(const struct sink *s)
{
	char tmp[4200], text[128];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", s->o.ready_file);
	f = fopen(tmp, "w");
	if (f == NULL)
		goto fail;
	for (unsigned i = 0; i < s->o.nlisten; i++) {
		addr_text(&s->o.listen[i].ss, text, sizeof(text));
		fprintf(f, "%s %s\n", s->o.listen_smtps[i] ? "smtps" : "listen", text);
	}
	if (fclose(f) != 0 || rename(tmp, s->o.ready_file) < 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "%s sink: --ready-file %s: %s\n", BENCH_PROG, s->o.ready_file,
	        strerror(errno));
	return -1;
}

static void sum_stats(const struct sink *s, struct sink_stats *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < s->nw; i++) {
		const struct sink_stats *st = &s->w[i].st;

		t->messages += st->messages;
		t->bytes += st->bytes;
		t->checksum_errors += st->checksum_errors;
		t->connections += st->connections;
		t->tls_connections += st->tls_connections;
		t->ktls_rx += st->ktls_rx;
		t->ktls_tx += st->ktls_tx;
		t->connection_errors += st->connection_errors;
		if (st->first_unix > 0 && (t->first_unix == 0 || st->first_unix < t->first_unix))
			t->first_unix = st->first_unix;
		if (st->last_unix > t->last_unix)
			t->last_unix = st->last_unix;
	}
}

static void report(const struct sink *s, const struct sink_stats *t, double cpu)
{
	double secs = t->last_unix > t->first_unix ? t->last_unix - t->first_unix : 0;
	double rate = secs > 0 ? (double)t->messages / secs : 0;
	double mbs = secs > 0 ? (double)t->bytes / 1e6 / secs : 0;
	double us = t->messages > 0 ? cpu * 1e6 / (double)t->messages : 0;
	bool timed_out = atomic_load(&s->timed_out);
	const char *ktls_why = "";

	probe_ktls_possible(&s->caps, &ktls_why);

	if (s->o.json) {
		printf("{\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64
		       ",\"checksum_errors\":%" PRIu64
		       ",\"first_unix\":%.6f,\"last_unix\":%.6f,\"connections\":%" PRIu64
		       ",\"tls_connections\":%" PRIu64 ",\"ktls_rx_connections\":%" PRIu64
		       ",\"ktls_tx_connections\":%" PRIu64 ",\"cpu_s\":%.6f,\"timed_out\":%s"
		       ",\"seconds\":%.6f,\"msgs_per_s\":%.3f,\"mb_per_s\":%.3f"
		       ",\"cpu_us_per_msg\":%.3f,\"connection_errors\":%" PRIu64
		       ",\"verify\":%s,\"threads\":%u,\"ktls_why\":",
		       t->messages, t->bytes, t->checksum_errors, t->first_unix, t->last_unix,
		       t->connections, t->tls_connections, t->ktls_rx, t->ktls_tx, cpu,
		       timed_out ? "true" : "false", secs, rate, mbs, us, t->connection_errors,
		       s->o.verify ? "true" : "false", s->nw);
		bench_json_str(stdout, ktls_why);
		printf("}\n");
		return;
	}
	printf("krelay-bench sink: %" PRIu64 " messages, %.2f MB, %" PRIu64
	       " checksum errors%s%s\n",
	       t->messages, (double)t->bytes / 1e6, t->checksum_errors,
	       s->o.verify ? "" : " (not verified: --discard)", timed_out ? "; timed out" : "");
	printf("  first MAIL to last reply: %.3f s = %.1f msg/s, %.2f MB/s\n", secs, rate, mbs);
	printf("  connections %" PRIu64 " (TLS %" PRIu64 ", kTLS rx %" PRIu64 " tx %" PRIu64
	       ", errors %" PRIu64 ")%s%s\n",
	       t->connections, t->tls_connections, t->ktls_rx, t->ktls_tx, t->connection_errors,
	       ktls_why[0] ? "; no kTLS: " : "", ktls_why);
	printf("  sink CPU %.3f s = %.1f us per message\n", cpu, us);
}

int bench_sink_main(int argc, char **argv)
{
	static struct sink s; /* large; one per process */
	struct sink_stats total;
	char err[600];
	double cpu0;
	int status = BENCH_EXIT_OK;

	parse_args(&s.o, argc, argv);
	bench_raise_nofile();
	probe_run(&s.caps);
	if (s.o.cert != NULL) {
		const char *why;
		bool ktls = probe_ktls_possible(&s.caps, &why);

		s.ctx = bench_tls_server(s.o.cert, s.o.key, s.o.verify_client ? s.o.ca : NULL,
		                         !ktls, err, sizeof(err));
		if (s.ctx == NULL)
			bench_usage_error("sink", "%s", err);
		if (s.o.tls_max != 0)
			SSL_CTX_set_max_proto_version(s.ctx, s.o.tls_max);
	}
	bench_catch_signals();

	s.nw = s.o.threads;
	s.w = calloc(s.nw, sizeof(*s.w));
	if (s.w == NULL)
		return BENCH_EXIT_FAILED;
	for (unsigned i = 0; i < s.nw; i++) {
		if (worker_init(&s, &s.w[i], i) < 0)
			exit(BENCH_EXIT_USAGE);
	}
	if (s.o.ready_file != NULL && write_ready_file(&s) < 0)
		exit(BENCH_EXIT_USAGE);
	s.deadline = bench_mono_now() + s.o.timeout_s;
	cpu0 = bench_cpu_seconds();
	for (unsigned i = 0; i < s.nw; i++) {
		int ret = pthread_create(&s.w[i].thread, NULL, worker_main, &s.w[i]);
		if (ret != 0) {
			fprintf(stderr, "%s sink: thread: %s\n", BENCH_PROG, strerror(ret));
			exit(BENCH_EXIT_FAILED);
		}
	}
	for (unsigned i = 0; i < s.nw; i++)
		pthread_join(s.w[i].thread, NULL);
	sum_stats(&s, &total);
	report(&s, &total, bench_cpu_seconds() - cpu0);
	fflush(stdout);
	if (atomic_load(&s.timed_out) && s.o.expect > 0 && atomic_load(&s.answered) < s.o.expect)
		status = BENCH_EXIT_FAILED;
	for (unsigned i = 0; i < s.nw; i++)
		worker_exit(&s.w[i]);
	free(s.w);
	SSL_CTX_free(s.ctx);
	return status;
}
