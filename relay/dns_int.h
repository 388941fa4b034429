/* dns_int: between dns.c and dns_ub.c, the validating resolver behind
 * dns_init_dnssec (see dns.h): libunbound driven from the worker's ring.
 * Only those two include this. */
#ifndef KRELAY_DNS_INT_H
#define KRELAY_DNS_INT_H

#include "dns.h"

struct dns_ub;

/* servers: NULL (the name servers of /etc/resolv.conf) or dns.c's checked
 * list "ADDR:PORT,[V6]:PORT"; anchor: trust-anchor file. */
int dns_ub_init(struct dns_ub **u, struct ring *ring, const char *servers, const char *anchor,
                char *err, size_t errlen);
void dns_ub_free(struct dns_ub *u);
void dns_ub_query_mx(struct dns_ub *u, const char *domain, dns_mx_cb cb, void *arg);
void dns_ub_query_addr(struct dns_ub *u, const char *host, dns_addr_cb cb, void *arg);
void dns_ub_query_tlsa(struct dns_ub *u, const char *host, unsigned port, dns_tlsa_cb cb,
                       void *arg);
void dns_ub_query_txt(struct dns_ub *u, const char *name, dns_txt_cb cb, void *arg);
const char *dns_ub_why_bogus(const struct dns_ub *u);
/* Blocking (for krelay check): does the anchor's own DNSKEY RRset come
 * back secure through these servers?  0, or -1; out says what was seen. */
int dns_ub_probe(const char *servers, const char *anchor, char *out, size_t outlen);
/* Blocking (for krelay tlsrpt): the TXT records of name, malloc'd strings
 * in a malloc'd array.  0 (n may be 0), or -1 with err. */
int dns_ub_txt_sync(const char *servers, const char *name, char ***txt, size_t *n, char *err,
                    size_t errlen);
/* Blocking: the first IPv4 (else IPv6) address of host, as text. */
int dns_ub_addr_sync(const char *servers, const char *host, char *ip, size_t iplen, char *err,
                     size_t errlen);

#endif
