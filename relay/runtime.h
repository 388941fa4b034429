/* runtime: what the workers share.  A runtime is one loaded configuration
 * with what is built from it (TLS contexts, routes), reference-counted so
 * that SIGHUP swaps in a new one without dropping anybody; struct server
 * holds the current one, the counters and the stop flag. */
#ifndef KRELAY_RUNTIME_H
#define KRELAY_RUNTIME_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "probe.h"
#include "route.h"
#include "tls_policy.h"

/* A configuration and the TLS context built from it; sessions hold a
 * reference, so SIGHUP can swap in a new one without dropping anybody. */
struct runtime {
	atomic_int refs;
	struct config cfg;
	SSL_CTX *server_ctx; /* NULL: no STARTTLS, no smtps */
	SSL_CTX *client_ctx; /* relaying */
	/* relaying's routes, loaded with the configuration (read-only, shared
	 * by the workers' queues): SmartHost, TransportTable, TLSPolicyTable */
	struct route_hop smarthost;
	bool has_smarthost;
	struct route_table *transports;
	struct tls_policy_table *tls_policies;
	/* TLSPolicy dane or dane-only (the option or a TLSPolicyTable entry):
	 * the DS and DNSKEY lines of DNSSECTrustAnchorFile, read with the
	 * configuration (so the workers need not be able to read the file) */
	bool dane;
	char *trust_anchor;
	/* MTASTS=yes: the client context that verifies MX hosts against
	 * MTASTSCAFile (public CAs) */
	SSL_CTX *sts_ctx;
	/* ShapingTable: limits per egress source x site, sources and pools */
	struct shaping_table *shaping;
};

struct client_count;
struct throttle;
struct metrics;
struct tlsrpt_log;

struct server {
	struct caps caps;
	pthread_mutex_t lock; /* guards current */
	struct runtime *current;
	struct runtime *started; /* what it started with: Listen, Workers... stay */
	atomic_uint generation;  /* bumped by each reload: queues follow it */
	atomic_uint spool_full;  /* bumped when a spool finds the disk full */
	atomic_bool stopping;
	atomic_uint connections;      /* open SMTP sessions, all workers */
	struct client_count *clients; /* open SMTP sessions per client address */
	struct tlsrpt_log *tlsrpt;    /* TLSRPT=yes: where TLS results go */
	struct throttle *throttle;    /* shaping's counters, kept across reloads */
	struct metrics *metrics;      /* the counters (metrics.h), one block per worker */
	atomic_ullong session_seq;
	unsigned workers;
};

struct runtime *runtime_get(struct server *srv);
/* One more reference to rt (one the caller holds already). */
struct runtime *runtime_hold(struct runtime *rt);
void runtime_put(struct runtime *rt);

#endif
