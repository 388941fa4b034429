/* client_count: open sessions per client address, for the whole relay (one
 * table shared by every worker).  An IPv4-mapped IPv6 address counts as the
 * IPv4 address it carries. */
#ifndef KRELAY_CLIENT_COUNT_H
#define KRELAY_CLIENT_COUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An address in IPv6 form (IPv4 as ::ffff:a.b.c.d). */
struct client_key {
	uint8_t a[16];
};

struct client_count;

/* Returns a new, empty table, or NULL when out of memory. */
struct client_count *client_count_new(void);
void client_count_free(struct client_count *t);
/* Fills k from an AF_INET or AF_INET6 address; false for any other family. */
bool client_key_of(const struct sockaddr_storage *ss, struct client_key *k);
/* Writes k as text: dotted quad for IPv4 (mapped or not), else RFC 5952. */
void client_key_text(const struct client_key *k, char *buf, size_t len);
/* Counts one more session from k.  Returns how many k has now, this one
 * included; 0 when the table has no room for k (then k is not counted and
 * client_count_del must not be called for it).  Thread-safe. */
unsigned client_count_add(struct client_count *t, const struct client_key *k);
/* Drops one session of k, counted by client_count_add.  Thread-safe. */
void client_count_del(struct client_count *t, const struct client_key *k);
/* How many sessions k has (tests, logs).  Thread-safe. */
unsigned client_count_get(struct client_count *t, const struct client_key *k);

#endif
