/* queue_shape: traffic shaping at the destinations (ShapingTable, see
 * shaping.h).  A destination finds its site (its MX hosts) and the limits
 * that the table gives each egress source of its pool; the counters are
 * the relay's, per source x site (throttle.h), so that every worker and
 * every destination of one site count together.  Before a connection is
 * opened or a message sent, the counters are asked; a destination that
 * has to wait arms one timer on the ring's wheel and is kicked again when
 * it fires.  A job waiting so stays in its destination's queue: it is not
 * an attempt and is not deferred.  A reply that a reply rule matches
 * suspends the source x site, or lowers its message rate, and says so in
 * the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "queue_int.h"
#include "safe.h"

static void shape_timer_fire(struct wheel_timer *t)
{
	qdest_kick(t->owner);
}

static struct throttle *throttle_of(const struct qdest *d)
{
	return d->q->ctx.srv->throttle;
}

/* Lets go of the counters and the runtime (the timer stays). */
static void release(struct qdest *d)
{
	struct qshaping *s = d->shape;

	for (unsigned i = 0; i < s->nsrc; i++)
		throttle_put(throttle_of(d), s->src[i].e);
	s->nsrc = 0;
	if (s->rt != NULL)
		runtime_put(s->rt);
	s->rt = NULL;
}

void qshaping_free(struct qdest *d)
{
	if (d->shape == NULL)
		return;
	ring_timer_disarm(d->q->ctx.ring, &d->shape->timer);
	release(d);
	free(d->shape);
	d->shape = NULL;
}

/* The limits of d, from the table of the queue's runtime. */
static void make(struct qdest *d)
{
	struct queue *q = d->q;
	const struct shaping_table *t = q->rt->shaping;
	struct qshaping *s = d->shape;
	const char *mx[DNS_MX_MAX + 1];
	size_t n = 0;
	const struct shaping_pool *pool;

	release(d);
	s->rt = runtime_hold(q->rt);
	s->resolved_at = d->resolved_at;
	if (d->hop.mx && d->nmx > 0) {
		for (size_t i = 0; i < d->nmx; i++)
			if (d->mx[i].host[0] != '\0')
				mx[n++] = d->mx[i].host;
	}
	if (n == 0)
		mx[n++] = d->hop.host; /* a host hop, or an implicit MX */
	shaping_site_name(mx, n, s->site, sizeof(s->site));
	shaping_match(t, d->hop.host, mx, n, -1, &s->base);
	pool = shaping_pool(t, s->base.pool);
	s->nsrc = pool != NULL ? pool->n : 1;
	memset(s->wrr, 0, sizeof(s->wrr));
	for (unsigned i = 0; i < s->nsrc; i++) {
		struct qshaping_src *src = &s->src[i];
		const struct shaping_source *so;
		char key[THROTTLE_KEY_MAX];

		src->source = pool != NULL ? (int)pool->src[i] : -1;
		shaping_match(t, d->hop.host, mx, n, src->source, &src->lim);
		so = src->source >= 0 ? shaping_source(t, (size_t)src->source) : NULL;
		if (src->lim.by_domain)
			snprintf(key, sizeof(key), "%s>domain:%s", so != NULL ? so->name : "-",
			         d->hop.host);
		else
			snprintf(key, sizeof(key), "%s>%s", so != NULL ? so->name : "-", s->site);
		src->e = throttle_get(throttle_of(d), key);
	}
	log_trace("destination %s: shaping by %s (%u source%s)", d->name, throttle_key(s->src[0].e),
	          s->nsrc, s->nsrc == 1 ? "" : "s");
}

bool qshaping_on(struct qdest *d)
{
	struct queue *q = d->q;

	if (q->rt->shaping == NULL) {
		qshaping_free(d);
		return false;
	}
	if (d->shape == NULL) {
		if ((d->shape = calloc(1, sizeof(*d->shape))) == NULL)
			fatalx("out of memory");
		wheel_timer_init(&d->shape->timer, shape_timer_fire, d);
	}
	if (d->shape->rt != q->rt || d->shape->resolved_at != d->resolved_at || d->shape->nsrc == 0)
		make(d);
	return true;
}

/* d waits: its timer fires at now + wait (or earlier, as armed already). */
static void wait_for(struct qdest *d, const struct throttle_verdict *v)
{
	struct qshaping *s = d->shape;
	struct ring *ring = d->q->ctx.ring;
	int64_t due = ring_now(ring) + v->wait_ns;

	if (s->waiting != v->why)
		log_trace("destination %s waits %.3fs (%s)", d->name, (double)v->wait_ns / 1e9,
		          throttle_why_name[v->why]);
	s->waiting = v->why;
	if (!wheel_armed(&s->timer) || s->timer.due > due)
		ring_timer_arm(ring, &s->timer, due);
}

bool qshaping_open(struct qdest *d, struct qshaping_pick *pick)
{
	struct qshaping *s = d->shape;
	const struct shaping_pool *pool = shaping_pool(s->rt->shaping, s->base.pool);
	int64_t now = ring_now(d->q->ctx.ring);
	bool usable[SHAPING_POOL_MAX];
	struct throttle_verdict first = {THROTTLE_OK, INT64_MAX, 0, {0, 0}};

	for (unsigned i = 0; i < s->nsrc; i++)
		usable[i] = true;
	for (unsigned tries = 0; tries < s->nsrc; tries++) {
		int i = pool != NULL ? shaping_pool_next(pool, s->wrr, usable) : 0;
		struct throttle_verdict v;

		if (i < 0)
			break;
		v = throttle_open(s->src[i].e, &s->src[i].lim, now, tredis_up(d->q->store));
		if (v.ask != 0)
			tredis_ask(d->q->store, s->src[i].e, &s->src[i].lim, &v);
		if (v.why == THROTTLE_OK) {
			pick->source = s->src[i].source;
			pick->slot = tredis_up(d->q->store) && s->src[i].lim.max_connections != 0;
			pick->e = throttle_hold(throttle_of(d), s->src[i].e);
			pick->lim = s->src[i].lim;
			s->waiting = THROTTLE_OK;
			return true;
		}
		usable[i] = false;
		if (v.wait_ns < first.wait_ns)
			first = v;
	}
	wait_for(d, &first);
	return false;
}

bool qshaping_message(struct qconn *cn)
{
	struct queue *q = cn->q;
	struct throttle_verdict v =
	    throttle_message(cn->pick.e, &cn->pick.lim, ring_now(q->ctx.ring), tredis_up(q->store));

	if (v.ask != 0)
		tredis_ask(q->store, cn->pick.e, &cn->pick.lim, &v);
	if (v.why == THROTTLE_OK)
		return true;
	wait_for(cn->d, &v);
	return false;
}

/* "SITE" or "SITE from source NAME", made safe for the log (the site
 * is the MX hosts' names, or the recipient domain). */
static void who_of(const struct qconn *cn, char *out, size_t len)
{
	const char *key = throttle_key(cn->pick.e), *gt = strchr(key, '>');
	char site[SAFE_LEN(THROTTLE_KEY_MAX)];

	safe_log(site, sizeof(site), gt + 1);
	if (cn->pick.source < 0)
		snprintf(out, len, "%s", site);
	else
		snprintf(out, len, "%s from source %.*s", site, (int)(gt - key), key);
}

void qshaping_reply(struct qconn *cn, const char *reply)
{
	const struct shaping_reply_rule *r;
	struct qdest *d = cn->d;
	int64_t until;
	char text[SAFE_LEN(SMTP_REPLY_MAX)], who[SAFE_LEN(THROTTLE_KEY_MAX) + 32];

	if (!cn->shaped || reply == NULL || (r = shaping_reply_match(&cn->pick.lim, reply)) == NULL)
		return;
	until = ring_now(cn->q->ctx.ring) + (int64_t)r->duration_s * 1000000000LL;
	safe_log_text(text, sizeof(text), reply);
	who_of(cn, who, sizeof(who));
	if (r->action == SHAPING_SUSPEND) {
		if (throttle_suspend(cn->pick.e, until))
			log_info(
			    "shaping: %s suspended for %us: the reply \"%s\" matched %s line %u",
			    who, r->duration_s, text, cn->rt->cfg.shaping_table, r->line);
		/* its idle connections go; the next look waits for the end */
		qconn_quit_idle(d);
		return;
	}
	if (throttle_slow(cn->pick.e, &r->rate, until))
		log_info("shaping: %s message rate lowered to %u/%us for %us: the reply \"%s\" "
		         "matched %s line %u",
		         who, r->rate.n, r->rate.per_s, r->duration_s, text,
		         cn->rt->cfg.shaping_table, r->line);
}

void qshaping_tx(struct qconn *cn, const struct smtp_tx *tx)
{
	for (size_t i = 0; cn->shaped && i < tx->nrcpt; i++) {
		if (tx->rcpts[i].code >= 400 &&
		    shaping_reply_match(&cn->pick.lim, tx->rcpts[i].reply)) {
			qshaping_reply(cn, tx->rcpts[i].reply);
			return;
		}
	}
}

bool qshaping_again(struct qconn *cn, struct qshaping_pick *pick)
{
	if (!cn->shaped || cn->rt != cn->q->rt)
		return false;
	*pick = cn->pick;
	cn->pick.slot = false; /* its slot in the store goes with the job */
	throttle_count(pick->e);
	pick->e = throttle_hold(throttle_of(cn->d), pick->e);
	return true;
}

void qshaping_conn_end(struct qconn *cn)
{
	if (!cn->shaped)
		return;
	cn->shaped = false;
	throttle_close(cn->pick.e);
	if (cn->pick.slot)
		tredis_release(cn->q->store, cn->pick.e);
	throttle_put(cn->q->ctx.srv->throttle, cn->pick.e);
	cn->pick.e = NULL;
}
