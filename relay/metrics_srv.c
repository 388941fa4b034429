/* metrics_srv: see metrics_srv.h. */
#include "metrics_srv.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics_http.h"
#include "strbuf.h"

#define TIMEOUT_NS ((int64_t)METRICS_SRV_TIMEOUT_S * 1000000000)
#define RETRY_NS   (100 * 1000000LL) /* after an accept error (EMFILE...) */
/* After the answer: what the client still sends is read and dropped, for
 * at most this long and this much, until it closes (a close with unread
 * bytes would reset the connection, and the client could lose the answer) */
#define LINGER_NS   (2000 * 1000000LL)
#define LINGER_MAX  (64u << 10)
#define CONTENT_200 "text/plain; version=0.0.4; charset=utf-8"

struct mconn {
	struct metrics_srv *ms;
	int fd;
	bool answering; /* the request is read: the answer is being sent */
	bool draining;  /* the answer is sent: reading what is left until EOF */
	bool ending;    /* its operations are being cancelled, then it closes */
	size_t drained;
	size_t inlen;
	struct strbuf out;
	size_t sent;
	struct ring_op op_recv, op_send, op_close;
	struct wheel_timer deadline;
	struct mconn *prev, *next; /* ms->conns: newest first */
	char in[METRICS_HTTP_MAX];
};

struct metrics_srv {
	struct ring *ring;
	struct metrics *m;
	int fd;
	char text[80];
	bool stopping;
	struct ring_op op_accept;
	struct wheel_timer retry;
	struct mconn *conns;
	unsigned live; /* connections not ending */
};

static void accept_cb(struct ring_op *op, int res, unsigned flags);
static void retry_fire(struct wheel_timer *t);
static void conn_cb(struct ring_op *op, int res, unsigned flags);
static void deadline_fire(struct wheel_timer *t);

struct metrics_srv *metrics_srv_new(struct ring *ring, struct metrics *m,
                                    const struct config_listen *l, char *err, size_t errlen)
{
	struct metrics_srv *ms = calloc(1, sizeof(*ms));
	int one = 1;

	if (ms == NULL) {
		snprintf(err, errlen, "MetricsListen=%s: out of memory", l->text);
		return NULL;
	}
	ms->ring = ring;
	ms->m = m;
	snprintf(ms->text, sizeof(ms->text), "%s", l->text);
	ms->fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ms->fd < 0)
		goto fail;
	setsockopt(ms->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->addr.ss_family == AF_INET6)
		setsockopt(ms->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(ms->fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 ||
	    listen(ms->fd, 64) < 0)
		goto fail;
	ring_op_init(&ms->op_accept, RING_ACCEPT, accept_cb, ms);
	wheel_timer_init(&ms->retry, retry_fire, ms);
	return ms;
fail:
	snprintf(err, errlen, "MetricsListen=%s: %s", l->text, strerror(errno));
	if (ms->fd >= 0)
		close(ms->fd);
	free(ms);
	return NULL;
}

void metrics_srv_start(struct metrics_srv *ms)
{
	ring_accept_multishot(ms->ring, &ms->op_accept, ms->fd);
}

/* ---- a connection ---------------------------------------------------------- */

static void conn_free(struct mconn *c)
{
	struct metrics_srv *ms = c->ms;

	if (c->prev)
		c->prev->next = c->next;
	else
		ms->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	strbuf_free(&c->out);
	free(c);
}

/* Once nothing of c is in flight: its close, then it is freed. */
static void conn_settle(struct mconn *c)
{
	if (ring_op_busy(&c->op_recv) || ring_op_busy(&c->op_send) || ring_op_busy(&c->op_close))
		return;
	if (c->fd >= 0) {
		ring_close(c->ms->ring, &c->op_close, c->fd);
		c->fd = -1;
		return;
	}
	conn_free(c);
}

static void conn_end(struct mconn *c)
{
	struct ring *r = c->ms->ring;

	if (c->ending)
		return;
	c->ending = true;
	c->ms->live--;
	ring_timer_disarm(r, &c->deadline);
	if (ring_op_busy(&c->op_recv))
		ring_cancel_op(r, &c->op_recv);
	if (ring_op_busy(&c->op_send))
		ring_cancel_op(r, &c->op_send);
	conn_settle(c);
}

static void deadline_fire(struct wheel_timer *t)
{
	conn_end(t->owner);
}

static void send_rest(struct mconn *c)
{
	ring_send(c->ms->ring, &c->op_send, c->fd, c->out.p + c->sent, c->out.len - c->sent, false);
}

static void answer(struct mconn *c, int status, bool head)
{
	struct strbuf body = {0};
	const char *reason = metrics_http_reason(status);

	if (status == 200)
		metrics_render(c->ms->m, &body, time(NULL));
	else
		strbuf_printf(&body, "%d %s\n", status, reason);
	strbuf_printf(&c->out,
	              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	              "Connection: close\r\n\r\n",
	              status, reason, status == 200 ? CONTENT_200 : "text/plain; charset=utf-8",
	              body.len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head && body.len > 0)
		strbuf_put(&c->out, body.p, body.len);
	if (body.oom || c->out.oom) {
		log_warnx("metrics: out of memory for an answer");
		strbuf_free(&body);
		conn_end(c);
		return;
	}
	strbuf_free(&body);
	c->answering = true;
	/* as long again to read the answer as there was to send the request */
	ring_timer_arm(c->ms->ring, &c->deadline, ring_now(c->ms->ring) + TIMEOUT_NS);
	send_rest(c);
}

static void conn_cb(struct ring_op *op, int res, unsigned flags)
{
	struct mconn *c = op->owner;
	bool head;
	int status;

	if (op == &c->op_close) {
		conn_settle(c);
		return;
	}
	if (c->ending) {
		conn_settle(c);
		return;
	}
	if (res <= 0) { /* gone, reset, or an error */
		conn_end(c);
		return;
	}
	if (op == &c->op_send) {
		c->sent += (size_t)res;
		if (c->sent < c->out.len) {
			send_rest(c);
			return;
		}
		/* answered: our side is done; the client's end, then the close */
		shutdown(c->fd, SHUT_WR);
		c->draining = true;
		ring_timer_arm(c->ms->ring, &c->deadline, ring_now(c->ms->ring) + LINGER_NS);
		ring_recv(c->ms->ring, &c->op_recv, c->fd, c->in, sizeof(c->in), false);
		return;
	}
	if (c->draining) {
		c->drained += (size_t)res;
		if (c->drained > LINGER_MAX)
			conn_end(c);
		else
			ring_recv(c->ms->ring, &c->op_recv, c->fd, c->in, sizeof(c->in), false);
		return;
	}
	c->inlen += (size_t)res;
	status = metrics_http_parse(c->in, c->inlen, &head);
	if (status == 0 && c->inlen < sizeof(c->in)) {
		ring_recv(c->ms->ring, &c->op_recv, c->fd, c->in + c->inlen,
		          sizeof(c->in) - c->inlen, false);
		return;
	}
	answer(c, status ? status : 400, head);
}

/* At METRICS_SRV_CONNS: the oldest connection still sending its request,
 * or that had its answer already, makes room.  False when every one has
 * its answer coming. */
static bool make_room(struct metrics_srv *ms)
{
	struct mconn *c = ms->conns, *victim = NULL;

	for (; c != NULL; c = c->next)
		if (!c->ending && (!c->answering || c->draining))
			victim = c; /* the list is newest first: the last found is the oldest */
	if (victim == NULL)
		return false;
	conn_end(victim);
	return true;
}

static void conn_start(struct metrics_srv *ms, int fd)
{
	struct mconn *c;

	if (ms->live >= METRICS_SRV_CONNS && !make_room(ms)) {
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->ms = ms;
	c->fd = fd;
	ring_op_init(&c->op_recv, RING_RECV, conn_cb, c);
	ring_op_init(&c->op_send, RING_SEND, conn_cb, c);
	ring_op_init(&c->op_close, RING_CLOSE, conn_cb, c);
	wheel_timer_init(&c->deadline, deadline_fire, c);
	c->next = ms->conns;
	if (ms->conns)
		ms->conns->prev = c;
	ms->conns = c;
	ms->live++;
	ring_timer_arm(ms->ring, &c->deadline, ring_now(ms->ring) + TIMEOUT_NS);
	ring_recv(ms->ring, &c->op_recv, fd, c->in, sizeof(c->in), false);
}

/* ---- the listener ---------------------------------------------------------- */

static void accept_cb(struct ring_op *op, int res, unsigned flags)
{
	struct metrics_srv *ms = op->owner;

	if (res >= 0) {
		if (ms->stopping)
			close(res);
		else
			conn_start(ms, res);
	} else if (res != -ECANCELED && !ms->stopping) {
		log_warnx("metrics: accept on %s: %s", ms->text, strerror(-res));
	}
	if (!(flags & IORING_CQE_F_MORE) && !ms->stopping) {
		if (res < 0) /* EMFILE...: a little later */
			ring_timer_arm(ms->ring, &ms->retry, ring_now(ms->ring) + RETRY_NS);
		else
			ring_accept_multishot(ms->ring, &ms->op_accept, ms->fd);
	}
}

static void retry_fire(struct wheel_timer *t)
{
	struct metrics_srv *ms = t->owner;

	if (!ms->stopping && !ring_op_busy(&ms->op_accept))
		ring_accept_multishot(ms->ring, &ms->op_accept, ms->fd);
}

void metrics_srv_stop(struct metrics_srv *ms)
{
	if (ms == NULL || ms->stopping)
		return;
	ms->stopping = true;
	ring_timer_disarm(ms->ring, &ms->retry);
	/* ends the multishot accept (an error CQE); the fd is closed at free */
	shutdown(ms->fd, SHUT_RDWR);
	for (struct mconn *c = ms->conns, *next; c != NULL; c = next) {
		next = c->next; /* (conn_end frees nothing: closes go through the ring) */
		conn_end(c);
	}
}

bool metrics_srv_idle(const struct metrics_srv *ms)
{
	return ms == NULL || (!ring_op_busy(&ms->op_accept) && ms->conns == NULL);
}

void metrics_srv_free(struct metrics_srv *ms)
{
	if (ms == NULL)
		return;
	while (ms->conns != NULL) { /* left behind by a stop that ran out of time */
		struct mconn *c = ms->conns;
		ring_timer_disarm(ms->ring, &c->deadline);
		if (c->fd >= 0)
			close(c->fd);
		conn_free(c);
	}
	close(ms->fd);
	free(ms);
}
