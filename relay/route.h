/* route: where a recipient domain's mail goes next.  Pure code, except
 * route_table_load, which reads a file.
 *
 * Order: TransportTable (exact domain, then ".parent" entries from the most
 * to the least specific), then SmartHost, then the domain's own MX records.
 * A next hop is written as in Sendmail and Postfix: "[host]:port" or
 * "[1.2.3.4]" means no MX lookup; "host" or "host:port" means MX lookup of
 * host (falling back to its address records when it has no MX). */
#ifndef KRELAY_ROUTE_H
#define KRELAY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"

struct route_hop {
	char host[DNS_NAME_MAX + 1]; /* name or address literal, without brackets */
	uint16_t port;               /* 25 unless given */
	bool mx;                     /* look up MX records of host */
	bool literal;                /* host is an IPv4/IPv6 address */
	bool smtps;                  /* "HOP smtps": implicit TLS from the first byte */
};

/* Parses a next hop, "HOP" or "HOP smtps" (implicit TLS, as Postfix's
 * smtp_tls_wrappermode: the port speaks TLS from the first byte, e.g. 465).
 * Returns 0, or -1 with err set. */
int route_parse_hop(const char *s, struct route_hop *hop, char *err, size_t errlen);

/* "[host]:port" or "host:port" (then " smtps" when so): the canonical
 * text, used as the name of the destination queue and in logs. */
void route_hop_text(const struct route_hop *hop, char *buf, size_t len);

struct route_table;

/* TransportTable file: "domain nexthop" per line, '#' comments; a key that
 * starts with '.' matches every subdomain.  Returns NULL with err set to
 * "path:line: why" on error. */
struct route_table *route_table_load(const char *path, char *err, size_t errlen);
void route_table_free(struct route_table *t);

/* The next hop for a recipient domain: table entry, else smart host (may be
 * NULL), else the domain itself with MX lookup on port 25. */
void route_lookup(const struct route_table *t, const struct route_hop *smarthost,
                  const char *domain, struct route_hop *out);

/* RFC 5321 5.1: sorts by preference, shuffling equal preferences with rnd
 * (which returns a uniform value below its bound).  Returns -1 when the
 * answer is a null MX (RFC 7505: one record, host ""), else the count. */
int route_order_mx(struct dns_mx *mx, size_t n, unsigned (*rnd)(void *ctx, unsigned bound),
                   void *ctx);

#endif
