/* dns: see dns.h.  c-ares driven from the worker's ring.
 *
 * Sockets.  c-ares says which of its sockets it wants watched through the
 * socket-state callback.  Each socket gets a record with two poll ops (one
 * for POLLIN, one for POLLOUT: c-ares asks for write readiness on a TCP
 * socket while its read poll is in flight, and a poll cannot be widened)
 * and a cancel op.  A completed poll calls ares_process_fd and is re-armed
 * while c-ares still wants that direction.
 *
 * Closed sockets.  c-ares reports (fd, 0, 0) just before it closes fd.  An
 * io_uring poll holds its own reference to the file, so closing the
 * descriptor would not end the poll: the record is marked closed and its
 * polls are cancelled by fd, submitted at once while fd still names that
 * socket (the number may be reused by c-ares's next socket right after).
 * A closed record is never armed again, never passed to c-ares, and freed
 * only once none of its ops is in flight.
 *
 * Timeouts.  A timerfd set from ares_timeout() after every step, watched by
 * one poll op: unlike an IORING_OP_TIMEOUT (ring.h has no way to remove
 * or update one) it can be moved while armed, and dns_free can cancel its
 * poll by fd instead of waiting for it to expire.
 *
 * Results.  c-ares may call a query's callback from inside ares_query (bad
 * name, no server, send error) and always from inside ares_process_fd or
 * ares_cancel.  Our c-ares callbacks only store the result on a done list;
 * the caller's callbacks run from a nop op's completion, so never inside a
 * dns_* call and never with c-ares on the stack (a caller's callback may
 * start queries or call dns_free).
 *
 * Lifetime.  Every dns_query_* callback runs exactly once, from the ring.
 * dns_free cancels what is outstanding (those callbacks get DNS_TEMPFAIL,
 * later, from the ring), destroys the channel at once and marks the handle
 * dying; the handle frees itself from a ring completion once none of its
 * ops is in flight, which takes a turn or two of the caller's loop.  So:
 * keep running the ring after dns_free until the callbacks have come in,
 * keep each query's arg valid until its callback, and make no dns_* call on
 * the handle after dns_free except from those callbacks (queries started
 * there fail at once with DNS_TEMPFAIL).  dns_free must not be called twice. */
#include "dns.h"
#include "dns_int.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define DNS_TIMEOUT_MS 2000
#define DNS_TRIES      2

struct dns_sock {
	struct dns_sock *next;
	struct dns *d;
	int fd;
	bool want_rd, want_wr;
	bool closed; /* c-ares has closed (or is closing) fd */
	struct ring_op op_rd, op_wr, op_cancel;
};

struct dns_req;

/* One c-ares query of a request (an address request has two). */
struct dns_sub {
	struct dns_req *req;
	int family;
};

struct dns_req {
	struct dns_req *next; /* on the done list */
	struct dns *d;
	bool is_mx, is_tlsa, is_txt;
	dns_mx_cb mx_cb;
	dns_addr_cb addr_cb;
	dns_tlsa_cb tlsa_cb;
	dns_txt_cb txt_cb;
	void *arg;
	unsigned pending; /* c-ares queries outstanding */
	enum dns_status st, st6, st4;
	size_t n, n4;
	struct dns_sub sub6, sub4;
	union {
		struct dns_mx mx[DNS_MX_MAX];
		struct {
			struct dns_addr a[DNS_ADDR_MAX];  /* IPv6, then the result */
			struct dns_addr a4[DNS_ADDR_MAX]; /* IPv4 */
		} addr;
		struct {
			struct dns_txt t[DNS_TXT_MAX];
			char buf[DNS_TXT_BYTES];
		} txt;
	} u;
};

struct dns {
	struct dns_ub *ub; /* dns_init_dnssec: everything goes there */
	struct ring *ring;
	ares_channel channel; /* NULL once destroyed */
	struct dns_sock *socks;
	struct dns_req *done, **done_tail;
	int tfd;
	bool timer_set;
	bool dying;
	struct ring_op op_timer, op_tcancel, op_nop;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status;

static void lib_init(void)
{
	lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static void sock_rd_cb(struct ring_op *op, int res, unsigned flags);
static void sock_wr_cb(struct ring_op *op, int res, unsigned flags);
static void sock_cancel_cb(struct ring_op *op, int res, unsigned flags);
static void timer_cb(struct ring_op *op, int res, unsigned flags);
static void tcancel_cb(struct ring_op *op, int res, unsigned flags);
static void nop_cb(struct ring_op *op, int res, unsigned flags);

/* ---- results ---- */

static enum dns_status map_status(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENOTFOUND:
	case ARES_EBADNAME: /* cannot exist */
		return DNS_NXDOMAIN;
	case ARES_ENODATA:
		return DNS_NODATA;
	default: /* ETIMEOUT, ESERVFAIL, EREFUSED, ECONNREFUSED, ECANCELLED, ... */
		return DNS_TEMPFAIL;
	}
}

static void arm_nop(struct dns *d)
{
	if (!ring_op_busy(&d->op_nop))
		ring_nop(d->ring, &d->op_nop);
}

/* Puts a finished request on the done list; the nop delivers it. */
static void req_done(struct dns_req *r)
{
	struct dns *d = r->d;

	r->next = NULL;
	*d->done_tail = r;
	d->done_tail = &r->next;
	arm_nop(d);
}

static void deliver(struct dns_req *r)
{
	if (r->is_tlsa)
		r->tlsa_cb(r->arg, DNS_TEMPFAIL, false, NULL, 0); /* c-ares cannot tell */
	else if (r->is_txt)
		r->txt_cb(r->arg, r->st, false, r->n ? r->u.txt.t : NULL, r->n);
	else if (r->is_mx)
		r->mx_cb(r->arg, r->st, false, r->n ? r->u.mx : NULL, r->n);
	else
		r->addr_cb(r->arg, r->st, false, r->n ? r->u.addr.a : NULL, r->n);
	free(r);
}

static void copy_name(char *dst, const char *src)
{
	size_t len = strlen(src);

	if (len > 0 && src[len - 1] == '.')
		len--;
	if (len > DNS_NAME_MAX)
		len = DNS_NAME_MAX;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static void mx_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *r = arg;
	struct ares_mx_reply *list = NULL;

	if (status == ARES_SUCCESS)
		status = ares_parse_mx_reply(abuf, alen, &list);
	r->st = map_status(status);
	if (status == ARES_SUCCESS) {
		for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
			size_t i = r->n;

			if (r->n == DNS_MX_MAX) {
				/* More than fit: keep the most preferred. */
				i = 0;
				for (size_t k = 1; k < r->n; k++)
					if (r->u.mx[k].pref > r->u.mx[i].pref)
						i = k;
				if (m->priority >= r->u.mx[i].pref)
					continue;
			} else {
				r->n++;
			}
			copy_name(r->u.mx[i].host, m->host ? m->host : "");
			r->u.mx[i].pref = m->priority;
		}
		if (r->n == 0)
			r->st = DNS_NODATA;
	}
	if (list != NULL)
		ares_free_data(list);
	r->pending--;
	req_done(r);
}

static void txt_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_req *r = arg;
	struct ares_txt_ext *list = NULL;
	size_t used = 0;

	if (status == ARES_SUCCESS)
		status = ares_parse_txt_reply_ext(abuf, alen, &list);
	r->st = map_status(status);
	for (struct ares_txt_ext *t = list; status == ARES_SUCCESS && t != NULL; t = t->next) {
		struct dns_txt *cur;

		if (t->record_start) {
			if (r->n == DNS_TXT_MAX)
				break;
			r->u.txt.t[r->n].s = r->u.txt.buf + used;
			r->u.txt.t[r->n].len = 0;
			r->n++;
		}
		if (r->n == 0 || used + t->length > sizeof(r->u.txt.buf))
			break; /* too much: the rest is left out */
		cur = &r->u.txt.t[r->n - 1];
		memcpy(r->u.txt.buf + used, t->txt, t->length);
		used += t->length;
		cur->len += t->length;
	}
	if (status == ARES_SUCCESS && r->n == 0)
		r->st = DNS_NODATA;
	if (list != NULL)
		ares_free_data(list);
	r->pending--;
	req_done(r);
}

static void set_addr(struct dns_addr *a, int family, const void *bin)
{
	memset(a, 0, sizeof(*a));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->sa;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, bin, sizeof(s6->sin6_addr));
		a->len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&a->sa;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, bin, sizeof(s4->sin_addr));
		a->len = sizeof(*s4);
	}
}

static bool addr_seen(const struct dns_addr *a, size_t n, const struct dns_addr *x)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].len == x->len && memcmp(&a[i].sa, &x->sa, x->len) == 0)
			return true;
	return false;
}

/* Adds an address to its family's list, without duplicates. */
static void addr_add(struct dns_req *r, int family, const void *bin)
{
	struct dns_addr x, *list = family == AF_INET6 ? r->u.addr.a : r->u.addr.a4;
	size_t *n = family == AF_INET6 ? &r->n : &r->n4;

	set_addr(&x, family, bin);
	if (*n < DNS_ADDR_MAX && !addr_seen(list, *n, &x))
		list[(*n)++] = x;
}

/* Both families are in: IPv6 first, then IPv4, and the overall status. */
static void addr_finish(struct dns_req *r)
{
	for (size_t i = 0; i < r->n4 && r->n < DNS_ADDR_MAX; i++)
		if (!addr_seen(r->u.addr.a, r->n, &r->u.addr.a4[i]))
			r->u.addr.a[r->n++] = r->u.addr.a4[i];
	if (r->n > 0)
		r->st = DNS_OK;
	else if (r->st6 == DNS_TEMPFAIL || r->st4 == DNS_TEMPFAIL)
		r->st = DNS_TEMPFAIL;
	else if (r->st6 == DNS_NXDOMAIN || r->st4 == DNS_NXDOMAIN)
		r->st = DNS_NXDOMAIN;
	else
		r->st = DNS_NODATA;
	req_done(r);
}

static void addr_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_sub *sub = arg;
	struct dns_req *r = sub->req;
	int n = DNS_ADDR_MAX;

	if (sub->family == AF_INET6) {
		struct ares_addr6ttl ttl[DNS_ADDR_MAX];

		if (status == ARES_SUCCESS)
			status = ares_parse_aaaa_reply(abuf, alen, NULL, ttl, &n);
		if (status == ARES_SUCCESS)
			for (int i = 0; i < n; i++)
				addr_add(r, AF_INET6, &ttl[i].ip6addr);
		r->st6 = map_status(status);
	} else {
		struct ares_addrttl ttl[DNS_ADDR_MAX];

		if (status == ARES_SUCCESS)
			status = ares_parse_a_reply(abuf, alen, NULL, ttl, &n);
		if (status == ARES_SUCCESS)
			for (int i = 0; i < n; i++)
				addr_add(r, AF_INET, &ttl[i].ipaddr);
		r->st4 = map_status(status);
	}
	if (--r->pending == 0)
		addr_finish(r);
}

/* ---- sockets ---- */

static void sock_arm(struct dns_sock *s)
{
	if (s->closed)
		return;
	if (s->want_rd && !ring_op_busy(&s->op_rd))
		ring_poll(s->d->ring, &s->op_rd, s->fd, POLLIN, false);
	if (s->want_wr && !ring_op_busy(&s->op_wr))
		ring_poll(s->d->ring, &s->op_wr, s->fd, POLLOUT, false);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock *s;

	for (s = d->socks; s != NULL; s = s->next)
		if (s->fd == fd && !s->closed)
			break;
	if (readable || writable) {
		if (s == NULL) {
			s = calloc(1, sizeof(*s));
			if (s == NULL) {
				/* Cannot watch it: c-ares's timeouts will end
				 * the query instead. */
				return;
			}
			s->d = d;
			s->fd = fd;
			ring_op_init(&s->op_rd, RING_POLL, sock_rd_cb, s);
			ring_op_init(&s->op_wr, RING_POLL, sock_wr_cb, s);
			ring_op_init(&s->op_cancel, RING_CANCEL, sock_cancel_cb, s);
			s->next = d->socks;
			d->socks = s;
		}
		s->want_rd = readable;
		s->want_wr = writable;
		sock_arm(s);
		return;
	}
	if (s == NULL)
		return;
	/* c-ares closes fd when this returns. */
	s->closed = true;
	s->want_rd = s->want_wr = false;
	if (ring_op_busy(&s->op_rd) || ring_op_busy(&s->op_wr)) {
		ring_cancel_fd(d->ring, &s->op_cancel, fd);
		if (ring_flush(d->ring) < 0) {
			/* Not submitted before the close: wake the polls
			 * another way (the socket is going anyway). */
			shutdown(fd, SHUT_RDWR);
		}
	} else {
		/* Nothing of it in flight: freed at the end of this step. */
		arm_nop(d);
	}
}

/* Frees closed records whose ops are all idle. */
static void sock_sweep(struct dns *d)
{
	struct dns_sock **pp = &d->socks;

	while (*pp != NULL) {
		struct dns_sock *s = *pp;

		if (s->closed && !ring_op_busy(&s->op_rd) && !ring_op_busy(&s->op_wr) &&
		    !ring_op_busy(&s->op_cancel)) {
			*pp = s->next;
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

/* ---- the step after every completion ---- */

static void timer_update(struct dns *d)
{
	struct itimerspec its;
	struct timeval tv, *tvp;

	if (d->dying)
		return; /* dns_free has cancelled its poll */
	memset(&its, 0, sizeof(its));
	tvp = ares_timeout(d->channel, NULL, &tv);
	if (tvp == NULL && !d->timer_set)
		return;
	if (tvp != NULL) {
		its.it_value.tv_sec = tvp->tv_sec;
		its.it_value.tv_nsec = (long)tvp->tv_usec * 1000;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1; /* zero would disarm it */
	}
	if (timerfd_settime(d->tfd, 0, &its, NULL) < 0)
		return;
	d->timer_set = tvp != NULL;
	if (d->timer_set && !ring_op_busy(&d->op_timer))
		ring_poll(d->ring, &d->op_timer, d->tfd, POLLIN, false);
}

/* Returns true when d has been freed. */
static bool finish(struct dns *d)
{
	if (!d->dying || d->channel != NULL || d->done != NULL || ring_op_busy(&d->op_nop) ||
	    ring_op_busy(&d->op_timer) || ring_op_busy(&d->op_tcancel) || d->socks != NULL)
		return false;
	close(d->tfd);
	free(d);
	return true;
}

/* Ends every completion handler: d may be freed by it. */
static void step_done(struct dns *d)
{
	timer_update(d);
	sock_sweep(d);
	if (d->done != NULL)
		arm_nop(d);
	finish(d);
}

static void sock_rd_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns_sock *s = op->owner;
	struct dns *d = s->d;

	if (!s->closed && d->channel != NULL) {
		if (res == -EBADF || (res > 0 && (res & POLLNVAL))) {
			s->want_rd = false; /* not ours any more: stop watching */
		} else {
			/* An error or hang-up: c-ares learns it from recv. */
			ares_process_fd(d->channel, s->fd, ARES_SOCKET_BAD);
			sock_arm(s);
		}
	}
	step_done(d);
}

static void sock_wr_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns_sock *s = op->owner;
	struct dns *d = s->d;

	if (!s->closed && d->channel != NULL) {
		if (res == -EBADF || (res > 0 && (res & POLLNVAL))) {
			s->want_wr = false;
		} else {
			ares_process_fd(d->channel, ARES_SOCKET_BAD, s->fd);
			sock_arm(s);
		}
	}
	step_done(d);
}

static void sock_cancel_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns_sock *s = op->owner;

	step_done(s->d);
}

static void timer_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns *d = op->owner;
	uint64_t ticks;

	if (read(d->tfd, &ticks, sizeof(ticks)) < 0) {
		/* EAGAIN: moved after it fired; process anyway. */
	}
	d->timer_set = false;
	if (!d->dying)
		ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	step_done(d);
}

static void tcancel_cb(struct ring_op *op, int res, unsigned flags)
{
	step_done(op->owner);
}

static void nop_cb(struct ring_op *op, int res, unsigned flags)
{
	struct dns *d = op->owner;
	struct dns_req *list = d->done;

	/* Take the list: results queued by the callbacks below (new queries
	 * that failed at once, dns_free's cancellations) come on the next
	 * turn.  d stays allocated meanwhile: finish() waits for an empty
	 * list and an idle nop, and only runs below. */
	d->done = NULL;
	d->done_tail = &d->done;
	while (list != NULL) {
		struct dns_req *r = list;

		list = r->next;
		deliver(r);
	}
	step_done(d);
}

/* ---- API ---- */

/* Checks a DNSServer value, "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" (or
 * a comma-separated list of them), and writes it in the form c-ares takes.
 * Returns NULL or why not. */
static const char *server_csv(const char *server, char *out, size_t outlen)
{
	const char *p = server;
	size_t len = 0;

	out[0] = '\0';
	for (;;) {
		const char *end = strchr(p, ','), *addr = p, *port = NULL;
		size_t n = end ? (size_t)(end - p) : strlen(p), alen;
		unsigned char bin[sizeof(struct in6_addr)];
		char abuf[INET6_ADDRSTRLEN + 1];
		unsigned long pv = 53;
		int af, w;

		if (n == 0)
			return "empty address";
		if (*p == '[') {
			const char *close = memchr(p, ']', n);

			if (close == NULL)
				return "missing ']'";
			addr = p + 1;
			alen = (size_t)(close - addr);
			if (close + 1 < p + n) {
				if (close[1] != ':')
					return "text after ']'";
				port = close + 2;
			}
			af = AF_INET6;
		} else {
			const char *colon = memchr(p, ':', n);

			/* one colon: IPv4 and port; more: a bare IPv6 address */
			if (colon != NULL &&
			    memchr(colon + 1, ':', (size_t)(p + n - colon - 1)) == NULL) {
				alen = (size_t)(colon - p);
				port = colon + 1;
				af = AF_INET;
			} else {
				alen = n;
				af = colon ? AF_INET6 : AF_INET;
			}
		}
		if (alen == 0 || alen >= sizeof(abuf))
			return "bad address";
		memcpy(abuf, addr, alen);
		abuf[alen] = '\0';
		if (inet_pton(af, abuf, bin) != 1)
			return af == AF_INET6 ? "bad IPv6 address" : "bad IPv4 address";
		if (port != NULL) {
			const char *q = port;

			pv = 0;
			if (q == p + n || (size_t)(p + n - q) > 5)
				return "bad port";
			for (; q < p + n; q++) {
				if (*q < '0' || *q > '9')
					return "bad port";
				pv = pv * 10 + (unsigned long)(*q - '0');
			}
			if (pv < 1 || pv > 65535)
				return "bad port";
		}
		w = snprintf(out + len, outlen - len, "%s%s%s%s:%lu", len ? "," : "",
		             af == AF_INET6 ? "[" : "", abuf, af == AF_INET6 ? "]" : "", pv);
		if (w < 0 || (size_t)w >= outlen - len)
			return "too long";
		len += (size_t)w;
		if (end == NULL)
			return NULL;
		p = end + 1;
	}
}

/* server_csv of DNSServer (when set), or -1 with err saying why not. */
static int server_check(const char *server, char *csv, size_t csvlen, char *err, size_t errlen)
{
	const char *why;

	if (server == NULL || (why = server_csv(server, csv, csvlen)) == NULL)
		return 0;
	snprintf(err, errlen, "DNSServer '%s': %s", server, why);
	return -1;
}

int dns_init(struct dns **dp, struct ring *ring, const char *server, char *err, size_t errlen)
{
	struct ares_options opts;
	struct dns *d;
	char csv[512];
	int rc;

	*dp = NULL;
	pthread_once(&lib_once, lib_init);
	if (lib_status != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(lib_status));
		return -1;
	}
	if (server_check(server, csv, sizeof(csv), err, errlen) < 0)
		return -1;
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(err, errlen, "dns: out of memory");
		return -1;
	}
	d->ring = ring;
	d->done_tail = &d->done;
	ring_op_init(&d->op_timer, RING_POLL, timer_cb, d);
	ring_op_init(&d->op_tcancel, RING_CANCEL, tcancel_cb, d);
	ring_op_init(&d->op_nop, RING_NOP, nop_cb, d);
	d->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (d->tfd < 0) {
		snprintf(err, errlen, "dns: timerfd: %s", strerror(errno));
		free(d);
		return -1;
	}
	memset(&opts, 0, sizeof(opts));
	/* NOCHECKRESP stays off: a SERVFAIL or REFUSED answer moves on to
	 * the next server and ends as a temporary failure. */
	opts.flags = 0;
	opts.timeout = DNS_TIMEOUT_MS;
	opts.tries = DNS_TRIES;
	opts.sock_state_cb = sock_state;
	opts.sock_state_cb_data = d;
	rc = ares_init_options(&d->channel, &opts,
	                       ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                           ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		d->channel = NULL;
		goto fail;
	}
	if (server != NULL) {
		rc = ares_set_servers_ports_csv(d->channel, csv);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "DNSServer '%s': %s", server, ares_strerror(rc));
			goto fail;
		}
	}
	*dp = d;
	return 0;
fail:
	if (d->channel != NULL)
		ares_destroy(d->channel); /* no socket opened yet */
	sock_sweep(d);
	close(d->tfd);
	free(d);
	return -1;
}

void dns_free(struct dns *d)
{
	if (d == NULL || d->dying)
		return;
	if (d->ub != NULL) {
		dns_ub_free(d->ub); /* it frees itself from the ring */
		free(d);
		return;
	}
	d->dying = true;
	if (d->channel != NULL) {
		ares_channel ch = d->channel;

		/* Each outstanding query's callback runs now with
		 * ARES_ECANCELLED (or EDESTRUCTION) and lands on the done
		 * list; the sockets close, cancelling their polls. */
		ares_cancel(ch);
		ares_destroy(ch);
		d->channel = NULL;
	}
	if (ring_op_busy(&d->op_timer))
		ring_cancel_fd(d->ring, &d->op_tcancel, d->tfd);
	arm_nop(d); /* frees d from the ring once all is idle */
}

static struct dns_req *req_new(struct dns *d, bool is_mx, void *arg)
{
	struct dns_req *r = malloc(sizeof(*r));

	if (r == NULL)
		return NULL;
	memset(r, 0, offsetof(struct dns_req, u));
	r->d = d;
	r->is_mx = is_mx;
	r->arg = arg;
	r->st = r->st6 = r->st4 = DNS_TEMPFAIL;
	r->sub6.req = r->sub4.req = r;
	r->sub6.family = AF_INET6;
	r->sub4.family = AF_INET;
	return r;
}

/* Asks c-ares for one record type of name as r (done at once, from the
 * ring, when the handle is going away). */
static void ask_one(struct dns *d, struct dns_req *r, const char *name, int type,
                    ares_callback answer)
{
	if (d->dying || d->channel == NULL) {
		req_done(r);
		return;
	}
	r->pending = 1;
	ares_query(d->channel, name, ns_c_in, type, answer, r);
	/* Sent, or failed at once onto the done list; the timer may have
	 * to move.  A socket closed meanwhile is swept by the nop. */
	timer_update(d);
}

void dns_query_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *arg)
{
	struct dns_req *r;

	if (d->ub != NULL) {
		dns_ub_query_mx(d->ub, domain, cb, arg);
		return;
	}
	r = req_new(d, true, arg);
	if (r == NULL) {
		/* No memory even to queue the failure: nothing better to do
		 * than to say so at once. */
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->mx_cb = cb;
	ask_one(d, r, domain, ns_t_mx, mx_answer);
}

/* /etc/hosts first (like "hosts: files dns"), then DNS.  Returns true when
 * the file knows the name. */
static bool addr_from_hosts(struct dns_req *r, const char *host)
{
	static const int families[2] = {AF_INET6, AF_INET};
	bool found = false;

	for (int i = 0; i < 2; i++) {
		struct hostent *he = NULL;

		if (ares_gethostbyname_file(r->d->channel, host, families[i], &he) !=
		        ARES_SUCCESS ||
		    he == NULL) {
			continue;
		}
		if (he->h_addrtype == families[i]) {
			for (char **p = he->h_addr_list; p != NULL && *p != NULL; p++) {
				addr_add(r, families[i], *p);
				found = true;
			}
		}
		ares_free_hostent(he);
	}
	return found;
}

void dns_query_addr(struct dns *d, const char *host, dns_addr_cb cb, void *arg)
{
	struct dns_req *r;
	unsigned char bin[sizeof(struct in6_addr)];

	if (d->ub != NULL) {
		dns_ub_query_addr(d->ub, host, cb, arg);
		return;
	}
	r = req_new(d, false, arg);
	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->addr_cb = cb;
	if (d->dying || d->channel == NULL) {
		req_done(r);
		return;
	}
	/* An address needs no lookup. */
	if (inet_pton(AF_INET6, host, bin) == 1 || inet_pton(AF_INET, host, bin) == 1) {
		addr_add(r, strchr(host, ':') ? AF_INET6 : AF_INET, bin);
		addr_finish(r);
		return;
	}
	if (addr_from_hosts(r, host)) {
		addr_finish(r);
		return;
	}
	r->pending = 2;
	/* Either may fail at once; r is freed only after its delivery. */
	ares_query(d->channel, host, ns_c_in, ns_t_aaaa, addr_answer, &r->sub6);
	ares_query(d->channel, host, ns_c_in, ns_t_a, addr_answer, &r->sub4);
	timer_update(d);
}

void dns_query_tlsa(struct dns *d, const char *host, unsigned port, dns_tlsa_cb cb, void *arg)
{
	struct dns_req *r;

	if (d->ub != NULL) {
		dns_ub_query_tlsa(d->ub, host, port, cb, arg);
		return;
	}
	r = req_new(d, false, arg);
	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->is_tlsa = true;
	r->tlsa_cb = cb;
	req_done(r); /* c-ares validates nothing: no secure answer to give */
}

void dns_query_txt(struct dns *d, const char *name, dns_txt_cb cb, void *arg)
{
	struct dns_req *r;

	if (d->ub != NULL) {
		dns_ub_query_txt(d->ub, name, cb, arg);
		return;
	}
	r = req_new(d, false, arg);
	if (r == NULL) {
		cb(arg, DNS_TEMPFAIL, false, NULL, 0);
		return;
	}
	r->is_txt = true;
	r->txt_cb = cb;
	ask_one(d, r, name, ns_t_txt, txt_answer);
}

int dns_init_dnssec(struct dns **dp, struct ring *ring, const char *server, const char *anchor,
                    char *err, size_t errlen)
{
	struct dns *d;
	char csv[512];

	*dp = NULL;
	if (server_check(server, csv, sizeof(csv), err, errlen) < 0)
		return -1;
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(err, errlen, "dns: out of memory");
		return -1;
	}
	d->ring = ring;
	d->tfd = -1;
	if (dns_ub_init(&d->ub, ring, server != NULL ? csv : NULL, anchor, err, errlen) < 0) {
		free(d);
		return -1;
	}
	*dp = d;
	return 0;
}

const char *dns_why_bogus(const struct dns *d)
{
	return d->ub != NULL ? dns_ub_why_bogus(d->ub) : "";
}

const char *dns_status_name(enum dns_status st)
{
	switch (st) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_BOGUS:
		return "bogus";
	}
	return "?";
}

int dns_anchor_read(const char *path, char **text, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r"), *mem;
	char line[4096], *buf = NULL;
	size_t len = 0;
	int n = 0;

	*text = NULL;
	if (f == NULL) {
		snprintf(err, errlen, "DNSSECTrustAnchorFile %s: %s", path, strerror(errno));
		return -1;
	}
	if ((mem = open_memstream(&buf, &len)) == NULL) {
		fclose(f);
		snprintf(err, errlen, "DNSSECTrustAnchorFile %s: out of memory", path);
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *c = strchr(line, ';'), copy[sizeof(line)];
		bool rr = false;

		if (c != NULL)
			*c = '\0'; /* a comment */
		line[strcspn(line, "\r\n")] = '\0';
		snprintf(copy, sizeof(copy), "%s", line);
		for (char *save = NULL, *t = strtok_r(copy, " \t", &save); t != NULL && !rr;
		     t = strtok_r(NULL, " \t", &save))
			rr = strcasecmp(t, "DS") == 0 || strcasecmp(t, "DNSKEY") == 0;
		if (rr) {
			fprintf(mem, "%s\n", line);
			n++;
		}
	}
	fclose(f);
	fclose(mem);
	if (n == 0) {
		free(buf);
		snprintf(err, errlen, "DNSSECTrustAnchorFile %s: no DS or DNSKEY record in it",
		         path);
		return -1;
	}
	*text = buf;
	return n;
}

int dns_probe_dnssec(const char *server, const char *anchor, char *out, size_t outlen)
{
	char csv[512];

	if (server_check(server, csv, sizeof(csv), out, outlen) < 0)
		return -1;
	return dns_ub_probe(server != NULL ? csv : NULL, anchor, out, outlen);
}

int dns_txt_sync(const char *server, const char *name, char ***txt, size_t *n, char *err,
                 size_t errlen)
{
	char csv[512];

	*txt = NULL;
	*n = 0;
	if (server_check(server, csv, sizeof(csv), err, errlen) < 0)
		return -1;
	return dns_ub_txt_sync(server != NULL ? csv : NULL, name, txt, n, err, errlen);
}

int dns_addr_sync(const char *server, const char *host, char *ip, size_t iplen, char *err,
                  size_t errlen)
{
	char csv[512];

	ip[0] = '\0';
	if (server_check(server, csv, sizeof(csv), err, errlen) < 0)
		return -1;
	return dns_ub_addr_sync(server != NULL ? csv : NULL, host, ip, iplen, err, errlen);
}
