/* sts: MTA-STS (RFC 8461) policies for one worker: fetched over HTTPS
 * (libcurl) and kept in a cache on disk, by a thread of the worker's own,
 * so the ring never blocks on a slow policy host.  Results come back
 * through callbacks from the ring's dispatch, never from inside sts_get. */
#ifndef KRELAY_STS_H
#define KRELAY_STS_H

#include <stdbool.h>
#include <time.h>

#include "dns.h"
#include "ring.h"
#include "sts_policy.h"

struct sts_result {
	bool have; /* a policy to apply */
	struct sts_policy policy;
	char id[STS_ID_MAX + 1];
	time_t expires;
	/* "fetched", "cached", or "cached, fetch failed" (have); why not, or
	 * why the fetch failed: text from outside in part (make it safe) */
	const char *source;
	char why[256];
};

typedef void (*sts_cb)(void *arg, const struct sts_result *r);

struct sts;

/* cache_dir: where policies are kept (made if missing).  0, or -1 with
 * err. */
int sts_init(struct sts **s, struct ring *ring, const char *cache_dir, char *err, size_t errlen);
/* Stops the thread (a fetch under way is abandoned); outstanding requests'
 * callbacks still come, from the ring, without a policy; the handle frees
 * itself once its ops are idle.  Keep running the ring afterwards. */
void sts_free(struct sts *s);

/* The policy of domain, per RFC 8461 section 5: txt_id is the id of its
 * _mta-sts TXT record ("" when it has none); addr the address of
 * mta-sts.DOMAIN (NULL: none; then only a cached policy can come back);
 * ca_file the CAs the policy host's certificate must chain to.
 * A cached policy is used while unexpired and of that id; otherwise the
 * policy is fetched and cached; a fetch that fails leaves the unexpired
 * cached one in force. */
void sts_get(struct sts *s, const char *domain, const char *txt_id, const struct dns_addr *addr,
             const char *ca_file, sts_cb cb, void *arg);

#endif
