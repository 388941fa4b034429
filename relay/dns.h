/* dns: asynchronous DNS for one worker, on its ring.
 *
 * c-ares does the protocol (Debian's libc-ares: event-driven, no threads of
 * its own, so its sockets can be watched with IORING_OP_POLL_ADD and its
 * timeouts with IORING_OP_TIMEOUT; libunbound would bring a thread and a
 * validator the relay does not need).  Results come back through callbacks
 * from the ring's dispatch, never from inside a dns_* call. */
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
};

struct dns_mx {
	char host[DNS_NAME_MAX + 1]; /* without trailing dot; "" for a null MX (RFC 7505) */
	unsigned pref;
};

struct dns_addr {
	struct sockaddr_storage sa; /* port 0 */
	socklen_t len;
};

struct dns;

/* server: NULL for /etc/resolv.conf, or "ADDR" / "ADDR:PORT" / "[V6]:PORT"
 * (the DNSServer option).  Returns 0 or -1 with err set. */
int dns_init(struct dns **d, struct ring *ring, const char *server, char *err, size_t errlen);
/* Cancels outstanding queries (their callbacks run with DNS_TEMPFAIL, from
 * the ring) and frees everything once they have. */
void dns_free(struct dns *d);

typedef void (*dns_mx_cb)(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n);
typedef void (*dns_addr_cb)(void *arg, enum dns_status st, const struct dns_addr *a, size_t n);

/* MX records of domain, in answer order (the caller sorts: route_order_mx). */
void dns_query_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *arg);
/* A and AAAA records of host (IPv6 first when both exist, then IPv4).
 * DNS_OK with n > 0 when either exists; NXDOMAIN/NODATA when neither. */
void dns_query_addr(struct dns *d, const char *host, dns_addr_cb cb, void *arg);

#endif
