/* bench_sink: krelay-bench's SMTP server.  Counts messages and bytes, can
 * check every body against its X-Bench header, offers PIPELINING, CHUNKING
 * and STARTTLS (and implicit TLS listeners), and answers pipelined commands
 * in one write.  Each worker thread has its own ring, its own SO_REUSEPORT
 * listeners and its own counters; nothing is shared on the hot path but one
 * atomic count of answered messages (for --expect). */
#ifndef KRELAY_BENCH_SINK_H
#define KRELAY_BENCH_SINK_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench.h"
#include "probe.h"
#include "ring.h"

#define SINK_MAX_LISTEN 16

struct sink_opts {
	struct bench_addr listen[SINK_MAX_LISTEN];
	bool listen_smtps[SINK_MAX_LISTEN];
	unsigned nlisten;
	const char *cert, *key, *ca;
	int tls_max; /* highest TLS version offered; 0: OpenSSL's */
	bool verify_client, verify, chunking, json;
	uint64_t expect; /* 0: none */
	unsigned timeout_s;
	unsigned threads;
	const char *ready_file;
	char hostname[128];
};

struct sink_stats {
	uint64_t messages, bytes, checksum_errors;
	uint64_t connections, tls_connections, ktls_rx, ktls_tx, connection_errors;
	double first_unix, last_unix; /* first MAIL, last message answered; 0 if none */
};

struct sink;
struct sink_conn;

struct sink_listener {
	struct sink_worker *w;
	int fd;
	bool smtps;
	struct ring_op op, op_retry;
	struct __kernel_timespec retry_ts;
};

struct sink_worker {
	struct sink *s;
	unsigned index;
	struct ring ring;
	struct sink_listener lst[SINK_MAX_LISTEN];
	unsigned nlst;
	struct sink_conn *conns; /* open sessions, a list */
	unsigned nconns;
	uint64_t next_id;
	struct sink_stats st;
	pthread_t thread;
	bool stopping;
};

struct sink {
	struct sink_opts o;
	struct caps caps;
	SSL_CTX *ctx;                  /* NULL without --cert */
	atomic_uint_fast64_t answered; /* complete messages answered, all workers */
	atomic_bool stop;
	atomic_bool timed_out;
	double deadline; /* monotonic */
	struct sink_worker *w;
	unsigned nw;
};

int bench_sink_main(int argc, char **argv);

/* bench_sink_session.c: one SMTP session on an accepted socket. */
void sink_session_start(struct sink_worker *w, int fd, bool smtps);
/* Closes the session once its replies are out (now when force). */
void sink_session_stop(struct sink_conn *c, bool force);
struct sink_conn *sink_session_next(struct sink_conn *c);

#endif
