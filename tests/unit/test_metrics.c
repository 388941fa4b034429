/* test_metrics: relay/metrics.c: per-worker counters summed by a scrape,
 * the fsync histogram (bucket edges, cumulative in the text), the
 * destinations' picture (found by name, the top ones named and the rest
 * summed as "other", merged across workers), providers, and that every
 * sample line of the exposition belongs to a family with HELP and TYPE. */
#include "metrics.h"
#include "unit.h"

/* The value of the sample line that starts with "name " or "name{...} ",
 * exactly; -1 when there is none. */
static long long sample(const char *text, const char *line_start)
{
	size_t n = strlen(line_start);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, line_start, n) == 0 && p[n] == ' ')
			return atoll(p + n + 1);
	return -1;
}

static struct strbuf rendered;

/* The exposition (valid until the next call). */
static char *render(struct metrics *m, time_t now)
{
	strbuf_free(&rendered);
	metrics_render(m, &rendered, now);
	return rendered.p;
}

TEST(counters_summed)
{
	struct metrics *m = metrics_new(3);
	struct metrics_worker *w0 = metrics_worker(m, 0), *w2 = metrics_worker(m, 2);
	char *t;

	CHECK(metrics_worker(m, 3) == NULL && metrics_worker(NULL, 0) == NULL);
	/* each block on its own cache lines */
	CHECK((uintptr_t)w0 % 64 == 0 && (uintptr_t)w2 % 64 == 0);
	CHECK((char *)metrics_worker(m, 1) - (char *)w0 >= 128);
	metrics_count(w0, MC_RECEIVED_MESSAGES, 2);
	metrics_count(w2, MC_RECEIVED_MESSAGES, 3);
	metrics_count(w2, MC_RCPT_DEFERRED, 7);
	metrics_count(NULL, MC_RCPT_DEFERRED, 7); /* nothing */
	metrics_gauge_set(w0, MG_SESSIONS_IN, 4);
	metrics_gauge_set(w2, MG_SESSIONS_IN, 1);
	metrics_tls(w0, true, "TLSv1.3", true, 0);
	metrics_tls(w2, false, "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256", false, -1);
	metrics_tls(w2, false, "TLSv1.25", true, -1);
	t = render(m, time(NULL));
	CHECK(sample(t, "krelay_up") == 1);
	CHECK(sample(t, "krelay_workers") == 3);
	CHECK(sample(t, "krelay_messages_received_total") == 5);
	CHECK(sample(t, "krelay_recipients_total{outcome=\"deferred\"}") == 7);
	CHECK(sample(t, "krelay_recipients_total{outcome=\"relayed\"}") == 0);
	CHECK(sample(t, "krelay_connections_open{direction=\"inbound\"}") == 5);
	CHECK(
	    sample(t, "krelay_tls_connections_total{direction=\"inbound\",version=\"TLSv1.3\"}") ==
	    1);
	CHECK(
	    sample(t, "krelay_tls_connections_total{direction=\"outbound\",version=\"TLSv1.2\"}") ==
	    1);
	CHECK(sample(t, "krelay_tls_connections_total{direction=\"outbound\",version=\"other\"}") ==
	      1);
	CHECK(sample(t, "krelay_ktls_connections_total{direction=\"inbound\",path=\"tx\",state="
	                "\"on\"}") == 1);
	CHECK(sample(t, "krelay_ktls_connections_total{direction=\"inbound\",path=\"rx\",state="
	                "\"off\"}") == 1);
	CHECK(sample(t, "krelay_ktls_connections_total{direction=\"outbound\",path=\"tx\",state="
	                "\"off\"}") == 1);
	CHECK(sample(t, "krelay_ktls_connections_total{direction=\"outbound\",path=\"tx\",state="
	                "\"on\"}") == 1);
	metrics_free(m);
}

TEST(fsync_histogram)
{
	struct metrics *m = metrics_new(2);
	struct metrics_worker *w = metrics_worker(m, 1);
	int64_t now = metrics_clock();
	char *t;

	metrics_fsync_done(w, now - 100000);       /* 0.1 ms */
	metrics_fsync_done(w, now - 700000);       /* 0.7 ms (and what this call takes) */
	metrics_fsync_done(w, now - 3000000000LL); /* 3 s */
	metrics_fsync_done(w, now - 9000000000LL); /* past the last bucket */
	metrics_fsync_done(w, 0);                  /* not taken: not counted */
	metrics_fsync_done(NULL, now);
	t = render(m, time(NULL));
	CHECK(sample(t, "krelay_spool_fsync_seconds_bucket{le=\"0.0005\"}") == 1);
	CHECK(sample(t, "krelay_spool_fsync_seconds_bucket{le=\"0.001\"}") == 2);
	CHECK(sample(t, "krelay_spool_fsync_seconds_bucket{le=\"2.5\"}") == 2);
	CHECK(sample(t, "krelay_spool_fsync_seconds_bucket{le=\"5\"}") == 3);
	CHECK(sample(t, "krelay_spool_fsync_seconds_bucket{le=\"+Inf\"}") == 4);
	CHECK(sample(t, "krelay_spool_fsync_seconds_count") == 4);
	CHECK(sample(t, "krelay_spool_fsync_seconds_sum") == 12); /* 12.0008... s */
	CHECK(strstr(t, "# TYPE krelay_spool_fsync_seconds histogram\n") != NULL);
	metrics_free(m);
}

static void add(struct metrics_dests *t, const char *name, uint64_t rcpts, uint64_t conns,
                int64_t oldest)
{
	struct metrics_dest *d = metrics_dests_get(t, name);

	d->recipients += rcpts;
	d->messages += rcpts ? 1 : 0;
	d->connections += conns;
	if (oldest && (d->oldest == 0 || oldest < d->oldest))
		d->oldest = oldest;
}

TEST(dests_by_name_and_top)
{
	struct metrics_dests t = {0};
	char name[32];
	size_t n;

	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 500; i++) {
			snprintf(name, sizeof(name), "d%03d.example:25", i);
			add(&t, name, (uint64_t)i, 0, 0);
		}
	CHECK(t.n == 500 && !t.oom);
	CHECK(metrics_dests_get(&t, "d499.example:25")->recipients == 998);
	n = metrics_dests_top(t.d, t.n, 10);
	CHECK(n == 11);
	CHECK_STR(t.d[0].name, "d499.example:25");
	CHECK_STR(t.d[9].name, "d490.example:25");
	CHECK_STR(t.d[10].name, METRICS_DEST_OTHER);
	/* 2 * (0 + ... + 489) */
	CHECK(t.d[10].recipients == 2ull * 489 * 490 / 2);
	CHECK(t.d[10].messages == 2 * 489); /* d000 has none */
	metrics_dests_free(&t);

	/* ties: connections, then the name; "other" stays last */
	add(&t, METRICS_DEST_OTHER, 1000, 0, 0);
	add(&t, "b:25", 5, 1, 0);
	add(&t, "a:25", 5, 1, 0);
	add(&t, "c:25", 5, 2, 0);
	n = metrics_dests_top(t.d, t.n, 10);
	CHECK(n == 4);
	CHECK_STR(t.d[0].name, "c:25");
	CHECK_STR(t.d[1].name, "a:25");
	CHECK_STR(t.d[2].name, "b:25");
	CHECK_STR(t.d[3].name, METRICS_DEST_OTHER);
	/* an "other" already there takes in the rest */
	n = metrics_dests_top(t.d, n, 2);
	CHECK(n == 3 && t.d[2].recipients == 1005 && t.d[2].connections == 1);
	CHECK(metrics_dests_top(t.d, 0, 2) == 0);
	metrics_dests_free(&t);
}

TEST(pictures_merged)
{
	struct metrics *m = metrics_new(2);
	struct metrics_dests t = {0};
	time_t now = 1700000000;
	char *text, name[64];

	add(&t, "mx.example:25", 3, 1, now - 100);
	add(&t, "[127.0.0.1]:2525", 1, 0, now - 5);
	metrics_publish(metrics_worker(m, 0), &t, 4, 4, now - 100);
	CHECK(t.d == NULL && t.n == 0);
	add(&t, "mx.example:25", 2, 2, now - 300);
	add(&t, "bad\"name\\x\n:25", 1, 0, now - 1);
	metrics_publish(metrics_worker(m, 1), &t, 3, 3, now - 300);
	/* a second picture replaces the first */
	add(&t, "mx.example:25", 2, 2, now - 300);
	add(&t, "bad\"name\\x\n:25", 1, 0, now - 1);
	metrics_publish(metrics_worker(m, 1), &t, 3, 3, now - 300);
	text = render(m, now);
	CHECK(sample(text, "krelay_queue_messages") == 7);
	CHECK(sample(text, "krelay_queue_recipients") == 7);
	CHECK(sample(text, "krelay_queue_oldest_age_seconds") == 300);
	CHECK(sample(text, "krelay_queue_destination_recipients{destination=\"mx.example:25\"}") ==
	      5);
	CHECK(sample(text, "krelay_queue_destination_messages{destination=\"mx.example:25\"}") ==
	      2);
	CHECK(sample(text, "krelay_queue_destination_oldest_age_seconds{destination=\"mx.example:"
	                   "25\"}") == 300);
	CHECK(sample(text, "krelay_destination_connections{destination=\"mx.example:25\"}") == 3);
	CHECK(sample(text, "krelay_destination_connections{destination=\"[127.0.0.1]:2525\"}") ==
	      -1); /* none open: no line */
	CHECK(sample(text, "krelay_queue_destination_recipients{destination=\"bad\\\"name\\\\x\\n:"
	                   "25\"}") == 1);
	/* beyond the top, the rest is "other" */
	for (int i = 0; i < METRICS_DEST_TOP + 5; i++) {
		snprintf(name, sizeof(name), "d%d.example:25", i);
		add(&t, name, 1, 0, now - 10);
	}
	metrics_publish(metrics_worker(m, 1), &t, 105, 105, now - 10);
	text = render(m, now);
	/* 107 in all: mx.example first (3), then the 106 with one recipient
	 * by name, of which the last 7 are "other" */
	CHECK(sample(text, "krelay_queue_destination_recipients{destination=\"other\"}") == 7);
	CHECK(sample(text, "krelay_queue_destination_recipients{destination=\"mx.example:25\"}") ==
	      3);
	metrics_free(m);
}

static void provider(void *arg, struct strbuf *out)
{
	const char *site = arg;

	metrics_family(out, "krelay_throttle_delay_seconds_total", "counter", "Test \\ help.");
	metrics_sample_f(out, "krelay_throttle_delay_seconds_total",
	                 (const char *const[]){"site", site, NULL}, 1.5);
	metrics_sample_u64(out, "krelay_throttle_delay_seconds_total", NULL, 7);
}

/* Every sample line's metric (less _bucket, _sum, _count) has had its
 * HELP and TYPE lines before it; names and labels are well-formed. */
static bool well_formed(const char *text)
{
	char typed[200][128];
	size_t ntyped = 0;
	bool ok = true;

	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char line[1024];

		snprintf(line, sizeof(line), "%.*s", (int)n, p);
		p += n + (e != NULL);
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			if (ntyped < 200)
				sscanf(line + 7, "%127s", typed[ntyped++]);
			continue;
		}
		char name[128];
		size_t k = strspn(line, "abcdefghijklmnopqrstuvwxyz_0123456789");
		snprintf(name, sizeof(name), "%.*s", (int)k, line);
		if (line[k] != ' ' && line[k] != '{')
			ok = false;
		bool found = false;
		for (size_t i = 0; i < ntyped && !found; i++) {
			size_t l = strlen(typed[i]);
			/* the family, or a histogram's _bucket, _sum, _count */
			found = strncmp(name, typed[i], l) == 0 &&
			        (name[l] == '\0' || strcmp(name + l, "_bucket") == 0 ||
			         strcmp(name + l, "_sum") == 0 || strcmp(name + l, "_count") == 0);
		}
		if (!found) {
			printf("  no TYPE for: %s\n", line);
			ok = false;
		}
	}
	return ok;
}

TEST(providers_and_form)
{
	struct metrics *m = metrics_new(1);
	char *t;

	CHECK(metrics_add_provider(m, provider, "outlook\"x") == 0);
	for (int i = 1; i < METRICS_PROVIDERS_MAX; i++)
		CHECK(metrics_add_provider(m, provider, "x") == 0);
	CHECK(metrics_add_provider(m, provider, "x") == -1);
	CHECK(metrics_add_provider(NULL, provider, "x") == -1);
	t = render(m, time(NULL));
	CHECK(strstr(t, "# HELP krelay_throttle_delay_seconds_total Test \\\\ help.\n") != NULL);
	CHECK(strstr(t, "krelay_throttle_delay_seconds_total{site=\"outlook\\\"x\"} 1.5\n") !=
	      NULL);
	CHECK(sample(t, "krelay_throttle_delay_seconds_total") == 7);
	CHECK(well_formed(t));
	CHECK(t[strlen(t) - 1] == '\n');
	metrics_free(m);
}

int main(void)
{
	RUN(counters_summed);
	RUN(fsync_histogram);
	RUN(dests_by_name_and_top);
	RUN(pictures_merged);
	RUN(providers_and_form);
	strbuf_free(&rendered);
	UNIT_END("test_metrics");
}
