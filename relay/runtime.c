/* runtime: see runtime.h. */
#include "runtime.h"

#include <stdlib.h>

#include "shaping.h"

struct runtime *runtime_get(struct server *srv)
{
	struct runtime *rt;

	pthread_mutex_lock(&srv->lock);
	rt = srv->current;
	atomic_fetch_add(&rt->refs, 1);
	pthread_mutex_unlock(&srv->lock);
	return rt;
}

struct runtime *runtime_hold(struct runtime *rt)
{
	atomic_fetch_add(&rt->refs, 1);
	return rt;
}

void runtime_put(struct runtime *rt)
{
	if (atomic_fetch_sub(&rt->refs, 1) == 1) {
		SSL_CTX_free(rt->server_ctx);
		SSL_CTX_free(rt->client_ctx);
		SSL_CTX_free(rt->sts_ctx);
		route_table_free(rt->transports);
		tls_policy_free(rt->tls_policies);
		shaping_free(rt->shaping);
		free(rt->trust_anchor);
		config_free(&rt->cfg);
		free(rt);
	}
}
