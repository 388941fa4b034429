/* queue_dest: destinations (next hops), Postfix's queue per next hop.
 *
 * A destination is made when a recipient is first routed to it and found
 * by name in a hash.  It holds a FIFO of jobs, its addresses (looked up
 * through DNS: MX records in preference order, then each host's A/AAAA;
 * or the host itself; or an address literal), the memory of TLS with its
 * peer, and its connections (opened up to the worker's share of
 * DestinationConcurrency, or reused while idle).  Unused for
 * QDEST_UNUSED_KEEP_S it is freed; its TLS memory stays in a small cache. */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "log.h"
#include "metrics.h"
#include "queue_int.h"
#include "safe.h"
#include "tls_policy.h"
#include "tlsrpt_log.h"

#define QDEST_SWEEP_S 60 /* how often unused destinations are looked for */

static const char *const qdest_addrs_name[] = {
    [QDEST_UNRESOLVED] = "unresolved",
    [QDEST_RESOLVING] = "resolving",
    [QDEST_RESOLVED] = "resolved",
    [QDEST_FAILED] = "failed",
};
static const unsigned qdest_may_enter[] = {
    [QDEST_UNRESOLVED] = TO(QDEST_RESOLVING),
    /* a lookup ends resolved or failed, or cancelled when the queue stops */
    [QDEST_RESOLVING] = TO(QDEST_RESOLVED) | TO(QDEST_FAILED) | TO(QDEST_UNRESOLVED),
    [QDEST_RESOLVED] = TO(QDEST_RESOLVING),
    [QDEST_FAILED] = TO(QDEST_RESOLVING),
};

static void qdest_enter(struct qdest *d, enum qdest_addrs to)
{
	static const struct state_table qdest_states = {
	    "destination", qdest_addrs_name, qdest_may_enter,
	    sizeof(qdest_may_enter) / sizeof(qdest_may_enter[0])};

	d->addrs = state_enter(&qdest_states, d->addrs, to, "%s", d->name);
}

/* ---- by name ---------------------------------------------------------------- */

static void hash_grow(struct queue *q)
{
	size_t n = q->dest_buckets ? 2 * q->dest_buckets : 64;
	struct qdest **b = calloc(n, sizeof(*b));

	if (b == NULL)
		fatalx("out of memory");
	for (struct qdest *d = q->dests; d != NULL; d = d->next) {
		d->hnext = b[d->hash & (n - 1)];
		b[d->hash & (n - 1)] = d;
	}
	free(q->dest_hash);
	q->dest_hash = b;
	q->dest_buckets = n;
}

/* ---- TLS memory kept after a destination goes ------------------------------ */

static bool tls_remembers(const struct qdest_tls *t)
{
	return t->session != NULL || t->clear_next || t->no_ktls;
}

static void tls_keep(struct queue *q, struct qdest_tls *t)
{
	struct qdest_tls *slot = NULL;

	if (!tls_remembers(t))
		return;
	for (size_t i = 0; i < QDEST_TLS_KEEP && slot == NULL; i++)
		if (strcmp(q->tls_kept[i].name, t->name) == 0)
			slot = &q->tls_kept[i];
	if (slot == NULL) /* the oldest goes */
		slot = &q->tls_kept[q->tls_kept_next++ % QDEST_TLS_KEEP];
	SSL_SESSION_free(slot->session);
	*slot = *t;
	t->session = NULL;
}

static void tls_take(struct queue *q, struct qdest *d)
{
	for (size_t i = 0; i < QDEST_TLS_KEEP; i++) {
		struct qdest_tls *t = &q->tls_kept[i];
		if (t->name[0] != '\0' && strcmp(t->name, d->name) == 0) {
			d->tls = *t;
			memset(t, 0, sizeof(*t));
			return;
		}
	}
}

static void forget(struct qdest_tls *t)
{
	SSL_SESSION_free(t->session);
	t->session = NULL;
	t->clear_next = false;
}

void qdest_forget_tls(struct queue *q)
{
	for (struct qdest *d = q->dests; d != NULL; d = d->next) {
		forget(&d->tls);
		/* a new TLSPolicy (dane or not) needs its own lookup */
		if (d->addrs == QDEST_RESOLVED)
			d->resolved_at = 0;
	}
	for (size_t i = 0; i < QDEST_TLS_KEEP; i++)
		forget(&q->tls_kept[i]);
}

/* ---- making and freeing ---------------------------------------------------- */

struct qdest *qdest_get(struct queue *q, const struct route_hop *hop)
{
	char name[sizeof(((struct qdest *)0)->name)];
	struct qdest *d;
	uint32_t h;

	route_hop_text(hop, name, sizeof(name));
	h = fnv1a(name);
	if (q->dest_buckets > 0)
		for (d = q->dest_hash[h & (q->dest_buckets - 1)]; d != NULL; d = d->hnext)
			if (d->hash == h && strcmp(d->name, name) == 0)
				return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		fatalx("out of memory");
	d->q = q;
	d->hop = *hop;
	d->hash = h;
	memcpy(d->name, name, sizeof(d->name));
	memcpy(d->tls.name, name, sizeof(d->tls.name));
	tls_take(q, d);
	d->next = q->dests;
	if (q->dests)
		q->dests->prev = d;
	q->dests = d;
	if (++q->ndests > 2 * q->dest_buckets) {
		hash_grow(q); /* links d too */
	} else {
		d->hnext = q->dest_hash[h & (q->dest_buckets - 1)];
		q->dest_hash[h & (q->dest_buckets - 1)] = d;
	}
	log_trace("destination %s made", d->name);
	return d;
}

static void dane_forget(struct qdest *d)
{
	for (size_t i = 0; i < DNS_MX_MAX; i++) {
		dane_set_free(d->dane_host[i].tlsa);
		d->dane_host[i].tlsa = NULL;
		d->dane_host[i].v = DANE_NONE;
	}
	d->dane_why[0] = '\0';
}

static void dest_free(struct qdest *d, bool keep_tls)
{
	struct queue *q = d->q;
	struct qdest **p = &q->dest_hash[d->hash & (q->dest_buckets - 1)];

	while (*p != d)
		p = &(*p)->hnext;
	*p = d->hnext;
	if (d->prev)
		d->prev->next = d->next;
	else
		q->dests = d->next;
	if (d->next)
		d->next->prev = d->prev;
	q->ndests--;
	if (keep_tls)
		tls_keep(q, &d->tls);
	SSL_SESSION_free(d->tls.session);
	dane_forget(d);
	qshaping_free(d);
	free(d);
}

/* Nothing refers to it: no job (queued, out, or waiting to be logged), no
 * connection, no lookup under way. */
static bool unused(const struct qdest *d)
{
	return d->jobs == 0 && d->active == 0 && d->idle == NULL && d->addrs != QDEST_RESOLVING;
}

void qdest_sweep(struct queue *q, time_t now)
{
	if (now - q->dest_swept < QDEST_SWEEP_S)
		return;
	q->dest_swept = now;
	for (struct qdest *d = q->dests, *next; d != NULL; d = next) {
		next = d->next;
		switch (qpolicy_dest_sweep(unused(d), d->unused_since, now)) {
		case QSWEEP_KEEP:
			if (!unused(d))
				d->unused_since = 0;
			break;
		case QSWEEP_MARK:
			d->unused_since = now;
			break;
		case QSWEEP_FREE:
			log_trace("destination %s freed (unused)", d->name);
			dest_free(d, true);
			break;
		}
	}
}

void qdest_free_all(struct queue *q)
{
	while (q->dests != NULL)
		dest_free(q->dests, false);
	for (size_t i = 0; i < QDEST_TLS_KEEP; i++)
		SSL_SESSION_free(q->tls_kept[i].session);
	free(q->dest_hash);
}

/* ---- the FIFO -------------------------------------------------------------- */

void qdest_push(struct qdest *d, struct qjob *j)
{
	j->next = NULL;
	if (d->tail)
		d->tail->next = j;
	else
		d->head = j;
	d->tail = j;
}

struct qjob *qdest_pop(struct qdest *d)
{
	struct qjob *j = d->head;

	if (j != NULL) {
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		j->next = NULL;
	}
	return j;
}

int qdest_policy(const struct qdest *d)
{
	return tls_policy_lookup(d->q->rt->tls_policies, d->hop.host, queue_cfg(d->q)->tls_policy);
}

int qdest_conn_policy(const struct qdest *d, size_t addr_idx, const struct dane_tlsa_set **tlsa,
                      bool *sts)
{
	int policy = qdest_policy(d);
	const struct qdest_dane_host *h;

	*tlsa = NULL;
	*sts = false;
	if (!d->dane || !TLS_POLICY_IS_DANE(policy)) {
		if (TLS_POLICY_IS_DANE(policy))
			return TLS_POLICY_ENCRYPT; /* looked up before a reload: see resolve */
		if (d->sts_enforce && policy == TLS_POLICY_MAY && d->q->rt->sts_ctx != NULL) {
			*sts = true;
			return TLS_POLICY_VERIFY;
		}
		return policy;
	}
	h = &d->dane_host[d->hop.mx && d->nmx > 0 ? d->addr_mx[addr_idx] : 0];
	switch (h->v) {
	case DANE_AUTH:
		*tlsa = h->tlsa;
		return TLS_POLICY_DANE;
	case DANE_ENCRYPT:
		return TLS_POLICY_ENCRYPT;
	default: /* DANE_NONE under dane (a defer's addresses are not kept) */
		if (d->sts_enforce && d->q->rt->sts_ctx != NULL) {
			*sts = true; /* RFC 8461 section 2: DANE first, else MTA-STS */
			return TLS_POLICY_VERIFY;
		}
		return TLS_POLICY_MAY;
	}
}

/* ---- addresses ------------------------------------------------------------- */

static void resolved_ok(struct qdest *d)
{
	d->resolved_at = time(NULL);
	qdest_enter(d, QDEST_RESOLVED);
	qdest_kick(d);
}

static void resolve_failed(struct qdest *d, bool permanent, const char *why)
{
	d->resolved_at = time(NULL);
	d->failure.permanent = permanent;
	snprintf(d->failure.why, sizeof(d->failure.why), "%s", why);
	qdest_enter(d, QDEST_FAILED);
	qdest_kick(d);
}

/* The queue stopped while a lookup was under way: it ends here. */
static bool lookup_cancelled(struct qdest *d)
{
	if (!d->q->stopping)
		return false;
	qdest_enter(d, QDEST_UNRESOLVED);
	return true;
}

/* The resolver for d's lookups: validating for DANE, made at first need
 * (so a reload that turns DANE on needs no restart). */
static struct dns *resolver(struct qdest *d, char *err, size_t errlen)
{
	struct queue *q = d->q;
	const struct config *c = queue_cfg(q);

	if (!d->dane)
		return q->dns;
	if (q->dnssec == NULL && dns_init_dnssec(&q->dnssec, q->ctx.ring, c->dns_server,
	                                         q->rt->trust_anchor, err, errlen) < 0)
		return NULL;
	return q->dnssec;
}

static void mx_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                       size_t n);
static void sts_start(struct qdest *d);

/* Looks up the next MX host's addresses; the list grows in MX order. */
static void mx_next_host(struct qdest *d)
{
	if (lookup_cancelled(d))
		return;
	if (d->mx_next >= d->nmx) {
		char why[sizeof(d->failure.why)];

		if (d->naddr > 0 && d->sts_want)
			sts_start(d); /* then resolved_ok, or not */
		else if (d->naddr > 0)
			resolved_ok(d);
		else if (d->dane_why[0] != '\0') {
			snprintf(why, sizeof(why), "no MX host usable now: %s", d->dane_why);
			resolve_failed(d, false, why);
		} else
			resolve_failed(d, false, "no address for any MX host");
		return;
	}
	d->q->dns_pending++;
	dns_query_addr(d->dnsr, d->mx[d->mx_next++].host, mx_addr_cb, d);
}

/* Appends addresses (of MX host mx, when routing by MX). */
static void add_addrs(struct qdest *d, const struct dns_addr *a, size_t n, size_t mx)
{
	for (size_t i = 0; i < n && d->naddr < DNS_ADDR_MAX; i++) {
		d->addr_mx[d->naddr] = (unsigned char)mx;
		d->addr[d->naddr++] = a[i];
	}
}

const char *qdest_host_of(const struct qdest *d, size_t addr_idx)
{
	if (d->hop.mx && d->nmx > 0 && addr_idx < d->naddr)
		return d->mx[d->addr_mx[addr_idx]].host;
	return d->hop.host;
}

/* ---- DANE: each host's TLSA records (RFC 7672 section 2.2) ---------------- */

/* The host whose addresses were just added: its index, and its name. */
static size_t dane_idx(const struct qdest *d)
{
	return d->hop.mx && d->nmx > 0 ? d->mx_next - 1 : 0;
}

static const char *dane_name(const struct qdest *d)
{
	return d->hop.mx && d->nmx > 0 ? d->mx[d->mx_next - 1].host : d->hop.host;
}

/* After the host's lookups: on to the next MX host, or done. */
static void dane_next(struct qdest *d)
{
	if (d->hop.mx && d->nmx > 0) {
		mx_next_host(d);
	} else if (d->naddr > 0) {
		resolved_ok(d);
	} else {
		char why[sizeof(d->failure.why)];
		snprintf(why, sizeof(why), "%s", d->dane_why);
		resolve_failed(d, false, why);
	}
}

/* Records the host's verdict; a host deferred loses the addresses just added. */
static void dane_verdict(struct qdest *d, const struct dane_facts *f)
{
	const char *why;
	char name[SAFE_LEN(DNS_NAME_MAX + 1)], dname[SAFE_LEN(sizeof(d->name))];
	enum dane_verdict v = dane_decide(qdest_policy(d), f, &why);
	struct qdest_dane_host *h = &d->dane_host[dane_idx(d)];
	const char *bogus = f->addr_st == DNS_BOGUS || (f->tlsa_asked && f->tlsa_st == DNS_BOGUS)
	                        ? dns_why_bogus(d->dnsr)
	                        : "";
	char bogus_safe[SAFE_LEN(256)];

	safe_log(name, sizeof(name), dane_name(d));
	safe_log(dname, sizeof(dname), d->name);
	safe_log_text(bogus_safe, sizeof(bogus_safe), bogus);
	h->v = v;
	dane_set_free(h->tlsa);
	h->tlsa = NULL;
	if (v == DANE_AUTH && (h->tlsa = dane_set_copy(f->tlsa, f->ntlsa)) == NULL)
		fatalx("out of memory");
	if (v == DANE_DEFER) {
		if (f->addr_st == DNS_BOGUS || f->tlsa_st == DNS_BOGUS ||
		    f->tlsa_st == DNS_TEMPFAIL)
			qdest_tlsrpt(d, SIZE_MAX, TLSRPT_DNSSEC_INVALID, NULL);
		else /* dane-only, and no validated TLSA records for the host */
			qdest_tlsrpt(d, SIZE_MAX, TLSRPT_DANE_REQUIRED, NULL);
		d->naddr = d->addr_mark;
		snprintf(d->dane_why, sizeof(d->dane_why), "%.240s: %.70s", name, why);
	}
	log_info("%s: DANE %s: %s (%s)%s%s%s", dname, name, dane_verdict_name(v), why,
	         bogus[0] ? " why_bogus=\"" : "", bogus_safe, bogus[0] ? "\"" : "");
}

static void tlsa_cb(void *arg, enum dns_status st, bool secure, const struct dns_tlsa *t, size_t n)
{
	struct qdest *d = arg;
	struct dane_facts f = {.mx_secure = d->mx_secure,
	                       .addr_st = DNS_OK,
	                       .addr_secure = true,
	                       .tlsa_asked = true,
	                       .tlsa_st = st,
	                       .tlsa_secure = secure,
	                       .tlsa = t,
	                       .ntlsa = n};

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	dane_verdict(d, &f);
	dane_next(d);
}

/* A DANE destination's host answered its address lookup: its TLSA records
 * next, when the answers so far were all secure.  Returns true when the
 * host's lookups go on (tlsa_cb continues). */
static bool dane_addrs(struct qdest *d, enum dns_status st, bool secure, const struct dns_addr *a,
                       size_t n)
{
	struct dane_facts f = {.mx_secure = d->mx_secure, .addr_st = st, .addr_secure = secure};

	d->addr_mark = d->naddr;
	if (st == DNS_OK)
		add_addrs(d, a, n, dane_idx(d));
	if (st == DNS_OK && dane_want_tlsa(&f)) {
		d->q->dns_pending++;
		dns_query_tlsa(d->dnsr, dane_name(d), d->hop.port, tlsa_cb, d);
		return true;
	}
	if (st == DNS_OK || st == DNS_BOGUS)
		dane_verdict(d, &f);
	return false;
}

static void mx_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                       size_t n)
{
	struct qdest *d = arg;

	d->q->dns_pending--;
	if (d->dane) {
		if (!lookup_cancelled(d) && !dane_addrs(d, st, secure, a, n))
			mx_next_host(d);
		return;
	}
	if (st == DNS_OK)
		add_addrs(d, a, n, d->mx_next - 1); /* (mx_next moved past its host) */
	mx_next_host(d);
}

static void host_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                         size_t n)
{
	struct qdest *d = arg;

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	if (st == DNS_OK && d->dane) {
		if (!dane_addrs(d, st, secure, a, n))
			dane_next(d);
		return;
	}
	if (st == DNS_OK) {
		add_addrs(d, a, n, 0);
		resolved_ok(d);
	} else if (st == DNS_TEMPFAIL) {
		resolve_failed(d, false, "DNS lookup failed temporarily");
	} else if (st == DNS_BOGUS) {
		resolve_failed(d, false, "address records bogus (DNSSEC validation failed)");
	} else {
		/* a recipient domain with neither MX nor address takes no mail
		 * (RFC 5321 5.1): final; a next hop named in the configuration
		 * (SmartHost, a [host] route) is the operator's to mend: retried */
		resolve_failed(d, d->hop.mx, "host not found (no A/AAAA record)");
	}
}

static unsigned rnd(void *ctx, unsigned bound)
{
	return bound ? (unsigned)random() % bound : 0;
}

static void mx_cb(void *arg, enum dns_status st, bool secure, const struct dns_mx *mx, size_t n)
{
	struct qdest *d = arg;
	int k;

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	d->mx_secure = secure;
	if (st == DNS_NODATA || (st == DNS_OK && n == 0)) {
		/* RFC 5321 5.1: no MX, the domain itself is the host (and for
		 * DANE, the denial's security stands for the MX step's) */
		d->q->dns_pending++;
		dns_query_addr(d->dnsr, d->hop.host, host_addr_cb, d);
		return;
	}
	if (st == DNS_NXDOMAIN) {
		resolve_failed(d, true, "domain does not exist");
		return;
	}
	if (st == DNS_BOGUS) {
		resolve_failed(d, false, "MX records bogus (DNSSEC validation failed)");
		return;
	}
	if (st != DNS_OK) {
		resolve_failed(d, false, "DNS MX lookup failed temporarily");
		return;
	}
	memcpy(d->mx, mx, (n < DNS_MX_MAX ? n : DNS_MX_MAX) * sizeof(*mx));
	k = route_order_mx(d->mx, n < DNS_MX_MAX ? n : DNS_MX_MAX, rnd, NULL);
	if (k < 0) {
		resolve_failed(d, true, "null MX: the domain accepts no mail (RFC 7505)");
		return;
	}
	d->nmx = (size_t)k;
	d->mx_next = 0;
	mx_next_host(d);
}

static void resolve(struct qdest *d)
{
	struct sockaddr_in *s4;
	struct sockaddr_in6 *s6;
	char err[256];

	d->naddr = d->nmx = 0;
	dane_forget(d);
	d->dane = TLS_POLICY_IS_DANE(qdest_policy(d));
	d->sts_want = queue_cfg(d->q)->mta_sts && d->hop.mx &&
	              (qdest_policy(d) == TLS_POLICY_MAY || qdest_policy(d) == TLS_POLICY_DANE);
	d->sts_enforce = false;
	d->sts_have = false;
	d->sts_testing = false;
	/* a configured host name stands for itself: only its own address and
	 * TLSA answers need to be secure (RFC 7672 section 2.2.2) */
	d->mx_secure = !d->hop.mx;
	qdest_enter(d, QDEST_RESOLVING);
	if (d->hop.literal) {
		struct dns_addr a;
		memset(&a, 0, sizeof(a));
		s4 = (struct sockaddr_in *)&a.sa;
		s6 = (struct sockaddr_in6 *)&a.sa;
		if (inet_pton(AF_INET, d->hop.host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			a.len = sizeof(*s4);
		} else if (inet_pton(AF_INET6, d->hop.host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			a.len = sizeof(*s6);
		}
		if (a.len && d->dane) {
			/* an address has no name to look TLSA up by */
			struct dane_facts f = {.mx_secure = true, .addr_st = DNS_OK};
			d->dnsr = NULL;
			d->addr_mark = 0;
			add_addrs(d, &a, 1, 0);
			dane_verdict(d, &f);
			dane_next(d);
			return;
		}
		add_addrs(d, &a, a.len ? 1 : 0, 0);
		if (a.len)
			resolved_ok(d);
		else
			resolve_failed(d, true, "bad address literal");
		return;
	}
	if ((d->dnsr = resolver(d, err, sizeof(err))) == NULL) {
		char why[sizeof(d->failure.why)];
		snprintf(why, sizeof(why), "DNSSEC resolver: %.300s", err);
		resolve_failed(d, false, why);
	} else if (d->hop.mx) {
		d->q->dns_pending++;
		dns_query_mx(d->dnsr, d->hop.host, mx_cb, d);
	} else {
		d->q->dns_pending++;
		dns_query_addr(d->dnsr, d->hop.host, host_addr_cb, d);
	}
}

/* ---- MTA-STS (RFC 8461 section 5) --------------------------------------- */

static void sts_done(void *arg, const struct sts_result *r);

static void sts_addr_cb(void *arg, enum dns_status st, bool secure, const struct dns_addr *a,
                        size_t n)
{
	struct qdest *d = arg;

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	d->q->dns_pending++;
	sts_get(d->q->sts, d->hop.host, d->sts_id, st == DNS_OK && n > 0 ? &a[0] : NULL,
	        queue_cfg(d->q)->mta_sts_ca_file, sts_done, d);
}

static void sts_txt_cb(void *arg, enum dns_status st, bool secure, const struct dns_txt *t,
                       size_t n)
{
	struct qdest *d = arg;
	char id[STS_ID_MAX + 1], name[DNS_NAME_MAX + 16];
	int found = 0, bad = 0;

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	d->sts_id[0] = '\0';
	for (size_t i = 0; st == DNS_OK && i < n; i++) {
		int k = sts_txt_parse(t[i].s, t[i].len, id);
		if (k == 1 && ++found == 1)
			memcpy(d->sts_id, id, sizeof(id));
		bad += k < 0;
	}
	/* section 3.1: more than one record (or a bad one) is as none; with
	 * none (or a failed lookup) only a cached policy can apply */
	if (found != 1 || bad > 0) {
		d->sts_id[0] = '\0';
		d->q->dns_pending++;
		sts_get(d->q->sts, d->hop.host, "", NULL, queue_cfg(d->q)->mta_sts_ca_file,
		        sts_done, d);
		return;
	}
	snprintf(name, sizeof(name), "mta-sts.%s", d->hop.host);
	d->q->dns_pending++;
	dns_query_addr(d->dnsr, name, sts_addr_cb, d);
}

static void sts_start(struct qdest *d)
{
	struct queue *q = d->q;
	const struct config *c = queue_cfg(q);
	char name[DNS_NAME_MAX + 16], err[256];

	if (q->sts == NULL) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/sts", c->queue_directory);
		if (sts_init(&q->sts, q->ctx.ring, dir, err, sizeof(err)) < 0) {
			char why[sizeof(d->failure.why)];
			snprintf(why, sizeof(why), "%.300s", err);
			resolve_failed(d, false, why);
			return;
		}
	}
	snprintf(name, sizeof(name), "_mta-sts.%s", d->hop.host);
	d->q->dns_pending++;
	dns_query_txt(d->dnsr, name, sts_txt_cb, d);
}

/* Drops the addresses of MX hosts the policy does not name. */
static void sts_filter(struct qdest *d, const struct sts_policy *p)
{
	size_t k = 0;

	for (size_t i = 0; i < d->naddr; i++)
		if (sts_mx_match(p, qdest_host_of(d, i))) {
			d->addr[k] = d->addr[i];
			d->addr_mx[k] = d->addr_mx[i];
			k++;
		}
	d->naddr = k;
}

static void sts_done(void *arg, const struct sts_result *r)
{
	struct qdest *d = arg;
	char dname[SAFE_LEN(sizeof(d->name))], why[SAFE_LEN(sizeof(r->why))];
	char host[SAFE_LEN(DNS_NAME_MAX + 1)];
	bool dane_auth = false;

	d->q->dns_pending--;
	if (lookup_cancelled(d))
		return;
	safe_log(dname, sizeof(dname), d->name);
	safe_log_text(why, sizeof(why), r->why);
	if (!r->have) {
		log_info("%s: MTA-STS: no policy (%s)", dname, why);
		if (d->sts_id[0] != '\0') /* a TXT record, and no policy to go with it */
			qdest_tlsrpt(d, SIZE_MAX,
			             strncmp(r->why, "bad policy", 10) == 0
			                 ? TLSRPT_STS_INVALID
			                 : TLSRPT_STS_FETCH_ERROR,
			             NULL);
		resolved_ok(d);
		return;
	}
	d->sts_have = r->policy.mode != STS_MODE_NONE;
	d->sts_testing = r->policy.mode == STS_MODE_TESTING;
	log_info("%s: MTA-STS: policy id=%s mode=%s max_age=%u mx=%zu (%s)%s%s%s", dname, r->id,
	         sts_mode_name(r->policy.mode), r->policy.max_age, r->policy.nmx, r->source,
	         r->why[0] ? " why=\"" : "", why, r->why[0] ? "\"" : "");
	for (size_t i = 0; i < DNS_MX_MAX && d->dane; i++)
		dane_auth = dane_auth || d->dane_host[i].v == DANE_AUTH;
	for (size_t i = 0; i < d->nmx && r->policy.mode != STS_MODE_NONE; i++)
		if (!sts_mx_match(&r->policy, d->mx[i].host))
			log_info("%s: MTA-STS: %s is not in the policy%s", dname,
			         safe_log(host, sizeof(host), d->mx[i].host),
			         r->policy.mode == STS_MODE_ENFORCE
			             ? (dane_auth ? " (DANE applies instead)" : ": not used")
			             : " (mode testing: used all the same)");
	if (r->policy.mode == STS_MODE_ENFORCE && !dane_auth) {
		/* section 4: only hosts the policy names, over TLS that verifies */
		sts_filter(d, &r->policy);
		d->sts_enforce = true;
		if (d->naddr == 0) {
			qdest_tlsrpt(d, SIZE_MAX, TLSRPT_VALIDATION_FAILURE, NULL);
			resolve_failed(d, false, "no MX host matches its MTA-STS policy");
			return;
		}
	}
	resolved_ok(d);
}

void qdest_tlsrpt(const struct qdest *d, size_t addr_idx, enum tlsrpt_result r,
                  const struct smtp_client *c)
{
	struct tlsrpt_event e;
	const void *bin;

	if (!queue_cfg(d->q)->tlsrpt || !d->hop.mx || d->q->ctx.srv->tlsrpt == NULL)
		return;
	memset(&e, 0, sizeof(e));
	e.when = time(NULL);
	snprintf(e.domain, sizeof(e.domain), "%s", d->hop.host);
	e.result = r;
	e.policy = TLSRPT_NO_POLICY;
	if (addr_idx < d->naddr) {
		const struct qdest_dane_host *h =
		    &d->dane_host[d->hop.mx && d->nmx > 0 ? d->addr_mx[addr_idx] : 0];
		const struct sockaddr_storage *sa = &d->addr[addr_idx].sa;

		if (d->dane && (h->v == DANE_AUTH || h->v == DANE_ENCRYPT))
			e.policy = TLSRPT_TLSA;
		else if (d->sts_have)
			e.policy = TLSRPT_STS;
		snprintf(e.mx_host, sizeof(e.mx_host), "%s", qdest_host_of(d, addr_idx));
		bin = sa->ss_family == AF_INET6
		          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
		          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
		if (inet_ntop(sa->ss_family, bin, e.mx_ip, sizeof(e.mx_ip)) == NULL)
			e.mx_ip[0] = '\0';
	} else {
		/* a lookup: DNSSEC or TLSA failures are DANE's, the rest MTA-STS's */
		e.policy = r == TLSRPT_DNSSEC_INVALID || r == TLSRPT_DANE_REQUIRED ? TLSRPT_TLSA
		                                                                   : TLSRPT_STS;
	}
	snprintf(e.sending_ip, sizeof(e.sending_ip), "%s", c != NULL ? smtp_client_local(c) : "");
	tlsrpt_log_record(d->q->ctx.srv->tlsrpt, &e);
}

/* Fails every queued job of d with the resolver's verdict. */
static void fail_jobs(struct qdest *d)
{
	const struct qdest_failure *f = &d->failure;
	char text[SMTP_REPLY_MAX];
	struct qjob *j;

	snprintf(text, sizeof(text), "%s %.128s: %.360s", f->permanent ? "550 5.1.2" : "451 4.4.3",
	         d->hop.host, f->why);
	while ((j = qdest_pop(d)) != NULL)
		qjob_fail(j, f->permanent ? 550 : 451, text);
}

/* ---- giving jobs to connections -------------------------------------------- */

void qdest_kick(struct qdest *d)
{
	struct queue *q = d->q;
	struct qconn *cn;
	unsigned limit;

	d->unused_since = 0; /* in use: the sweep counts from its next look */
	if (d->head == NULL)
		return;
	switch (qpolicy_dest_step(d->addrs, d->resolved_at, time(NULL))) {
	case QSTEP_WAIT:
		return;
	case QSTEP_RESOLVE:
		resolve(d);
		return;
	case QSTEP_FAIL_JOBS:
		fail_jobs(d); /* the lookup just failed: no point asking again */
		return;
	case QSTEP_CONNECT:
		break;
	}
	limit = qpolicy_share(queue_cfg(q)->destination_concurrency, q->ctx.srv->workers,
	                      q->ctx.worker_index);
	if (qshaping_on(d)) {
		struct qshaping_pick pick;
		struct qconn *next;

		/* idle connections first, each as its source x site allows */

		for (cn = d->idle; d->head != NULL && cn != NULL; cn = next) {
			next = cn->next_idle;
			if (qshaping_message(cn)) {
				qconn_unidle(cn);
				qconn_send(cn, qdest_pop(d));
			}
		}
		while (d->head != NULL && d->active < limit && qshaping_open(d, &pick))
			qconn_start(d, 0, qdest_pop(d), &pick);
		return;
	}
	while (d->head != NULL && (cn = qconn_take_idle(d)) != NULL)
		qconn_send(cn, qdest_pop(d));
	while (d->head != NULL && d->active < limit)
		qconn_start(d, 0, qdest_pop(d), NULL);
}

void qdest_kick_all(struct queue *q)
{
	for (struct qdest *d = q->dests; d != NULL; d = d->next)
		if (d->head != NULL)
			qdest_kick(d);
}

/* ---- the picture for the metrics ----------------------------------------- */

void queue_metrics_publish(struct queue *q)
{
	struct metrics_dests t = {0};
	uint64_t messages = q->nparked, recipients = 0;
	int64_t oldest = 0;
	char name[METRICS_DEST_NAME];

	if (q->ctx.mw == NULL)
		return;
	for (struct qdest *d = q->dests; d != NULL; d = d->next) {
		struct metrics_dest *e = d->active > 0 ? metrics_dests_get(&t, d->name) : NULL;
		if (e != NULL)
			e->connections += d->active;
	}
	/* each pending recipient where the current configuration routes it
	 * (as the next attempt will): also those of messages waiting for a
	 * retry, which are at no destination now */
	for (struct qmsg *m = q->msgs; m != NULL; m = m->next) {
		bool waiting = false;
		for (size_t i = 0; i < m->env.rcpt_count; i++) {
			const char *addr = m->env.rcpts[i].addr, *at = strrchr(addr, '@');
			struct route_hop hop;
			struct metrics_dest *e;

			if (m->env.rcpts[i].state != SPOOL_RCPT_PENDING)
				continue;
			route_lookup(q->rt->transports,
			             q->rt->has_smarthost ? &q->rt->smarthost : NULL,
			             at ? at + 1 : "", &hop);
			route_hop_text(&hop, name, sizeof(name));
			recipients++;
			waiting = true;
			if ((e = metrics_dests_get(&t, name)) == NULL)
				continue;
			e->recipients++;
			if (e->last_msg != m) {
				e->last_msg = m;
				e->messages++;
			}
			if (m->env.arrival > 0 && (e->oldest == 0 || m->env.arrival < e->oldest))
				e->oldest = m->env.arrival;
		}
		if (!waiting)
			continue;
		messages++;
		if (m->env.arrival > 0 && (oldest == 0 || m->env.arrival < oldest))
			oldest = m->env.arrival;
	}
	metrics_publish(q->ctx.mw, &t, messages, recipients, oldest);
}
