/* dns_ub: see dns_int.h.  libunbound driven from the worker's ring.
 *
 * libunbound in its threaded asynchronous mode (ub_ctx_async(ctx, 1)): one
 * thread of its own per handle does the resolving and the validation, and
 * hands each finished query back through a pipe, ub_fd().  That pipe is
 * watched with one IORING_OP_POLL_ADD while a query is outstanding; its
 * completion calls ub_process(), which runs our ub callbacks.  Those only
 * store the result and put the request on the done list; the caller's
 * callbacks run from a nop op's completion, so never inside a dns_* call
 * and never with libunbound on the stack.
 *
 * What the caller is told.  A result that did not validate (ub_result's
 * bogus) is DNS_BOGUS, never its data; SERVFAIL, REFUSED and libunbound's
 * own errors are DNS_TEMPFAIL.  secure is ub_result's secure: the answer,
 * or the denial that there is one, was validated up to the trust anchor.
 * An address request is two queries (AAAA, A): secure only when both are,
 * and the worse failure wins (a failed AAAA next to a secure A is not a
 * secure "no IPv6": an attacker who can make one fail must not be able to
 * turn a host's answer insecure).
 *
 * Lifetime.  As dns.c: every query's callback runs exactly once, from the
 * ring; dns_ub_free cancels what is outstanding (DNS_TEMPFAIL, from the
 * ring) and the handle frees itself once none of its ops is in flight. */
#include "dns_int.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

enum ub_kind { UB_MX, UB_ADDR, UB_TLSA, UB_TXT };

struct ub_req;

/* One libunbound query of a request (an address request has two). */
struct ub_sub {
	struct ub_req *req;
	int id;       /* async id */
	bool pending; /* asked, no answer yet */
	int err;      /* libunbound's error, when no result */
	struct ub_result *res;
};

struct ub_req {
	struct ub_req *prev, *next; /* outstanding list, then the done list (next) */
	struct dns_ub *u;
	enum ub_kind kind;
	union {
		dns_mx_cb mx;
		dns_addr_cb addr;
		dns_tlsa_cb tlsa;
		dns_txt_cb txt;
	} cb;
	void *arg;
	unsigned pending;
	bool failed; /* could not be asked: DNS_TEMPFAIL */
	struct ub_sub sub[2];
	struct dns_addr literal; /* an address given as the host name */
};

struct dns_ub {
	struct ring *ring;
	struct ub_ctx *ctx;
	int fd;
	struct ub_req *out, *out_tail;    /* outstanding, oldest first */
	struct ub_req *done, **done_tail; /* answered, to deliver */
	bool dying;
	char why_bogus[256];
	struct ring_op op_poll, op_cancel, op_nop;
};

static void poll_cb(struct ring_op *op, int res, unsigned flags);
static void cancel_cb(struct ring_op *op, int res, unsigned flags);
static void nop_cb(struct ring_op *op, int res, unsigned flags);

/* ---- life ---- */

static void finish(struct dns_ub *u)
{
	if (!u->dying || u->done != NULL || u->out != NULL || ring_op_busy(&u->op_poll) ||
	    ring_op_busy(&u->op_cancel) || ring_op_busy(&u->op_nop))
		return;
	ub_ctx_delete(u->ctx); /* stops and joins its thread */
	free(u);
}

static void arm_nop(struct dns_ub *u)
{
	if (!ring_op_busy(&u->op_nop))
		ring_nop(u->ring, &u->op_nop);
}

static void arm_poll(struct dns_ub *u)
{
	if (!u->dying && u->out != NULL && !ring_op_busy(&u->op_poll))
		ring_poll(u->ring, &u->op_poll, u->fd, POLLIN, false);
}

static void unlink_out(struct ub_req *r)
{
	struct dns_ub *u = r->u;

	if (r->prev)
		r->prev->next = r->next;
	else if (u->out == r)
		u->out = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else if (u->out_tail == r)
		u->out_tail = r->prev;
	r->prev = r->next = NULL;
}

static void to_done(struct ub_req *r)
{
	struct dns_ub *u = r->u;

	r->next = NULL;
	*u->done_tail = r;
	u->done_tail = &r->next;
	arm_nop(u);
}

static void req_free(struct ub_req *r)
{
	for (int i = 0; i < 2; i++)
		if (r->sub[i].res != NULL)
			ub_resolve_free(r->sub[i].res);
	free(r);
}

/* ---- answers ---- */

static enum dns_status sub_status(struct dns_ub *u, const struct ub_sub *s, bool *secure)
{
	const struct ub_result *res = s->res;

	*secure = false;
	if (res == NULL)
		return DNS_TEMPFAIL;
	if (res->bogus) {
		snprintf(u->why_bogus, sizeof(u->why_bogus), "%s",
		         res->why_bogus ? res->why_bogus : "validation failed");
		return DNS_BOGUS;
	}
	*secure = res->secure != 0;
	if (res->rcode == ns_r_nxdomain)
		return DNS_NXDOMAIN;
	if (res->rcode != ns_r_noerror)
		return DNS_TEMPFAIL;
	return res->havedata ? DNS_OK : DNS_NODATA;
}

/* A name in uncompressed wire form (rdata) as text without the final dot;
 * bytes other than letters, digits, '-' and '_' are written \DDD, as in a
 * zone file.  Returns the bytes read, or 0 when it is malformed or long. */
static size_t wire_name(const unsigned char *p, size_t len, char *out, size_t outlen)
{
	size_t i = 0, o = 0;

	for (;;) {
		unsigned lab;

		if (i >= len)
			return 0;
		lab = p[i++];
		if (lab == 0)
			break;
		if (lab > 63 || i + lab > len)
			return 0;
		if (o > 0) {
			if (o + 1 >= outlen)
				return 0;
			out[o++] = '.';
		}
		for (unsigned k = 0; k < lab; k++) {
			unsigned char ch = p[i++];

			if (isalnum(ch) || ch == '-' || ch == '_') {
				if (o + 1 >= outlen)
					return 0;
				out[o++] = (char)ch;
			} else {
				if (o + 4 >= outlen)
					return 0;
				o += (size_t)snprintf(out + o, outlen - o, "\\%03u", ch);
			}
		}
	}
	out[o] = '\0';
	return i;
}

static void deliver_mx(struct dns_ub *u, struct ub_req *r)
{
	struct dns_mx mx[DNS_MX_MAX];
	size_t n = 0;
	bool secure;
	enum dns_status st = r->failed ? DNS_TEMPFAIL : sub_status(u, &r->sub[0], &secure);

	if (r->failed)
		secure = false;
	for (int i = 0; st == DNS_OK && r->sub[0].res->data[i] != NULL; i++) {
		const unsigned char *d = (const unsigned char *)r->sub[0].res->data[i];
		size_t len = (size_t)r->sub[0].res->len[i], k = n;
		struct dns_mx m;

		if (len < 3 || wire_name(d + 2, len - 2, m.host, sizeof(m.host)) == 0)
			continue; /* malformed: not a host to go to */
		m.pref = (unsigned)d[0] << 8 | d[1];
		if (n == DNS_MX_MAX) {
			/* more than fit: keep the most preferred */
			k = 0;
			for (size_t j = 1; j < n; j++)
				if (mx[j].pref > mx[k].pref)
					k = j;
			if (m.pref >= mx[k].pref)
				continue;
		} else {
			n++;
		}
		mx[k] = m;
	}
	r->cb.mx(r->arg, st, secure, n ? mx : NULL, n);
}

static void deliver_addr(struct dns_ub *u, struct ub_req *r)
{
	struct dns_addr a[DNS_ADDR_MAX];
	enum dns_status st[2];
	bool sec[2];
	size_t n = 0;

	if (r->literal.len > 0) {
		r->cb.addr(r->arg, DNS_OK, false, &r->literal, 1);
		return;
	}
	if (r->failed) {
		r->cb.addr(r->arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	for (int i = 0; i < 2; i++)
		st[i] = sub_status(u, &r->sub[i], &sec[i]);
	/* sub[0] is AAAA, sub[1] A: IPv6 first, as dns.c */
	for (int i = 0; i < 2; i++) {
		const struct ub_result *res = r->sub[i].res;
		int fam = i == 0 ? AF_INET6 : AF_INET;
		size_t alen = i == 0 ? 16 : 4;

		if (st[i] != DNS_OK)
			continue;
		for (int k = 0; res->data[k] != NULL && n < DNS_ADDR_MAX; k++) {
			struct dns_addr *x = &a[n];

			if ((size_t)res->len[k] != alen)
				continue;
			memset(x, 0, sizeof(*x));
			if (fam == AF_INET6) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&x->sa;
				s6->sin6_family = AF_INET6;
				memcpy(&s6->sin6_addr, res->data[k], 16);
				x->len = sizeof(*s6);
			} else {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&x->sa;
				s4->sin_family = AF_INET;
				memcpy(&s4->sin_addr, res->data[k], 4);
				x->len = sizeof(*s4);
			}
			n++;
		}
	}
	enum dns_status out;
	if (st[0] == DNS_BOGUS || st[1] == DNS_BOGUS)
		out = DNS_BOGUS;
	else if (st[0] == DNS_TEMPFAIL || st[1] == DNS_TEMPFAIL)
		out = DNS_TEMPFAIL;
	else if (n > 0)
		out = DNS_OK;
	else if (st[0] == DNS_NXDOMAIN && st[1] == DNS_NXDOMAIN)
		out = DNS_NXDOMAIN;
	else
		out = DNS_NODATA;
	if (out == DNS_BOGUS || out == DNS_TEMPFAIL)
		n = 0;
	r->cb.addr(r->arg, out, sec[0] && sec[1], n ? a : NULL, n);
}

static void deliver_tlsa(struct dns_ub *u, struct ub_req *r)
{
	struct dns_tlsa t[DNS_TLSA_MAX];
	size_t n = 0;
	bool secure = false;
	enum dns_status st = r->failed ? DNS_TEMPFAIL : sub_status(u, &r->sub[0], &secure);

	for (int i = 0; st == DNS_OK && r->sub[0].res->data[i] != NULL && n < DNS_TLSA_MAX; i++) {
		const unsigned char *d = (const unsigned char *)r->sub[0].res->data[i];
		size_t len = (size_t)r->sub[0].res->len[i];

		if (len < 4)
			continue; /* malformed (no data): a record that matches nothing */
		t[n].usage = d[0];
		t[n].selector = d[1];
		t[n].mtype = d[2];
		t[n].data = d + 3;
		t[n].len = len - 3;
		n++;
	}
	r->cb.tlsa(r->arg, st, secure, n ? t : NULL, n);
}

static void deliver_txt(struct dns_ub *u, struct ub_req *r)
{
	struct dns_txt t[DNS_TXT_MAX];
	static __thread char buf[DNS_TXT_BYTES];
	size_t n = 0, used = 0;
	bool secure = false;
	enum dns_status st = r->failed ? DNS_TEMPFAIL : sub_status(u, &r->sub[0], &secure);

	for (int i = 0; st == DNS_OK && r->sub[0].res->data[i] != NULL && n < DNS_TXT_MAX; i++) {
		const unsigned char *d = (const unsigned char *)r->sub[0].res->data[i];
		size_t len = (size_t)r->sub[0].res->len[i], k = 0;

		t[n].s = buf + used;
		t[n].len = 0;
		/* character-strings: a length byte, then that many bytes */
		while (k < len && k + 1 + d[k] <= len && used + d[k] <= sizeof(buf)) {
			memcpy(buf + used, d + k + 1, d[k]);
			used += d[k];
			t[n].len += d[k];
			k += 1 + (size_t)d[k];
		}
		n++;
	}
	r->cb.txt(r->arg, st, secure, n ? t : NULL, n);
}

static void ub_answer(void *mydata, int err, struct ub_result *result)
{
	struct ub_sub *s = mydata;
	struct ub_req *r = s->req;

	s->pending = false;
	s->err = err;
	s->res = result;
	if (--r->pending == 0) {
		unlink_out(r);
		to_done(r);
	}
}

/* ---- ring completions ---- */

static void poll_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns_ub *u = op->owner;

	if (!u->dying)
		ub_process(u->ctx); /* runs ub_answer for each result in the pipe */
	arm_poll(u);
	finish(u);
}

static void cancel_cb(struct ring_op *op, int res, unsigned flags)
{
	finish(op->owner);
}

static void nop_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns_ub *u = op->owner;
	struct ub_req *list = u->done;

	/* Take the list: what the callbacks below add comes next turn. */
	u->done = NULL;
	u->done_tail = &u->done;
	while (list != NULL) {
		struct ub_req *r = list;

		list = r->next;
		switch (r->kind) {
		case UB_MX:
			deliver_mx(u, r);
			break;
		case UB_ADDR:
			deliver_addr(u, r);
			break;
		case UB_TLSA:
			deliver_tlsa(u, r);
			break;
		case UB_TXT:
			deliver_txt(u, r);
			break;
		}
		req_free(r);
	}
	if (u->done != NULL)
		arm_nop(u);
	finish(u);
}

/* ---- API ---- */

/* What a context needs, async or not: forwarders, trust anchor. */
static int setup(struct ub_ctx *ctx, const char *servers, const char *anchor, char *err,
                 size_t errlen)
{
	char *copy;
	int rc;

	/* the servers are asked as forwarders, loopback ones too (unbound's
	 * default refuses to send queries to 127.0.0.0/8 and ::1) */
	if ((rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0)
		goto fail;
	if (servers != NULL) {
		char list[512], fwd[80];

		/* unbound answers names under test. (RFC 6761) itself, with
		 * NXDOMAIN; a DNS server the admin names may serve a lab zone
		 * there, so those names go to it like any other */
		if ((rc = ub_ctx_set_option(ctx, "local-zone:", "test. transparent")) != 0)
			goto fail;

		snprintf(list, sizeof(list), "%s", servers);
		for (char *save = NULL, *t = strtok_r(list, ",", &save); t != NULL;
		     t = strtok_r(NULL, ",", &save)) {
			char *colon = strrchr(t, ':'), *host = t;

			/* dns.c's form: "A.B.C.D:PORT" or "[V6]:PORT" */
			if (colon == NULL) {
				rc = UB_SYNTAX;
				goto fail;
			}
			*colon = '\0';
			if (*host == '[') {
				host++;
				host[strlen(host) - 1] = '\0';
			}
			snprintf(fwd, sizeof(fwd), "%s@%s", host, colon + 1);
			if ((rc = ub_ctx_set_fwd(ctx, fwd)) != 0)
				goto fail;
		}
	} else if ((rc = ub_ctx_resolvconf(ctx, NULL)) != 0) {
		snprintf(err, errlen, "libunbound: /etc/resolv.conf: %s", ub_strerror(rc));
		return -1;
	}
	if (anchor == NULL)
		return 0; /* nothing validated: every answer insecure */
	if ((copy = strdup(anchor)) == NULL) {
		rc = UB_NOMEM;
		goto fail;
	}
	for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l != NULL;
	     l = strtok_r(NULL, "\n", &save))
		if ((rc = ub_ctx_add_ta(ctx, l)) != 0) {
			snprintf(err, errlen, "DNSSECTrustAnchorFile: '%.80s': %s", l,
			         ub_strerror(rc));
			free(copy);
			return -1;
		}
	free(copy);
	return 0;
fail:
	snprintf(err, errlen, "libunbound: %s", ub_strerror(rc));
	return -1;
}

int dns_ub_init(struct dns_ub **up, struct ring *ring, const char *servers, const char *anchor,
                char *err, size_t errlen)
{
	struct dns_ub *u;
	int rc;

	*up = NULL;
	u = calloc(1, sizeof(*u));
	if (u == NULL || (u->ctx = ub_ctx_create()) == NULL) {
		free(u);
		snprintf(err, errlen, "libunbound: cannot create a context");
		return -1;
	}
	u->ring = ring;
	u->done_tail = &u->done;
	ring_op_init(&u->op_poll, RING_POLL, poll_cb, u);
	ring_op_init(&u->op_cancel, RING_CANCEL, cancel_cb, u);
	ring_op_init(&u->op_nop, RING_NOP, nop_cb, u);
	if ((rc = ub_ctx_async(u->ctx, 1)) != 0) {
		snprintf(err, errlen, "libunbound: %s", ub_strerror(rc));
		goto fail;
	}
	if (setup(u->ctx, servers, anchor, err, errlen) < 0)
		goto fail;
	u->fd = ub_fd(u->ctx);
	if (u->fd < 0) {
		snprintf(err, errlen, "libunbound: no descriptor to watch");
		goto fail;
	}
	*up = u;
	return 0;
fail:
	ub_ctx_delete(u->ctx);
	free(u);
	return -1;
}

/* A context for the blocking calls below, set up; NULL with err. */
static struct ub_ctx *sync_ctx(const char *servers, const char *anchor, char *err, size_t errlen)
{
	struct ub_ctx *ctx = ub_ctx_create();

	if (ctx == NULL) {
		snprintf(err, errlen, "libunbound: cannot create a context");
		return NULL;
	}
	if (setup(ctx, servers, anchor, err, errlen) < 0) {
		ub_ctx_delete(ctx);
		return NULL;
	}
	return ctx;
}

int dns_ub_txt_sync(const char *servers, const char *name, char ***txt, size_t *n, char *err,
                    size_t errlen)
{
	struct ub_ctx *ctx = sync_ctx(servers, NULL, err, errlen);
	struct ub_result *res = NULL;
	int rc, ret = -1;

	*txt = NULL;
	*n = 0;
	if (ctx == NULL)
		return -1;
	if ((rc = ub_resolve(ctx, name, ns_t_txt, ns_c_in, &res)) != 0) {
		snprintf(err, errlen, "%s", ub_strerror(rc));
		goto done;
	}
	if (res->rcode != ns_r_noerror && res->rcode != ns_r_nxdomain) {
		snprintf(err, errlen, "lookup failed (rcode %d)", res->rcode);
		goto done;
	}
	ret = 0;
	for (int i = 0; res->havedata && res->data[i] != NULL; i++) {
		const unsigned char *d = (const unsigned char *)res->data[i];
		size_t len = (size_t)res->len[i], k = 0, o = 0;
		char *s = malloc(len + 1), **grown = realloc(*txt, (*n + 1) * sizeof(char *));

		if (s == NULL || grown == NULL) {
			free(s);
			*txt = grown != NULL ? grown : *txt;
			snprintf(err, errlen, "out of memory");
			ret = -1;
			break;
		}
		*txt = grown;
		while (k < len && k + 1 + d[k] <= len) { /* character-strings, joined */
			memcpy(s + o, d + k + 1, d[k]);
			o += d[k];
			k += 1 + (size_t)d[k];
		}
		s[o] = '\0';
		(*txt)[(*n)++] = s;
	}
done:
	if (res != NULL)
		ub_resolve_free(res);
	ub_ctx_delete(ctx);
	return ret;
}

int dns_ub_addr_sync(const char *servers, const char *host, char *ip, size_t iplen, char *err,
                     size_t errlen)
{
	static const int types[2] = {ns_t_a, ns_t_aaaa};
	struct ub_ctx *ctx = sync_ctx(servers, NULL, err, errlen);
	int ret = -1;

	ip[0] = '\0';
	if (ctx == NULL)
		return -1;
	snprintf(err, errlen, "no address");
	for (int i = 0; i < 2 && ret < 0; i++) {
		struct ub_result *res = NULL;
		int rc = ub_resolve(ctx, host, types[i], ns_c_in, &res);

		if (rc != 0) {
			snprintf(err, errlen, "%s", ub_strerror(rc));
		} else if (res->havedata && res->data[0] != NULL &&
		           res->len[0] == (types[i] == ns_t_a ? 4 : 16) &&
		           inet_ntop(types[i] == ns_t_a ? AF_INET : AF_INET6, res->data[0], ip,
		                     (socklen_t)iplen) != NULL) {
			ret = 0;
		}
		if (res != NULL)
			ub_resolve_free(res);
	}
	ub_ctx_delete(ctx);
	return ret;
}

int dns_ub_probe(const char *servers, const char *anchor, char *out, size_t outlen)
{
	struct ub_ctx *ctx = sync_ctx(servers, anchor, out, outlen);
	struct ub_result *res = NULL;
	char owner[DNS_NAME_MAX + 2] = ".";
	int rc, ret = -1;

	if (ctx == NULL)
		return -1;
	/* the first anchor's owner: its DNSKEY must validate */
	sscanf(anchor, "%255s", owner);
	if ((rc = ub_resolve(ctx, owner, 48 /* DNSKEY */, ns_c_in, &res)) != 0) {
		snprintf(out, outlen, "resolver error: %s", ub_strerror(rc));
		goto done;
	}
	if (res->bogus)
		snprintf(
		    out, outlen,
		    "the DNSKEY records of %s do not validate against the trust anchor: %.200s "
		    "(a wrong DNSSECTrustAnchorFile, or a resolver that strips DNSSEC records)",
		    owner, res->why_bogus ? res->why_bogus : "bogus");
	else if (res->rcode != ns_r_noerror || !res->havedata)
		snprintf(out, outlen,
		         "no answer for the DNSKEY records of %s (rcode %d): the resolver is "
		         "unreachable or failing",
		         owner, res->rcode);
	else if (!res->secure)
		snprintf(out, outlen, "the DNSKEY records of %s came back insecure", owner);
	else {
		snprintf(out, outlen, "the resolver's answers validate (DNSKEY of %s is secure)",
		         owner);
		ret = 0;
	}
done:
	if (res != NULL)
		ub_resolve_free(res);
	ub_ctx_delete(ctx);
	return ret;
}

void dns_ub_free(struct dns_ub *u)
{
	struct ub_req *r;

	if (u == NULL || u->dying)
		return;
	u->dying = true;
	/* every outstanding query ends now, cancelled, delivered from the ring */
	while ((r = u->out) != NULL) {
		for (int i = 0; i < 2; i++)
			if (r->sub[i].pending) {
				ub_cancel(u->ctx, r->sub[i].id);
				r->sub[i].pending = false;
			}
		r->failed = true;
		unlink_out(r);
		to_done(r);
	}
	if (ring_op_busy(&u->op_poll))
		ring_cancel_op(u->ring, &u->op_poll);
	arm_nop(u); /* frees u from the ring once all is idle */
}

static struct ub_req *req_new(struct dns_ub *u, enum ub_kind kind, void *arg)
{
	struct ub_req *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->u = u;
	r->kind = kind;
	r->arg = arg;
	r->sub[0].req = r->sub[1].req = r;
	return r;
}

/* Asks name/type as sub i of r; a query that cannot be asked fails r. */
static void ask(struct ub_req *r, int i, const char *name, int type)
{
	struct ub_sub *s = &r->sub[i];

	if (r->failed)
		return;
	if (ub_resolve_async(r->u->ctx, name, type, ns_c_in, s, ub_answer, &s->id) != 0) {
		r->failed = true;
		return;
	}
	s->pending = true;
	r->pending++;
}

/* After the asks: outstanding, or done at once (failed before any was
 * asked).  A request whose second ask failed waits for its first. */
static void start(struct ub_req *r, int nsub, const char *name, const int *types)
{
	struct dns_ub *u = r->u;

	if (!u->dying)
		for (int i = 0; i < nsub; i++)
			ask(r, i, name, types[i]);
	else
		r->failed = true;
	if (r->pending == 0) {
		to_done(r);
		return;
	}
	r->prev = u->out_tail;
	r->next = NULL;
	if (u->out_tail)
		u->out_tail->next = r;
	else
		u->out = r;
	u->out_tail = r;
	arm_poll(u);
}

void dns_ub_query_mx(struct dns_ub *u, const char *domain, dns_mx_cb cb, void *arg)
{
	static const int types[1] = {ns_t_mx};
	struct ub_req *r = req_new(u, UB_MX, arg);

	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->cb.mx = cb;
	start(r, 1, domain, types);
}

void dns_ub_query_addr(struct dns_ub *u, const char *host, dns_addr_cb cb, void *arg)
{
	static const int types[2] = {ns_t_aaaa, ns_t_a};
	struct ub_req *r = req_new(u, UB_ADDR, arg);
	struct sockaddr_in6 *s6;
	struct sockaddr_in *s4;

	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->cb.addr = cb;
	s6 = (struct sockaddr_in6 *)&r->literal.sa;
	s4 = (struct sockaddr_in *)&r->literal.sa;
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		r->literal.len = sizeof(*s6);
	} else if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		r->literal.len = sizeof(*s4);
	}
	if (r->literal.len > 0) {
		to_done(r); /* an address needs no lookup (and is not secure) */
		return;
	}
	start(r, 2, host, types);
}

void dns_ub_query_tlsa(struct dns_ub *u, const char *host, unsigned port, dns_tlsa_cb cb, void *arg)
{
	static const int types[1] = {52}; /* TLSA (RFC 6698) */
	struct ub_req *r = req_new(u, UB_TLSA, arg);
	char name[DNS_NAME_MAX + 16];

	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->cb.tlsa = cb;
	snprintf(name, sizeof(name), "_%u._tcp.%s", port, host);
	start(r, 1, name, types);
}

void dns_ub_query_txt(struct dns_ub *u, const char *name, dns_txt_cb cb, void *arg)
{
	static const int types[1] = {ns_t_txt};
	struct ub_req *r = req_new(u, UB_TXT, arg);

	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->cb.txt = cb;
	start(r, 1, name, types);
}

const char *dns_ub_why_bogus(const struct dns_ub *u)
{
	return u->why_bogus;
}
