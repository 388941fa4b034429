/* bench_source: krelay-bench's load generator.  One ring, C connections,
 * each an SMTP client state machine that carries up to M messages, then
 * QUITs and is replaced while messages are left.  Messages are claimed from
 * one counter, so N messages are sent exactly once each. */
#ifndef KRELAY_BENCH_SOURCE_H
#define KRELAY_BENCH_SOURCE_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench.h"
#include "bench_msg.h"
#include "probe.h"
#include "ring.h"

enum source_tls {
	SRC_TLS_NONE,
	SRC_TLS_STARTTLS,
	SRC_TLS_SMTPS,
};

struct source_opts {
	struct bench_addr to;
	uint64_t messages;
	struct size_dist size;
	unsigned concurrency;
	uint64_t per_conn; /* 0: unlimited */
	unsigned rcpts;
	enum source_tls tls;
	const char *ca, *cert, *key;
	int tls_max; /* highest TLS version offered; 0: OpenSSL's */
	bool pipelining, bdat, json, progress;
	char helo[256], from[256], rcpt_domain[256];
	unsigned timeout_s;
};

#define SOURCE_SAMPLES 10

struct src_conn;

struct source {
	struct source_opts o;
	struct caps caps;
	SSL_CTX *ctx;
	struct ring ring;
	struct body_pool pool;
	struct msg_params mp;
	char run_id[40];

	uint64_t next_seq; /* next message to claim */
	uint64_t ok, errors, bytes, connections;
	float *lat_ms; /* one per message that succeeded */
	char samples[SOURCE_SAMPLES][400];
	unsigned nsamples;

	struct src_conn *conns;
	unsigned nconns;
	bool ever_connected;
	bool finished; /* every message has its outcome: no more accounting */
	bool fatal;    /* unreachable at start: exit 2 */
	char fatal_msg[400];
	double start_mono, start_unix, end_mono, end_unix, cpu0, cpu1;
};

int bench_source_main(int argc, char **argv);

/* bench_source_conn.c */
void src_conn_start(struct source *s);
/* Closes at once (the run is over or timed out). */
void src_conn_abort(struct src_conn *c);
struct src_conn *src_conn_next(struct src_conn *c);
/* A message's outcome: counts it, keeps a sample of the error. */
void source_outcome(struct source *s, bool ok, uint64_t bytes, double latency_s, const char *error);

#endif
