/* check: see check.h. */
#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns.h"
#include "route.h"
#include "shaping.h"
#include "sm_queue.h"
#include "tls_policy.h"

#include "tls_ctx.h"

static const char *yn(bool b)
{
	return b ? "yes" : "no";
}

void check_print_caps(const struct caps *c, FILE *out)
{
	const char *why;
	bool ktls = probe_ktls_possible(c, &why);

	fprintf(out, "kernel     %s\n", c->kernel_release);
	fprintf(out, "io_uring   %s%s%s\n", yn(c->uring), c->uring ? "" : ": ", c->uring_error);
	fprintf(out, "  ops      send_zc=%s splice=%s openat=%s renameat=%s\n", yn(c->op_send_zc),
	        yn(c->op_splice), yn(c->op_openat), yn(c->op_renameat));
	fprintf(out, "  multishot accept=%s recv=%s\n", yn(c->accept_multishot),
	        yn(c->recv_multishot));
	fprintf(out, "openssl    %s (kTLS %s)\n", c->openssl_version,
	        c->openssl_ktls ? "built in" : "not built in");
	fprintf(out, "tls ulp    %s%s%s\n", yn(c->tls_ulp), c->tls_ulp ? "" : ": ",
	        c->tls_ulp_error);
	fprintf(out, "ktls       %s%s%s\n", ktls ? "available" : "unavailable", ktls ? "" : ": ",
	        why);
}

static int check_queue_dir(const struct config *c, FILE *out)
{
	char where[512];
	struct stat st;

	config_where(c, OPT_QUEUE_DIRECTORY, where, sizeof(where));
	if (stat(c->queue_directory, &st) < 0) {
		if (errno == ENOENT) {
			fprintf(out, "ok     QueueDirectory %s will be created\n",
			        c->queue_directory);
			return 0;
		}
		fprintf(out, "error  %s: QueueDirectory %s: %s\n", where, c->queue_directory,
		        strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode) || access(c->queue_directory, W_OK | X_OK) < 0) {
		fprintf(out, "error  %s: QueueDirectory %s: not a writable directory\n", where,
		        c->queue_directory);
		return 1;
	}
	fprintf(out, "ok     QueueDirectory %s\n", c->queue_directory);
	return 0;
}

static int check_routing(const struct config *c, FILE *out)
{
	char err[512], where[512], text[300];
	struct route_hop hop;
	int errors = 0;

	if (c->smart_host != NULL) {
		config_where(c, OPT_SMART_HOST, where, sizeof(where));
		if (route_parse_hop(c->smart_host, &hop, err, sizeof(err)) < 0) {
			fprintf(out, "error  %s: SmartHost: %s\n", where, err);
			errors++;
		} else {
			route_hop_text(&hop, text, sizeof(text));
			fprintf(out, "ok     SmartHost %s (%s)\n", text,
			        hop.mx ? "MX lookup" : "no MX lookup");
		}
	}
	if (c->transport_table != NULL) {
		struct route_table *t = route_table_load(c->transport_table, err, sizeof(err));
		if (t == NULL) {
			fprintf(out, "error  %s\n", err);
			errors++;
		} else {
			fprintf(out, "ok     TransportTable %s\n", c->transport_table);
			route_table_free(t);
		}
	}
	bool dane = TLS_POLICY_IS_DANE(c->tls_policy);
	if (c->tls_policy_table != NULL) {
		struct tls_policy_table *t = tls_policy_load(c->tls_policy_table, err, sizeof(err));
		if (t == NULL) {
			fprintf(out, "error  %s\n", err);
			errors++;
		} else {
			fprintf(out, "ok     TLSPolicyTable %s\n", c->tls_policy_table);
			dane = dane || tls_policy_any_dane(t);
			tls_policy_free(t);
		}
	}
	if (c->shaping_table != NULL) {
		struct shaping_table *t = shaping_load(c->shaping_table, err, sizeof(err));
		if (t == NULL) {
			fprintf(out, "error  %s\n", err);
			errors++;
		} else {
			fprintf(out, "ok     ShapingTable %s: %zu egress sources\n",
			        c->shaping_table, shaping_nsources(t));
			shaping_free(t);
		}
	}
	if (c->mta_sts) {
		SSL_CTX *ctx = tls_client_ctx_ca(c, c->mta_sts_ca_file, NULL, err, sizeof(err));
		if (ctx == NULL) {
			fprintf(out, "error  MTASTSCAFile %s: %s\n", c->mta_sts_ca_file, err);
			errors++;
		} else {
			fprintf(out,
			        "ok     MTASTS: policies fetched over HTTPS and kept in %s/sts; "
			        "MX hosts and policy hosts verified against %s\n",
			        c->queue_directory, c->mta_sts_ca_file);
			SSL_CTX_free(ctx);
		}
	}
	if (dane) {
		char *anchor;
		int n = dns_anchor_read(c->trust_anchor_file, &anchor, err, sizeof(err));
		if (n < 0) {
			fprintf(out, "error  %s (TLSPolicy dane needs a DNSSEC trust anchor)\n",
			        err);
			errors++;
		} else {
			fprintf(out, "ok     DNSSECTrustAnchorFile %s: %d record%s\n",
			        c->trust_anchor_file, n, n == 1 ? "" : "s");
			free(anchor);
		}
	}
	fprintf(out, "ok     relaying with TLSPolicy=%s%s\n", config_tls_policy_name(c->tls_policy),
	        c->queue_only    ? ", DeliveryMode=queueonly"
	        : c->interactive ? ", DeliveryMode=interactive"
	                         : "");
	return errors;
}

/* Each SendmailQueue: a directory this process can read, and what the
 * runner would make of the files in it now. */
static int check_sendmail_queues(const struct config *c, FILE *out)
{
	int errors = 0;

	for (size_t i = 0; i < c->sendmail_queues_count; i++) {
		struct smq_look lk;
		char where[512], err[512];
		config_where(c, OPT_SENDMAIL_QUEUE, where, sizeof(where));
		if (smq_look(c->sendmail_queues[i], c->hostname ? c->hostname : "localhost", false,
		             &lk, err, sizeof(err)) < 0) {
			fprintf(out, "error  %s: %s\n", where, err);
			errors++;
			continue;
		}
		fprintf(out,
		        "ok     SendmailQueue %s: %u queue file%s (%u to be taken, %u locked, %u "
		        "that cannot be taken: krelay queue list names them)\n",
		        c->sendmail_queues[i], lk.files, lk.files == 1 ? "" : "s", lk.ok, lk.locked,
		        lk.bad);
	}
	return errors;
}

/* The port and address of a listener: whether two would take the same
 * socket (the same port, and the same address or a wildcard). */
static bool same_socket(const struct config_listen *a, const struct config_listen *b)
{
	if (a->addr.ss_family != b->addr.ss_family)
		return false;
	if (a->addr.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
		return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
		                                      x->sin_addr.s_addr == htonl(INADDR_ANY) ||
		                                      y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
	return x->sin6_port == y->sin6_port &&
	       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
	        IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

/* MetricsListen: its syntax is config.c's; here, that it is no SMTP
 * listener's address. */
static int check_metrics(const struct config *c, FILE *out)
{
	char where[512];

	if (c->metrics_listen.addrlen == 0)
		return 0;
	config_where(c, OPT_METRICS_LISTEN, where, sizeof(where));
	for (size_t i = 0; i < c->listen_count; i++) {
		if (same_socket(&c->metrics_listen, &c->listen[i])) {
			fprintf(out, "error  %s: MetricsListen=%s takes the port of Listen=%s\n",
			        where, c->metrics_listen.text, c->listen[i].text);
			return 1;
		}
	}
	fprintf(out, "ok     MetricsListen: Prometheus metrics at http://%s/metrics\n",
	        c->metrics_listen.text);
	return 0;
}

int check_config(const struct config *c, FILE *out)
{
	int errors = tls_check(c, out);

	for (size_t i = 0; i < c->listen_count; i++) {
		if (c->listen[i].smtps && c->server_cert_file == NULL) {
			char where[512];
			config_where(c, OPT_LISTEN, where, sizeof(where));
			fprintf(
			    out,
			    "error  %s: Listen=%s smtps needs ServerCertFile and ServerKeyFile\n",
			    where, c->listen[i].text);
			errors++;
		}
	}
	errors += check_queue_dir(c, out);
	errors += check_routing(c, out);
	errors += check_sendmail_queues(c, out);
	errors += check_metrics(c, out);
	return errors;
}

int check_throttle_store(const struct config *c, FILE *out)
{
	const struct sockaddr_storage *sa = &c->throttle_store.addr;
	char host[INET6_ADDRSTRLEN] = "";
	struct timeval tv = {2, 0};
	redisContext *rc;
	redisReply *rep = NULL;
	int port;

	if (!c->has_throttle_store)
		return 0;
	if (sa->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host,
		          sizeof(host));
		port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
		port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	}
	rc = redisConnectWithTimeout(host, port, tv);
	if (rc != NULL && rc->err == 0) {
		redisSetTimeout(rc, tv);
		rep = redisCommand(rc, "PING");
	}
	if (rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)
		fprintf(out, "ok     ThrottleStore redis://%s/: answers PING\n",
		        c->throttle_store.text);
	else
		fprintf(
		    out,
		    "warn   ThrottleStore redis://%s/: %s: each node's own limits apply until it "
		    "answers\n",
		    c->throttle_store.text,
		    rc == NULL                                      ? "out of memory"
		    : rc->err                                       ? rc->errstr
		    : rep != NULL && rep->type == REDIS_REPLY_ERROR ? rep->str
		                                                    : "no answer to PING");
	if (rep != NULL)
		freeReplyObject(rep);
	if (rc != NULL)
		redisFree(rc);
	return 0;
}

int check_dnssec(const struct config *c, FILE *out)
{
	struct tls_policy_table *t = NULL;
	char err[512], *anchor;
	bool dane = TLS_POLICY_IS_DANE(c->tls_policy);
	int rc;

	if (c->tls_policy_table != NULL &&
	    (t = tls_policy_load(c->tls_policy_table, err, sizeof(err))) != NULL) {
		dane = dane || tls_policy_any_dane(t);
		tls_policy_free(t);
	}
	if (!dane) {
		fprintf(out, "ok     DNSSEC: not used (no TLSPolicy dane or dane-only)\n");
		return 0;
	}
	if (dns_anchor_read(c->trust_anchor_file, &anchor, err, sizeof(err)) < 0)
		return 0; /* check_config said so */
	rc = dns_probe_dnssec(c->dns_server, anchor, err, sizeof(err));
	free(anchor);
	fprintf(out, "%s DNSSEC: resolver %s: %s\n", rc == 0 ? "ok    " : "error ",
	        c->dns_server ? c->dns_server : "from /etc/resolv.conf", err);
	return rc == 0 ? 0 : 1;
}
