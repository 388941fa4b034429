/* fuzz_shaping: a ShapingTable as an operator (or a tool writing one) may
 * get it wrong: any text.  Oracles: a table that parses has at most
 * SHAPING_SOURCE_MAX sources, each named, with an IPv4 or IPv6 address;
 * pools name sources that exist, with weights from 1; matching any
 * domain and MX host, for no source and for each source, gives a pool
 * that exists (or none), at most SHAPING_REPLY_MAX reply rules, each with
 * an action and a duration, and rates with a unit; a reply is matched
 * without crashing; the site name of the input's words stays in its
 * buffer. */
#include "fuzz.h"
#include "shaping.h"

#include <stdlib.h>
#include <sys/socket.h>

static void check_limits(const struct shaping_table *t, const struct shaping_limits *l)
{
	FUZZ_CHECK(l->pool == -1 || shaping_pool(t, l->pool) != NULL);
	FUZZ_CHECK(l->nreply <= SHAPING_REPLY_MAX);
	for (unsigned i = 0; i < l->nreply; i++) {
		FUZZ_CHECK(l->reply[i]->duration_s > 0);
		FUZZ_CHECK(l->reply[i]->action == SHAPING_SUSPEND ||
		           (l->reply[i]->action == SHAPING_SLOW && l->reply[i]->rate.n > 0));
	}
	FUZZ_CHECK(l->msg_rate.n == 0 || l->msg_rate.per_s > 0);
	FUZZ_CHECK(l->conn_rate.n == 0 || l->conn_rate.per_s > 0);
	(void)shaping_reply_match(l, "421 4.7.0 Try again later");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), err[400], site[64];
	struct shaping_table *t;
	const char *mx[] = {"mx1.example.net", "MX2.example.net.", text};

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	t = shaping_parse(text, "fuzz", err, sizeof(err));
	if (t != NULL) {
		struct shaping_limits l;
		size_t n = shaping_nsources(t);

		FUZZ_CHECK(n <= SHAPING_SOURCE_MAX);
		for (size_t i = 0; i < n; i++) {
			const struct shaping_source *s = shaping_source(t, i);
			FUZZ_CHECK(s->name[0] != '\0');
			FUZZ_CHECK(s->addr.ss_family == AF_INET || s->addr.ss_family == AF_INET6);
		}
		for (int i = 0; shaping_pool(t, i) != NULL; i++) {
			const struct shaping_pool *p = shaping_pool(t, i);
			FUZZ_CHECK(p->n >= 1 && p->n <= SHAPING_POOL_MAX);
			for (unsigned k = 0; k < p->n; k++)
				FUZZ_CHECK(p->src[k] < n && p->weight[k] >= 1);
		}
		shaping_match(t, "example.com", mx, 3, -1, &l);
		check_limits(t, &l);
		for (size_t i = 0; i < n; i++) {
			shaping_match(t, text, mx, 3, (int)i, &l);
			check_limits(t, &l);
		}
		shaping_free(t);
	} else {
		FUZZ_CHECK(strncmp(err, "fuzz:", 5) == 0);
	}
	shaping_site_name(mx, 3, site, sizeof(site));
	FUZZ_CHECK(strlen(site) < sizeof(site));
	free(text);
	return 0;
}
