/* dns: asynchronous DNS for one worker, on its ring.
 *
 * Two resolvers behind one API:
 * - dns_init: c-ares (Debian's libc-ares: event-driven, no threads of its
 *   own, so its sockets are watched with IORING_OP_POLL_ADD).  It validates
 *   nothing: every answer is reported insecure.  This is what a relay
 *   without DANE uses for everything.
 * - dns_init_dnssec: libunbound (dns_ub.c), a validating resolver with the
 *   trust anchor the admin names (DNSSECTrustAnchorFile); each answer says
 *   whether it was validated (secure), and a validation failure is
 *   DNS_BOGUS, never an answer.  It runs its own thread; its results come
 *   through a pipe watched by the ring.  The queue uses it for the
 *   destinations whose TLS policy is dane or dane-only.
 * Results come back through callbacks from the ring's dispatch, never from
 * inside a dns_* call. */
#ifndef KRELAY_DNS_H
#define KRELAY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "ring.h"

#define DNS_NAME_MAX 255
#define DNS_MX_MAX   32
#define DNS_ADDR_MAX 32

enum dns_status {
	DNS_OK,
	DNS_NXDOMAIN, /* the name does not exist: permanent */
	DNS_NODATA,   /* the name exists, no record of that type */
	DNS_TEMPFAIL, /* timeout, SERVFAIL, refused, network: try later */
	DNS_BOGUS,    /* DNSSEC validation failed (dns_init_dnssec only): try later */
};

/* "ok", "nxdomain", ... for log lines */
const char *dns_status_name(enum dns_status st);

struct dns_mx {
	char host[DNS_NAME_MAX + 1]; /* without trailing dot; "" for a null MX (RFC 7505) */
	unsigned pref;
};

struct dns_addr {
	struct sockaddr_storage sa; /* port 0 */
	socklen_t len;
};

/* One TLSA record (RFC 6698); data points into the resolver's answer and
 * is valid only during the callback. */
struct dns_tlsa {
	unsigned char usage, selector, mtype;
	const unsigned char *data;
	size_t len;
};
#define DNS_TLSA_MAX 16

/* One TXT record, its strings joined (valid only during the callback). */
struct dns_txt {
	const char *s;
	size_t len;
};
#define DNS_TXT_MAX   16
#define DNS_TXT_BYTES 8192 /* all records together; what is beyond is left out */

struct dns;

/* server: NULL for /etc/resolv.conf, or "ADDR" / "ADDR:PORT" / "[V6]:PORT"
 * (the DNSServer option).  Returns 0 or -1 with err set. */
int dns_init(struct dns **d, struct ring *ring, const char *server, char *err, size_t errlen);
/* Cancels outstanding queries (their callbacks run with DNS_TEMPFAIL, from
 * the ring) and frees everything once they have. */
void dns_free(struct dns *d);
/* The validating resolver: server as above (forwarded to), or NULL for the
 * name servers of /etc/resolv.conf; anchor: dns_anchor_read's text (DS or
 * DNSKEY records in zone-file form, as in Debian's /usr/share/dns/root.key).
 * Same lifetime rules as dns_init. */
int dns_init_dnssec(struct dns **d, struct ring *ring, const char *server, const char *anchor,
                    char *err, size_t errlen);
/* Reads a trust-anchor file: its DS and DNSKEY records, one per line, in
 * *text (malloc'd).  Returns their number, or -1 with err ("no DS or
 * DNSKEY record in it" is an error too). */
int dns_anchor_read(const char *path, char **text, char *err, size_t errlen);
/* `krelay check`: asks the validating resolver (as dns_init_dnssec would
 * make it) for the DNSKEY records of the trust anchor's zone, blocking.
 * 0 when they validate; -1 otherwise; out says what was seen. */
int dns_probe_dnssec(const char *server, const char *anchor, char *out, size_t outlen);
/* Blocking, for the command line (krelay tlsrpt): the TXT records of name
 * through DNSServer (or resolv.conf), nothing validated; free each string
 * and the array.  0, or -1 with err. */
int dns_txt_sync(const char *server, const char *name, char ***txt, size_t *n, char *err,
                 size_t errlen);
/* Blocking, likewise: the first IPv4 (else IPv6) address of host, as text. */
int dns_addr_sync(const char *server, const char *host, char *ip, size_t iplen, char *err,
                  size_t errlen);
/* Why the last DNS_BOGUS answer was bogus ("" when none), for log lines. */
const char *dns_why_bogus(const struct dns *d);

/* secure: the answer (or the proof that there is none) was validated. */
typedef void (*dns_mx_cb)(void *arg, enum dns_status st, bool secure, const struct dns_mx *mx,
                          size_t n);
typedef void (*dns_addr_cb)(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                            size_t n);
typedef void (*dns_tlsa_cb)(void *arg, enum dns_status st, bool secure, const struct dns_tlsa *t,
                            size_t n);
typedef void (*dns_txt_cb)(void *arg, enum dns_status st, bool secure, const struct dns_txt *t,
                           size_t n);

/* MX records of domain, in answer order (the caller sorts: route_order_mx). */
void dns_query_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *arg);
/* A and AAAA records of host (IPv6 first when both exist, then IPv4).
 * DNS_OK with n > 0 when either exists; NXDOMAIN/NODATA when neither. */
void dns_query_addr(struct dns *d, const char *host, dns_addr_cb cb, void *arg);
/* TLSA records of _port._tcp.host (RFC 7672 section 2.2); a handle made by
 * dns_init answers DNS_TEMPFAIL (it cannot tell a secure answer). */
void dns_query_tlsa(struct dns *d, const char *host, unsigned port, dns_tlsa_cb cb, void *arg);
/* TXT records of name (MTA-STS's _mta-sts, TLS-RPT's _smtp._tls). */
void dns_query_txt(struct dns *d, const char *name, dns_txt_cb cb, void *arg);

#endif
