/* metrics: see metrics.h. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_http.h"

/* A worker's last picture of its queue. */
struct metrics_snap {
	uint64_t messages, recipients;
	int64_t oldest;
	struct metrics_dest *d;
	size_t n;
};

struct metrics {
	unsigned nworkers;
	struct metrics_worker *w;
	time_t started;
	pthread_mutex_t plock; /* guards the providers */
	struct {
		metrics_provider_fn fn;
		void *arg;
	} prov[METRICS_PROVIDERS_MAX];
	size_t nprov;
};

/* The fsync histogram's upper bounds: Prometheus's usual buckets from
 * 0.5 ms to 5 s (a data fsync on a good disk takes well under a ms). */
static const char *const fsync_le[METRICS_FSYNC_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",
};
static const int64_t fsync_le_ns[METRICS_FSYNC_BUCKETS] = {
    500000,    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000,
};

struct metrics *metrics_new(unsigned workers)
{
	struct metrics *m = calloc(1, sizeof(*m));
	size_t size = (size_t)(workers ? workers : 1) * sizeof(struct metrics_worker);

	if (m == NULL)
		return NULL;
	m->w = aligned_alloc(_Alignof(struct metrics_worker), size);
	if (m->w == NULL) {
		free(m);
		return NULL;
	}
	memset(m->w, 0, size);
	m->nworkers = workers;
	m->started = time(NULL);
	pthread_mutex_init(&m->plock, NULL);
	for (unsigned i = 0; i < workers; i++)
		pthread_mutex_init(&m->w[i].lock, NULL);
	return m;
}

static void snap_free(struct metrics_snap *s)
{
	if (s != NULL)
		free(s->d);
	free(s);
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (unsigned i = 0; i < m->nworkers; i++) {
		snap_free(m->w[i].snap);
		pthread_mutex_destroy(&m->w[i].lock);
	}
	pthread_mutex_destroy(&m->plock);
	free(m->w);
	free(m);
}

struct metrics_worker *metrics_worker(struct metrics *m, unsigned index)
{
	return m != NULL && index < m->nworkers ? &m->w[index] : NULL;
}

/* "TLSv1.3", also at the start of "TLSv1.3 with cipher ...". */
static bool version_is(const char *v, const char *want)
{
	size_t n = strlen(want);

	return v != NULL && strncmp(v, want, n) == 0 && (v[n] == '\0' || v[n] == ' ');
}

void metrics_tls(struct metrics_worker *w, bool inbound, const char *version, bool ktls_tx,
                 int ktls_rx)
{
	int v = version_is(version, "TLSv1.3") ? 2 : version_is(version, "TLSv1.2") ? 1 : 0;
	static const enum metrics_counter in[] = {MC_TLS_IN_OTHER, MC_TLS_IN_12, MC_TLS_IN_13};
	static const enum metrics_counter out[] = {MC_TLS_OUT_OTHER, MC_TLS_OUT_12, MC_TLS_OUT_13};

	metrics_count(w, inbound ? in[v] : out[v], 1);
	if (inbound)
		metrics_count(w, ktls_tx ? MC_KTLS_IN_TX_ON : MC_KTLS_IN_TX_OFF, 1);
	else
		metrics_count(w, ktls_tx ? MC_KTLS_OUT_TX_ON : MC_KTLS_OUT_TX_OFF, 1);
	if (inbound && ktls_rx >= 0)
		metrics_count(w, ktls_rx ? MC_KTLS_IN_RX_ON : MC_KTLS_IN_RX_OFF, 1);
}

int64_t metrics_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void metrics_fsync_done(struct metrics_worker *w, int64_t started_ns)
{
	int64_t ns;
	size_t b = 0;

	if (w == NULL || started_ns == 0)
		return;
	ns = metrics_clock() - started_ns;
	if (ns < 0)
		ns = 0;
	while (b < METRICS_FSYNC_BUCKETS && ns > fsync_le_ns[b])
		b++;
	/* one writer, as metrics_count */
	uint64_t v = atomic_load_explicit(&w->fsync_sum_ns, memory_order_relaxed);
	atomic_store_explicit(&w->fsync_sum_ns, v + (uint64_t)ns, memory_order_relaxed);
	v = atomic_load_explicit(&w->fsync_bucket[b], memory_order_relaxed);
	atomic_store_explicit(&w->fsync_bucket[b], v + 1, memory_order_relaxed);
}

/* ---- destinations -------------------------------------------------------- */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static bool dests_rehash(struct metrics_dests *t, size_t nslots)
{
	size_t *slot = calloc(nslots, sizeof(*slot));

	if (slot == NULL)
		return false;
	for (size_t i = 0; i < t->n; i++) {
		size_t k = name_hash(t->d[i].name) & (nslots - 1);
		while (slot[k] != 0)
			k = (k + 1) & (nslots - 1);
		slot[k] = i + 1;
	}
	free(t->slot);
	t->slot = slot;
	t->nslots = nslots;
	return true;
}

struct metrics_dest *metrics_dests_get(struct metrics_dests *t, const char *name)
{
	char key[METRICS_DEST_NAME];
	size_t k;

	if (t->oom)
		return NULL;
	snprintf(key, sizeof(key), "%s", name);
	if (t->nslots == 0 || 2 * (t->n + 1) > t->nslots) {
		if (!dests_rehash(t, t->nslots ? 2 * t->nslots : 64)) {
			t->oom = true;
			return NULL;
		}
	}
	k = name_hash(key) & (t->nslots - 1);
	for (; t->slot[k] != 0; k = (k + 1) & (t->nslots - 1))
		if (strcmp(t->d[t->slot[k] - 1].name, key) == 0)
			return &t->d[t->slot[k] - 1];
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 32;
		struct metrics_dest *d = realloc(t->d, cap * sizeof(*d));
		if (d == NULL) {
			t->oom = true;
			return NULL;
		}
		t->d = d;
		t->cap = cap;
	}
	memset(&t->d[t->n], 0, sizeof(t->d[t->n]));
	memcpy(t->d[t->n].name, key, sizeof(key));
	t->slot[k] = ++t->n;
	return &t->d[t->n - 1];
}

void metrics_dests_free(struct metrics_dests *t)
{
	free(t->d);
	free(t->slot);
	memset(t, 0, sizeof(*t));
}

static int dest_order(const void *pa, const void *pb)
{
	const struct metrics_dest *a = pa, *b = pb;
	bool ao = strcmp(a->name, METRICS_DEST_OTHER) == 0;
	bool bo = strcmp(b->name, METRICS_DEST_OTHER) == 0;

	if (ao != bo)
		return ao ? 1 : -1;
	if (a->recipients != b->recipients)
		return a->recipients > b->recipients ? -1 : 1;
	if (a->connections != b->connections)
		return a->connections > b->connections ? -1 : 1;
	return strcmp(a->name, b->name);
}

static void dest_add(struct metrics_dest *to, const struct metrics_dest *from)
{
	to->messages += from->messages;
	to->recipients += from->recipients;
	to->connections += from->connections;
	if (from->oldest != 0 && (to->oldest == 0 || from->oldest < to->oldest))
		to->oldest = from->oldest;
}

size_t metrics_dests_top(struct metrics_dest *d, size_t n, size_t keep)
{
	struct metrics_dest other;

	if (n == 0)
		return 0;
	qsort(d, n, sizeof(*d), dest_order);
	if (n <= keep)
		return n;
	memset(&other, 0, sizeof(other));
	snprintf(other.name, sizeof(other.name), "%s", METRICS_DEST_OTHER);
	for (size_t i = keep; i < n; i++)
		dest_add(&other, &d[i]);
	d[keep] = other;
	return keep + 1;
}

void metrics_publish(struct metrics_worker *w, struct metrics_dests *t, uint64_t messages,
                     uint64_t recipients, int64_t oldest)
{
	struct metrics_snap *s, *old;

	if (w == NULL) {
		metrics_dests_free(t);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		metrics_dests_free(t);
		return;
	}
	s->messages = messages;
	s->recipients = recipients;
	s->oldest = oldest;
	if (!t->oom) {
		s->n = metrics_dests_top(t->d, t->n, METRICS_DEST_PUBLISH);
		s->d = t->d;
		t->d = NULL;
	}
	metrics_dests_free(t);
	pthread_mutex_lock(&w->lock);
	old = w->snap;
	w->snap = s;
	pthread_mutex_unlock(&w->lock);
	snap_free(old);
}

/* ---- the exposition -------------------------------------------------------- */

int metrics_add_provider(struct metrics *m, metrics_provider_fn fn, void *arg)
{
	int ret = -1;

	if (m == NULL)
		return -1;
	pthread_mutex_lock(&m->plock);
	if (m->nprov < METRICS_PROVIDERS_MAX) {
		m->prov[m->nprov].fn = fn;
		m->prov[m->nprov].arg = arg;
		m->nprov++;
		ret = 0;
	}
	pthread_mutex_unlock(&m->plock);
	return ret;
}

void metrics_family(struct strbuf *out, const char *name, const char *type, const char *help)
{
	strbuf_printf(out, "# HELP %s ", name);
	metrics_help_text(out, help);
	strbuf_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void sample_name(struct strbuf *out, const char *name, const char *const *labels)
{
	strbuf_put(out, name, strlen(name));
	if (labels == NULL || labels[0] == NULL)
		return;
	strbuf_put(out, "{", 1);
	for (size_t i = 0; labels[i] != NULL && labels[i + 1] != NULL; i += 2) {
		strbuf_printf(out, "%s%s=\"", i ? "," : "", labels[i]);
		metrics_label_value(out, labels[i + 1]);
		strbuf_put(out, "\"", 1);
	}
	strbuf_put(out, "}", 1);
}

void metrics_sample_u64(struct strbuf *out, const char *name, const char *const *labels, uint64_t v)
{
	sample_name(out, name, labels);
	strbuf_printf(out, " %llu\n", (unsigned long long)v);
}

void metrics_sample_f(struct strbuf *out, const char *name, const char *const *labels, double v)
{
	sample_name(out, name, labels);
	strbuf_printf(out, " %.17g\n", v);
}

static uint64_t load(_Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

/* A counter family with one label: each value of it and its counter. */
static void counter_by(struct strbuf *out, const uint64_t *sum, const char *name, const char *help,
                       const char *label, const char *const *values,
                       const enum metrics_counter *which, size_t n)
{
	metrics_family(out, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		metrics_sample_u64(out, name, (const char *const[]){label, values[i], NULL},
		                   sum[which[i]]);
}

static void render_counters(struct metrics *m, struct strbuf *out, const uint64_t *c)
{
	static const char *const inout[] = {"inbound", "outbound"};
	static const char *const outcome[] = {"relayed", "deferred", "bounced"};

	metrics_family(out, "krelay_messages_received_total", "counter",
	               "Messages accepted from clients: made durable in the queue, or relayed "
	               "before the reply (DeliveryMode=interactive).");
	metrics_sample_u64(out, "krelay_messages_received_total", NULL, c[MC_RECEIVED_MESSAGES]);
	metrics_family(out, "krelay_received_bytes_total", "counter",
	               "Content bytes of the messages received, as stored (with the Received: "
	               "header krelay adds).");
	metrics_sample_u64(out, "krelay_received_bytes_total", NULL, c[MC_RECEIVED_BYTES]);
	metrics_family(out, "krelay_messages_relayed_total", "counter",
	               "Transactions out in which the next hop took the message for at least "
	               "one recipient.");
	metrics_sample_u64(out, "krelay_messages_relayed_total", NULL, c[MC_RELAYED_MESSAGES]);
	metrics_family(out, "krelay_relayed_bytes_total", "counter",
	               "Content bytes sent to next hops in transactions out.");
	metrics_sample_u64(out, "krelay_relayed_bytes_total", NULL, c[MC_RELAYED_BYTES]);
	counter_by(
	    out, c, "krelay_recipients_total",
	    "Recipient outcomes: relayed (2xx from the next hop), deferred (4xx or no "
	    "answer; each attempt counts), bounced (failed for good: 5xx or expired).",
	    "outcome", outcome,
	    (const enum metrics_counter[]){MC_RCPT_RELAYED, MC_RCPT_DEFERRED, MC_RCPT_BOUNCED}, 3);
	counter_by(out, c, "krelay_connections_opened_total",
	           "Connections opened: SMTP clients accepted (inbound), connections to next "
	           "hops (outbound).",
	           "direction", inout, (const enum metrics_counter[]){MC_CONN_IN, MC_CONN_OUT}, 2);

	metrics_family(out, "krelay_tls_connections_total", "counter",
	               "TLS handshakes completed, by direction and protocol version.");
	static const struct {
		const char *dir, *version;
		enum metrics_counter c;
	} tls[] = {
	    {"inbound", "TLSv1.2", MC_TLS_IN_12},   {"inbound", "TLSv1.3", MC_TLS_IN_13},
	    {"inbound", "other", MC_TLS_IN_OTHER},  {"outbound", "TLSv1.2", MC_TLS_OUT_12},
	    {"outbound", "TLSv1.3", MC_TLS_OUT_13}, {"outbound", "other", MC_TLS_OUT_OTHER},
	};
	for (size_t i = 0; i < sizeof(tls) / sizeof(tls[0]); i++)
		metrics_sample_u64(
		    out, "krelay_tls_connections_total",
		    (const char *const[]){"direction", tls[i].dir, "version", tls[i].version, NULL},
		    c[tls[i].c]);
	metrics_family(out, "krelay_ktls_connections_total", "counter",
	               "TLS connections by whether kernel TLS took record encryption (path tx) "
	               "or decryption (path rx): state on or off.");
	static const struct {
		const char *dir, *path, *state;
		enum metrics_counter c;
	} ktls[] = {
	    {"inbound", "tx", "on", MC_KTLS_IN_TX_ON},
	    {"inbound", "tx", "off", MC_KTLS_IN_TX_OFF},
	    {"inbound", "rx", "on", MC_KTLS_IN_RX_ON},
	    {"inbound", "rx", "off", MC_KTLS_IN_RX_OFF},
	    {"outbound", "tx", "on", MC_KTLS_OUT_TX_ON},
	    {"outbound", "tx", "off", MC_KTLS_OUT_TX_OFF},
	};
	for (size_t i = 0; i < sizeof(ktls) / sizeof(ktls[0]); i++)
		metrics_sample_u64(out, "krelay_ktls_connections_total",
		                   (const char *const[]){"direction", ktls[i].dir, "path",
		                                         ktls[i].path, "state", ktls[i].state,
		                                         NULL},
		                   c[ktls[i].c]);
}

static void render_fsync(struct metrics *m, struct strbuf *out)
{
	static const char *name = "krelay_spool_fsync_seconds";
	uint64_t b[METRICS_FSYNC_BUCKETS + 1] = {0}, sum_ns = 0, cum = 0;
	char bucket[64];

	for (unsigned i = 0; i < m->nworkers; i++) {
		for (size_t k = 0; k <= METRICS_FSYNC_BUCKETS; k++)
			b[k] += load(&m->w[i].fsync_bucket[k]);
		sum_ns += load(&m->w[i].fsync_sum_ns);
	}
	metrics_family(out, name, "histogram",
	               "Spool fsyncs (message files, segments, state files, the queue "
	               "directory): seconds from submission to completion (for a linked "
	               "write and fsync, from the submission of the pair).");
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	for (size_t k = 0; k <= METRICS_FSYNC_BUCKETS; k++) {
		cum += b[k];
		metrics_sample_u64(
		    out, bucket,
		    (const char *const[]){"le", k < METRICS_FSYNC_BUCKETS ? fsync_le[k] : "+Inf",
		                          NULL},
		    cum);
	}
	strbuf_printf(out, "%s_sum %.9f\n%s_count %llu\n", name, (double)sum_ns / 1e9, name,
	              (unsigned long long)cum);
}

static void render_queue(struct metrics *m, struct strbuf *out, time_t now)
{
	struct metrics_dests all = {0};
	uint64_t messages = 0, recipients = 0;
	int64_t oldest = 0;
	size_t n;

	for (unsigned i = 0; i < m->nworkers; i++) {
		struct metrics_worker *w = &m->w[i];
		pthread_mutex_lock(&w->lock);
		const struct metrics_snap *s = w->snap;
		if (s != NULL) {
			messages += s->messages;
			recipients += s->recipients;
			if (s->oldest != 0 && (oldest == 0 || s->oldest < oldest))
				oldest = s->oldest;
			for (size_t k = 0; k < s->n; k++) {
				struct metrics_dest *d = metrics_dests_get(&all, s->d[k].name);
				if (d != NULL)
					dest_add(d, &s->d[k]);
			}
		}
		pthread_mutex_unlock(&w->lock);
	}
	n = all.oom ? 0 : metrics_dests_top(all.d, all.n, METRICS_DEST_TOP);

	metrics_family(out, "krelay_queue_messages", "gauge",
	               "Messages in the queue with a recipient still to be relayed (as of the "
	               "last second).");
	metrics_sample_u64(out, "krelay_queue_messages", NULL, messages);
	metrics_family(out, "krelay_queue_recipients", "gauge",
	               "Recipients in the queue still to be relayed.");
	metrics_sample_u64(out, "krelay_queue_recipients", NULL, recipients);
	metrics_family(out, "krelay_queue_oldest_age_seconds", "gauge",
	               "Age of the oldest message in the queue (0: none).");
	metrics_sample_u64(out, "krelay_queue_oldest_age_seconds", NULL,
	                   oldest != 0 && now > oldest ? (uint64_t)(now - oldest) : 0);

	static const struct {
		const char *name, *type, *help;
	} fam[] = {
	    {"krelay_queue_destination_messages", "gauge",
	     "Messages waiting, by destination (next hop): the 100 with the most recipients "
	     "waiting, the rest summed as destination=\"other\"."},
	    {"krelay_queue_destination_recipients", "gauge",
	     "Recipients waiting, by destination (next hop)."},
	    {"krelay_queue_destination_oldest_age_seconds", "gauge",
	     "Age of the oldest message waiting, by destination (next hop)."},
	    {"krelay_destination_connections", "gauge",
	     "Connections out open or opening, by destination (next hop)."},
	};
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_family(out, fam[f].name, fam[f].type, fam[f].help);
		for (size_t k = 0; k < n; k++) {
			const struct metrics_dest *d = &all.d[k];
			const char *const labels[] = {"destination", d->name, NULL};
			if (f == 0 && d->recipients > 0)
				metrics_sample_u64(out, fam[f].name, labels, d->messages);
			else if (f == 1 && d->recipients > 0)
				metrics_sample_u64(out, fam[f].name, labels, d->recipients);
			else if (f == 2 && d->oldest != 0)
				metrics_sample_u64(out, fam[f].name, labels,
				                   now > d->oldest ? (uint64_t)(now - d->oldest)
				                                   : 0);
			else if (f == 3 && d->connections > 0)
				metrics_sample_u64(out, fam[f].name, labels, d->connections);
		}
	}
	metrics_dests_free(&all);
}

void metrics_render(struct metrics *m, struct strbuf *out, time_t now)
{
	uint64_t c[MC_COUNT] = {0};
	int64_t g[MG_COUNT] = {0};

	for (unsigned i = 0; i < m->nworkers; i++) {
		for (size_t k = 0; k < MC_COUNT; k++)
			c[k] += load(&m->w[i].counter[k]);
		for (size_t k = 0; k < MG_COUNT; k++)
			g[k] += atomic_load_explicit(&m->w[i].gauge[k], memory_order_relaxed);
	}
	metrics_family(out, "krelay_up", "gauge", "1: the relay is up and answering.");
	metrics_sample_u64(out, "krelay_up", NULL, 1);
	metrics_family(out, "krelay_start_time_seconds", "gauge",
	               "When the relay started, in seconds since the Unix epoch.");
	metrics_sample_u64(out, "krelay_start_time_seconds", NULL, (uint64_t)m->started);
	metrics_family(out, "krelay_workers", "gauge",
	               "Worker threads (Workers), each with its own io_uring.");
	metrics_sample_u64(out, "krelay_workers", NULL, m->nworkers);
	render_counters(m, out, c);
	metrics_family(out, "krelay_connections_open", "gauge",
	               "Connections open now: SMTP sessions (inbound), connections to next hops "
	               "open or opening (outbound).");
	metrics_sample_u64(out, "krelay_connections_open",
	                   (const char *const[]){"direction", "inbound", NULL},
	                   g[MG_SESSIONS_IN] > 0 ? (uint64_t)g[MG_SESSIONS_IN] : 0);
	metrics_sample_u64(out, "krelay_connections_open",
	                   (const char *const[]){"direction", "outbound", NULL},
	                   g[MG_CONNS_OUT] > 0 ? (uint64_t)g[MG_CONNS_OUT] : 0);
	render_fsync(m, out);
	render_queue(m, out, now);
	pthread_mutex_lock(&m->plock);
	for (size_t i = 0; i < m->nprov; i++)
		m->prov[i].fn(m->prov[i].arg, out);
	pthread_mutex_unlock(&m->plock);
}
