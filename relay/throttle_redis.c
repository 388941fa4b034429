/* throttle_redis: see throttle_redis.h. */
#include "throttle_redis.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RETRY_NS     (1000LL * 1000 * 1000) /* connect again after */
#define REFRESH_NS   (2000LL * 1000 * 1000) /* the node's counts set this often */
#define ANSWER_NS    (2000LL * 1000 * 1000) /* no answer for this long: unreachable */
#define COUNT_TTL_MS "10000"                /* a node's count outlives it this long */

/* GCRA in the store: up to ARGV[3] cells at ARGV[1] µs apart with a
 * tolerance of ARGV[2] µs, on the store's clock; {cells, µs to wait}. */
static const char grant_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "local n = math.floor((now + tau - tat) / T) + 1\n"
    "if n > want then n = want end\n"
    "if n < 1 then return {0, tat - tau - now} end\n"
    "tat = tat + n * T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "           math.floor((tat - now) / 1000) + 1000)\n"
    "return {n, 0}\n";

/* One connection slot when the nodes' counts leave room under ARGV[2]. */
static const char slot_lua[] =
    "local total = 0\n"
    "for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local v = redis.call('GET', KEYS[1] .. ':' .. n)\n"
    "  if v then total = total + tonumber(v) else redis.call('SREM', KEYS[1], n) end\n"
    "end\n"
    "if total >= tonumber(ARGV[2]) then return {0, 0} end\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "redis.call('INCR', KEYS[1] .. ':' .. ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1] .. ':' .. ARGV[1], ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return {1, 0}\n";

/* ARGV[1] connections of this node closed (or slots given back). */
static const char release_lua[] = "local v = redis.call('DECRBY', KEYS[1], ARGV[1])\n"
                                  "if v <= 0 then redis.call('DEL', KEYS[1]) end\n"
                                  "return v\n";

/* The node's count lives on; set to ARGV[2] only when it is gone (the
 * store restarted, or it expired): never over counts that slots and
 * releases in flight on other workers' connections are changing. */
static const char count_lua[] =
    "local k = KEYS[1] .. ':' .. ARGV[1]\n"
    "if redis.call('PEXPIRE', k, ARGV[3]) == 0 and tonumber(ARGV[2]) > 0 then\n"
    "  redis.call('SET', k, ARGV[2], 'PX', ARGV[3])\n"
    "end\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

enum tredis_state { TR_DOWN, TR_CONNECTING, TR_UP, TR_STOPPED };

struct tredis {
	struct ring *ring;
	struct throttle *t;
	char host[INET6_ADDRSTRLEN];
	int port;
	char text[96]; /* redis://ADDR:PORT/ for the log */
	char node[128];
	bool refresher;
	redisAsyncContext *ac;
	enum tredis_state state;
	bool want_read, want_write;
	struct ring_op op_read, op_write;
	int fd;                   /* the polls' socket (ac's, while it lives) */
	struct wheel_timer timer; /* reconnect, refresh, answer deadline */
	int64_t refresh_at;
	unsigned pending;      /* commands not answered yet */
	int64_t waiting_since; /* the oldest of them was sent, or answered last */
	bool said_down;        /* the log said it is unreachable */
};

/* What an ask carries to its answer. */
struct ask {
	struct tredis *r;
	struct throttle_entry *e;
	enum throttle_ask a;
};

static void timer_fire(struct wheel_timer *w);
static void start(struct tredis *r);

static int64_t now_ns(const struct tredis *r)
{
	return ring_now(r->ring);
}

/* ---- hiredis's event hooks, on the ring ------------------------------------ */

static void poll_cb(struct ring_op *op, int res, unsigned flags)
{
	struct tredis *r = op->owner;
	bool read = op == &r->op_read;

	if (r->ac == NULL || r->ac->c.fd != r->fd)
		return; /* the context went meanwhile */
	if (read && r->want_read)
		redisAsyncHandleRead(r->ac);
	else if (!read && r->want_write)
		redisAsyncHandleWrite(r->ac);
	/* (the context may be gone now: freed by a disconnect) */
	if (r->ac == NULL)
		return;
	if (read && r->want_read && !ring_op_busy(&r->op_read))
		ring_poll(r->ring, &r->op_read, r->fd, POLLIN, false);
	if (!read && r->want_write && !ring_op_busy(&r->op_write))
		ring_poll(r->ring, &r->op_write, r->fd, POLLOUT, false);
}

static void ev_add_read(void *p)
{
	struct tredis *r = p;

	r->want_read = true;
	if (!ring_op_busy(&r->op_read))
		ring_poll(r->ring, &r->op_read, r->fd, POLLIN, false);
}

static void ev_del_read(void *p)
{
	((struct tredis *)p)->want_read = false;
}

static void ev_add_write(void *p)
{
	struct tredis *r = p;

	r->want_write = true;
	if (!ring_op_busy(&r->op_write))
		ring_poll(r->ring, &r->op_write, r->fd, POLLOUT, false);
}

static void ev_del_write(void *p)
{
	((struct tredis *)p)->want_write = false;
}

/* The context is being freed: its polls end (cancelled). */
static void ev_cleanup(void *p)
{
	struct tredis *r = p;

	r->want_read = r->want_write = false;
	if (ring_op_busy(&r->op_read))
		ring_cancel_op(r->ring, &r->op_read);
	if (ring_op_busy(&r->op_write))
		ring_cancel_op(r->ring, &r->op_write);
}

/* ---- connecting -------------------------------------------------------------- */

static void arm(struct tredis *r, int64_t due)
{
	if (r->state == TR_STOPPED)
		return;
	if (!wheel_armed(&r->timer) || r->timer.due > due)
		ring_timer_arm(r->ring, &r->timer, due);
}

static void went_down(struct tredis *r, const char *why)
{
	if (r->state == TR_UP)
		throttle_store_up(r->t, false);
	if (r->state == TR_STOPPED)
		return;
	if (!r->said_down)
		log_warnx(
		    "ThrottleStore %s: unreachable (%s): the node's own limits apply until it "
		    "is back",
		    r->text, why);
	r->said_down = true;
	r->state = TR_DOWN;
	arm(r, now_ns(r) + RETRY_NS);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct tredis *r = ac->ev.data;

	if (status != REDIS_OK) {
		/* hiredis frees the context after this */
		r->ac = NULL;
		went_down(r, ac->errstr[0] != '\0' ? ac->errstr : "cannot connect");
		return;
	}
	r->state = TR_UP;
	throttle_store_up(r->t, true);
	log_info("ThrottleStore %s: connected: limits are %s the cluster's", r->text,
	         r->said_down ? "again" : "now");
	r->said_down = false;
	r->refresh_at = now_ns(r);
	arm(r, r->refresh_at);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct tredis *r = ac->ev.data;

	r->ac = NULL;
	r->pending = 0;
	went_down(r, status == REDIS_OK ? "closed" : ac->errstr[0] != '\0' ? ac->errstr : "lost");
}

static void start(struct tredis *r)
{
	redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);

	if (ac == NULL) {
		went_down(r, "out of memory");
		return;
	}
	if (ac->err) {
		char why[128];

		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		went_down(r, why);
		return;
	}
	r->ac = ac;
	r->fd = ac->c.fd;
	r->state = TR_CONNECTING;
	r->pending = 0;
	ac->ev.data = r;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* the connect's end shows as writable */
	ev_add_write(r);
	arm(r, now_ns(r) + ANSWER_NS); /* a connect that hangs counts as down */
	r->waiting_since = now_ns(r);
}

struct tredis *tredis_new(struct ring *ring, const struct config_listen *addr, struct throttle *t,
                          const char *node, unsigned index)
{
	struct tredis *r = calloc(1, sizeof(*r));
	const struct sockaddr_storage *sa = &addr->addr;

	if (r == NULL)
		fatalx("out of memory");
	r->ring = ring;
	r->t = t;
	r->fd = -1;
	r->refresher = index == 0;
	snprintf(r->node, sizeof(r->node), "%s", node);
	snprintf(r->text, sizeof(r->text), "redis://%s/", addr->text);
	if (sa->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->host,
		          sizeof(r->host));
		r->port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->host,
		          sizeof(r->host));
		r->port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
	}
	ring_op_init(&r->op_read, RING_POLL, poll_cb, r);
	ring_op_init(&r->op_write, RING_POLL, poll_cb, r);
	wheel_timer_init(&r->timer, timer_fire, r);
	start(r);
	return r;
}

bool tredis_up(const struct tredis *r)
{
	return r != NULL && r->state == TR_UP;
}

/* ---- commands ------------------------------------------------------------------- */

static void sent(struct tredis *r)
{
	if (r->pending++ == 0)
		r->waiting_since = now_ns(r);
	arm(r, r->waiting_since + ANSWER_NS);
}

static void answered(struct tredis *r)
{
	if (r->pending > 0)
		r->pending--;
	r->waiting_since = now_ns(r);
}

static int eval(struct tredis *r, redisCallbackFn *fn, void *arg, const char *script,
                const char *key, int nargs, const char *const *args)
{
	const char *argv[8];
	size_t len[8];
	int argc = 0;

	argv[argc++] = "EVAL";
	argv[argc++] = script;
	argv[argc++] = "1";
	argv[argc++] = key;
	for (int i = 0; i < nargs && argc < 8; i++)
		argv[argc++] = args[i];
	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	if (r->ac == NULL || redisAsyncCommandArgv(r->ac, fn, arg, argc, argv, len) != REDIS_OK)
		return -1;
	sent(r);
	return 0;
}

static void ask_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct ask *k = privdata;
	struct tredis *r = k->r;
	redisReply *rep = reply;

	answered(r);
	if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
	    rep->element[0]->type == REDIS_REPLY_INTEGER &&
	    rep->element[1]->type == REDIS_REPLY_INTEGER) {
		throttle_granted(k->e, k->a, (unsigned)rep->element[0]->integer,
		                 rep->element[1]->integer * 1000, now_ns(r));
	} else {
		if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
			log_warnx("ThrottleStore %s: %.200s", r->text, rep->str);
		throttle_ask_failed(k->e, k->a);
	}
	throttle_put(r->t, k->e);
	free(k);
}

static void one_ask(struct tredis *r, struct throttle_entry *e, enum throttle_ask a,
                    const struct shaping_rate *rate, unsigned max_conns)
{
	static const char *const prefix[THROTTLE_ASKS] = {"krelay:m:", "krelay:r:", "krelay:c:"};
	char key[THROTTLE_KEY_MAX + 16], a1[32], a2[32], a3[32];
	const char *args[3] = {a1, a2, a3};
	struct ask *k = malloc(sizeof(*k));
	int rc;

	if (k == NULL)
		fatalx("out of memory");
	k->r = r;
	k->e = throttle_hold(r->t, e);
	k->a = a;
	snprintf(key, sizeof(key), "%s%s", prefix[a], throttle_key(e));
	if (a == THROTTLE_ASK_SLOT) {
		args[0] = r->node;
		snprintf(a2, sizeof(a2), "%u", max_conns);
		snprintf(a3, sizeof(a3), "%s", COUNT_TTL_MS);
		rc = eval(r, ask_cb, k, slot_lua, key, 3, args);
	} else {
		int64_t t = gcra_interval(rate) / 1000;
		int64_t tau = (t > GCRA_SLACK_NS / 1000 ? t : GCRA_SLACK_NS / 1000);

		snprintf(a1, sizeof(a1), "%" PRId64, t > 0 ? t : 1);
		snprintf(a2, sizeof(a2), "%" PRId64, tau);
		snprintf(a3, sizeof(a3), "%u", throttle_want(rate));
		rc = eval(r, ask_cb, k, grant_lua, key, 3, args);
	}
	if (rc < 0) {
		throttle_ask_failed(e, a);
		throttle_put(r->t, k->e);
		free(k);
	}
}

void tredis_ask(struct tredis *r, struct throttle_entry *e, const struct shaping_limits *l,
                const struct throttle_verdict *v)
{
	for (int a = 0; a < THROTTLE_ASKS; a++) {
		if (!(v->ask & THROTTLE_ASK_BIT(a)))
			continue;
		if (!tredis_up(r)) {
			throttle_ask_failed(e, (enum throttle_ask)a);
			continue;
		}
		one_ask(r, e, (enum throttle_ask)a,
		        a == THROTTLE_ASK_MSG ? &v->msg_rate : &l->conn_rate, l->max_connections);
	}
}

static void done_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct tredis *r = privdata;
	redisReply *rep = reply;

	answered(r);
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
		log_warnx("ThrottleStore %s: %.200s", r->text, rep->str);
}

void tredis_release(struct tredis *r, struct throttle_entry *e)
{
	char key[THROTTLE_KEY_MAX + 160];

	if (!tredis_up(r))
		return; /* (a count in a store that went away) */
	const char *one = "1";

	snprintf(key, sizeof(key), "krelay:c:%s:%s", throttle_key(e), r->node);
	eval(r, done_cb, r, release_lua, key, 1, &one);
}

/* The node's counts: its open connections, for every key it took slots of. */
static void refresh_one(void *arg, const struct throttle_view *v)
{
	struct tredis *r = arg;
	char key[THROTTLE_KEY_MAX + 16], n[16];
	const char *args[3] = {r->node, n, COUNT_TTL_MS};

	if (!v->slots_used)
		return;
	snprintf(key, sizeof(key), "krelay:c:%s", v->key);
	snprintf(n, sizeof(n), "%u", v->conns);
	eval(r, done_cb, r, count_lua, key, 3, args);
	if (v->slots_stale > 0) {
		char k2[THROTTLE_KEY_MAX + 160];
		const char *count = n;

		snprintf(k2, sizeof(k2), "%s:%s", key, r->node);
		snprintf(n, sizeof(n), "%u", v->slots_stale);
		eval(r, done_cb, r, release_lua, k2, 1, &count);
	}
}

static void timer_fire(struct wheel_timer *w)
{
	struct tredis *r = w->owner;
	int64_t now = now_ns(r);

	switch (r->state) {
	case TR_STOPPED:
		return;
	case TR_DOWN:
		start(r);
		return;
	case TR_CONNECTING:
	case TR_UP:
		if (r->pending > 0 || r->state == TR_CONNECTING) {
			if (now - r->waiting_since >= ANSWER_NS) {
				/* no answer: the store is as good as gone */
				redisAsyncContext *ac = r->ac;

				r->ac = NULL;
				went_down(r, r->state == TR_CONNECTING ? "no answer to the connect"
				                                       : "no answer within 2 s");
				if (ac != NULL)
					redisAsyncFree(ac); /* its pending asks fail */
				return;
			}
			arm(r, r->waiting_since + ANSWER_NS);
		}
		if (r->state == TR_UP && r->refresher) {
			if (now >= r->refresh_at) {
				throttle_each_store(r->t, now, refresh_one, r);
				r->refresh_at = now + REFRESH_NS;
			}
			arm(r, r->refresh_at);
		}
		return;
	}
}

/* ---- the end ---------------------------------------------------------------------- */

void tredis_stop(struct tredis *r)
{
	redisAsyncContext *ac;

	if (r == NULL || r->state == TR_STOPPED)
		return;
	if (r->state == TR_UP)
		throttle_store_up(r->t, false);
	r->state = TR_STOPPED;
	ring_timer_disarm(r->ring, &r->timer);
	ac = r->ac;
	r->ac = NULL;
	if (ac != NULL)
		redisAsyncFree(ac); /* answers still awaited fail; the polls are cancelled */
}

bool tredis_idle(const struct tredis *r)
{
	return r == NULL || (!ring_op_busy(&r->op_read) && !ring_op_busy(&r->op_write));
}

void tredis_free(struct tredis *r)
{
	if (r == NULL)
		return;
	tredis_stop(r);
	free(r);
}
