/* tls_policy: TLSPolicyTable, per-destination overrides of TLSPolicy.
 * Lines "domain level" ('#' comments); a key starting with '.' matches every
 * subdomain.  The key is the next hop's name (the recipient domain when
 * routing by MX, or the smart host / transport host).  Pure code but for
 * reading the file. */
#ifndef KRELAY_TLS_POLICY_H
#define KRELAY_TLS_POLICY_H

#include <stdbool.h>

struct tls_policy_table;

/* NULL with err = "path:line: why" on error. */
struct tls_policy_table *tls_policy_load(const char *path, char *err, unsigned long errlen);
void tls_policy_free(struct tls_policy_table *t);
/* The level for host (enum config_tls_policy), or dflt when no entry
 * matches: exact name first, then ".parent" entries, longest first. */
int tls_policy_lookup(const struct tls_policy_table *t, const char *host, int dflt);
/* Whether an entry says dane or dane-only (the queue then needs the
 * validating resolver). */
bool tls_policy_any_dane(const struct tls_policy_table *t);

#endif
