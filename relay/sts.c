/* sts: see sts.h.
 *
 * One thread per handle takes requests from a list, reads the domain's
 * cached policy (CACHE_DIR/DOMAIN: "krelay-sts 1 ID FETCHED\n" then the
 * policy text as fetched), fetches a new one with libcurl when the cache
 * does not do (HTTPS only, no redirects, the name mta-sts.DOMAIN resolved
 * by the caller's DNS and handed to curl with CURLOPT_RESOLVE, the
 * certificate checked against ca_file, at most STS_POLICY_MAX bytes,
 * Content-Type text/plain), writes the cache (temporary file, rename), and
 * puts the result on a done list, then writes an eventfd.  The ring polls
 * that eventfd and delivers the results from its dispatch.
 *
 * Stopping: sts_free sets the stop flag (curl's progress callback sees it
 * and abandons a transfer under way), joins the thread, and hands every
 * request not yet delivered back without a policy, from a nop. */
#include "sts.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define FETCH_TIMEOUT_S   60 /* the whole transfer (RFC 8461 section 3.3: a minute or so) */
#define CONNECT_TIMEOUT_S 10

struct sts_req {
	struct sts_req *next;
	char domain[STS_NAME_MAX + 1];
	char txt_id[STS_ID_MAX + 1];
	bool have_addr;
	struct dns_addr addr;
	char *ca; /* the CAs the policy host must chain to */
	sts_cb cb;
	void *arg;
	struct sts_result res;
};

struct sts {
	struct ring *ring;
	char *dir;
	pthread_t thread;
	pthread_mutex_t lock; /* guards todo and done */
	pthread_cond_t cond;
	struct sts_req *todo, **todo_tail;
	struct sts_req *done, **done_tail;
	atomic_bool stop;
	int efd;
	uint64_t efd_val;
	unsigned outstanding; /* asked, not yet delivered (ring side) */
	bool dying;
	struct sts_req *flush; /* sts_free: to deliver without a policy */
	struct ring_op op_poll, op_nop;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_status;

static void curl_init(void)
{
	curl_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- the thread: cache and fetch ---- */

/* A domain as a cache file name: lower-case letters, digits, '-', '.',
 * and not starting with '.'; else no caching. */
static bool cache_name(const char *domain, char *out, size_t outlen)
{
	size_t n = strlen(domain);

	if (n == 0 || n >= outlen || domain[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)tolower((unsigned char)domain[i]);
		if (!isalnum(c) && c != '-' && c != '.')
			return false;
		out[i] = (char)c;
	}
	out[n] = '\0';
	return true;
}

/* The cached policy of domain: text (malloc'd), its id and fetch time. */
static int cache_read(struct sts *s, const char *name, char **text, size_t *len, char *id,
                      time_t *fetched)
{
	char path[4096], head[128];
	long long t;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fgets(head, sizeof(head), f) == NULL ||
	    sscanf(head, "krelay-sts 1 %32s %lld", id, &t) != 2 ||
	    (*text = malloc(STS_POLICY_MAX + 1)) == NULL) {
		fclose(f);
		return -1;
	}
	n = fread(*text, 1, STS_POLICY_MAX + 1, f);
	fclose(f);
	*len = n;
	*fetched = (time_t)t;
	return 0;
}

static void cache_write(struct sts *s, const char *name, const char *id, time_t fetched,
                        const char *text, size_t len)
{
	char path[4096], tmp[4160];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", s->dir, name);
	if ((f = fopen(tmp, "w")) == NULL)
		return; /* no cache: the next lookup fetches again */
	fprintf(f, "krelay-sts 1 %s %lld\n", id, (long long)fetched);
	fwrite(text, 1, len, f);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		unlink(tmp);
}

struct body {
	char *p;
	size_t len;
	bool too_big;
};

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct body *b = userp;
	size_t n = size * nmemb;

	if (b->len + n > STS_POLICY_MAX) {
		b->too_big = true;
		return 0; /* curl stops: CURLE_WRITE_ERROR */
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return n;
}

static int progress_cb(void *clientp, curl_off_t dlt, curl_off_t dln, curl_off_t ult,
                       curl_off_t uln)
{
	struct sts *s = clientp;

	return atomic_load(&s->stop) ? 1 : 0; /* non-zero aborts */
}

/* GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt into b; 0, or -1
 * with why. */
static int fetch(struct sts *s, const struct sts_req *r, struct body *b, char *why, size_t wl)
{
	char url[STS_NAME_MAX + 64], resolve[STS_NAME_MAX + 80], ip[INET6_ADDRSTRLEN];
	char errbuf[CURL_ERROR_SIZE] = "";
	const void *bin;
	struct curl_slist *rl;
	const char *ctype = NULL;
	long code = 0;
	CURLcode rc;
	CURL *e;

	bin = r->addr.sa.ss_family == AF_INET6
	          ? (const void *)&((const struct sockaddr_in6 *)&r->addr.sa)->sin6_addr
	          : (const void *)&((const struct sockaddr_in *)&r->addr.sa)->sin_addr;
	if (inet_ntop(r->addr.sa.ss_family, bin, ip, sizeof(ip)) == NULL) {
		snprintf(why, wl, "bad address");
		return -1;
	}
	snprintf(url, sizeof(url), "https://mta-sts.%s/.well-known/mta-sts.txt", r->domain);
	snprintf(resolve, sizeof(resolve), "mta-sts.%s:443:%s%s%s", r->domain,
	         r->addr.sa.ss_family == AF_INET6 ? "[" : "", ip,
	         r->addr.sa.ss_family == AF_INET6 ? "]" : "");
	if ((e = curl_easy_init()) == NULL || (rl = curl_slist_append(NULL, resolve)) == NULL) {
		if (e != NULL)
			curl_easy_cleanup(e);
		snprintf(why, wl, "libcurl: out of memory");
		return -1;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_RESOLVE, rl);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* section 3.3: no redirects */
	curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_CAINFO, r->ca);
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)FETCH_TIMEOUT_S);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "krelay-mta-sts/1");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, s);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
	if (rc != CURLE_OK)
		snprintf(why, wl, "HTTPS: %.200s",
		         b->too_big  ? "policy larger than 64 KiB"
		         : errbuf[0] ? errbuf
		                     : curl_easy_strerror(rc));
	else if (code != 200)
		snprintf(why, wl, "HTTPS: status %ld", code);
	else if (ctype == NULL || strncasecmp(ctype, "text/plain", 10) != 0 ||
	         (ctype[10] != '\0' && ctype[10] != ';' && ctype[10] != ' '))
		snprintf(why, wl, "HTTPS: Content-Type %.60s, not text/plain",
		         ctype ? ctype : "missing");
	curl_easy_cleanup(e);
	curl_slist_free_all(rl);
	return why[0] ? -1 : 0;
}

static void use(struct sts_req *r, const struct sts_policy *p, const char *id, time_t expires,
                const char *source)
{
	r->res.have = true;
	r->res.policy = *p;
	snprintf(r->res.id, sizeof(r->res.id), "%s", id);
	r->res.expires = expires;
	r->res.source = source;
}

static void work(struct sts *s, struct sts_req *r)
{
	char name[STS_NAME_MAX + 1], cid[STS_ID_MAX + 1] = "", err[200];
	char *cached = NULL;
	size_t clen = 0;
	time_t fetched = 0, now = time(NULL), cexp = 0;
	struct sts_policy cp;
	bool cache_ok = false, named = cache_name(r->domain, name, sizeof(name));

	r->res.source = "none";
	if (named && cache_read(s, name, &cached, &clen, cid, &fetched) == 0 &&
	    sts_policy_parse(cached, clen, &cp, err, sizeof(err)) == 0) {
		cexp = fetched + (time_t)cp.max_age;
		cache_ok = now < cexp;
	}
	if (cache_ok && (r->txt_id[0] == '\0' || strcmp(cid, r->txt_id) == 0)) {
		use(r, &cp, cid, cexp, "cached");
	} else if (r->txt_id[0] == '\0') {
		snprintf(r->res.why, sizeof(r->res.why), "no _mta-sts record");
	} else if (!r->have_addr) {
		snprintf(r->res.why, sizeof(r->res.why), "no address for mta-sts.%.200s",
		         r->domain);
		if (cache_ok)
			use(r, &cp, cid, cexp, "cached, fetch failed");
	} else {
		struct body b = {.p = malloc(STS_POLICY_MAX)};
		struct sts_policy np;

		if (b.p == NULL) {
			snprintf(r->res.why, sizeof(r->res.why), "out of memory");
		} else if (fetch(s, r, &b, r->res.why, sizeof(r->res.why)) == 0) {
			if (sts_policy_parse(b.p, b.len, &np, err, sizeof(err)) < 0) {
				snprintf(r->res.why, sizeof(r->res.why), "bad policy: %.200s", err);
			} else {
				if (named)
					cache_write(s, name, r->txt_id, now, b.p, b.len);
				use(r, &np, r->txt_id, now + (time_t)np.max_age, "fetched");
			}
		}
		if (!r->res.have && cache_ok)
			use(r, &cp, cid, cexp, "cached, fetch failed");
		free(b.p);
	}
	free(cached);
}

static void *thread_main(void *arg)
{
	struct sts *s = arg;
	uint64_t one = 1;

	for (;;) {
		struct sts_req *r;

		pthread_mutex_lock(&s->lock);
		while (s->todo == NULL && !atomic_load(&s->stop))
			pthread_cond_wait(&s->cond, &s->lock);
		if (atomic_load(&s->stop)) {
			pthread_mutex_unlock(&s->lock);
			return NULL;
		}
		r = s->todo;
		s->todo = r->next;
		if (s->todo == NULL)
			s->todo_tail = &s->todo;
		pthread_mutex_unlock(&s->lock);

		work(s, r);

		pthread_mutex_lock(&s->lock);
		r->next = NULL;
		*s->done_tail = r;
		s->done_tail = &r->next;
		pthread_mutex_unlock(&s->lock);
		if (write(s->efd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow here; nothing else can fail */
		}
	}
}

/* ---- the ring side ---- */

static void poll_cb(struct ring_op *op, int res, unsigned flags);
static void nop_cb(struct ring_op *op, int res, unsigned flags);

static void finish(struct sts *s)
{
	if (!s->dying || s->flush != NULL || ring_op_busy(&s->op_poll) || ring_op_busy(&s->op_nop))
		return;
	close(s->efd);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s->dir);
	free(s);
}

static void arm_poll(struct sts *s)
{
	if (!s->dying && s->outstanding > 0 && !ring_op_busy(&s->op_poll))
		ring_poll(s->ring, &s->op_poll, s->efd, POLLIN, false);
}

static void deliver(struct sts *s, struct sts_req *r)
{
	s->outstanding--;
	r->cb(r->arg, &r->res);
	free(r->ca);
	free(r);
}

static void poll_cb(struct ring_op *op, int res, unsigned flags)
{
	struct sts *s = op->owner;
	struct sts_req *list;
	uint64_t v;

	if (!s->dying) {
		if (read(s->efd, &v, sizeof(v)) < 0) {
			/* EAGAIN: already read; the list says what is done */
		}
		pthread_mutex_lock(&s->lock);
		list = s->done;
		s->done = NULL;
		s->done_tail = &s->done;
		pthread_mutex_unlock(&s->lock);
		while (list != NULL) {
			struct sts_req *r = list;
			list = r->next;
			deliver(s, r);
		}
	}
	arm_poll(s);
	finish(s);
}

static void nop_cb(struct ring_op *op, int res, unsigned flags)
{
	struct sts *s = op->owner;
	struct sts_req *list = s->flush;

	s->flush = NULL;
	while (list != NULL) {
		struct sts_req *r = list;
		list = r->next;
		deliver(s, r);
	}
	finish(s);
}

int sts_init(struct sts **sp, struct ring *ring, const char *cache_dir, char *err, size_t errlen)
{
	struct sts *s;
	int rc = 0;

	*sp = NULL;
	pthread_once(&curl_once, curl_init);
	if (curl_status != CURLE_OK) {
		snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(curl_status));
		return -1;
	}
	if (mkdir(cache_dir, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "MTA-STS cache %s: %s", cache_dir, strerror(errno));
		return -1;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL || (s->dir = strdup(cache_dir)) == NULL) {
		free(s);
		snprintf(err, errlen, "MTA-STS: out of memory");
		return -1;
	}
	s->ring = ring;
	s->todo_tail = &s->todo;
	s->done_tail = &s->done;
	atomic_init(&s->stop, false);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	ring_op_init(&s->op_poll, RING_POLL, poll_cb, s);
	ring_op_init(&s->op_nop, RING_NOP, nop_cb, s);
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0 || (rc = pthread_create(&s->thread, NULL, thread_main, s)) != 0) {
		snprintf(err, errlen, "MTA-STS: %s", strerror(s->efd < 0 ? errno : rc));
		if (s->efd >= 0)
			close(s->efd);
		free(s->dir);
		free(s);
		return -1;
	}
	*sp = s;
	return 0;
}

void sts_free(struct sts *s)
{
	struct sts_req **tail;

	if (s == NULL || s->dying)
		return;
	s->dying = true;
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->stop, true);
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL); /* a transfer under way stops within a second */
	/* what was asked and not delivered: done (with its answer), then the
	 * rest (without a policy), all from the nop */
	s->flush = s->done;
	tail = s->done ? s->done_tail : &s->flush;
	*tail = s->todo;
	for (struct sts_req *r = s->todo; r != NULL; r = r->next) {
		r->res.have = false;
		r->res.source = "none";
		snprintf(r->res.why, sizeof(r->res.why), "krelay is stopping");
	}
	s->done = s->todo = NULL;
	if (ring_op_busy(&s->op_poll))
		ring_cancel_op(s->ring, &s->op_poll);
	ring_nop(s->ring, &s->op_nop);
}

void sts_get(struct sts *s, const char *domain, const char *txt_id, const struct dns_addr *addr,
             const char *ca_file, sts_cb cb, void *arg)
{
	struct sts_req *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->ca = strdup(ca_file)) == NULL)
		fatalx("out of memory");
	snprintf(r->domain, sizeof(r->domain), "%s", domain);
	snprintf(r->txt_id, sizeof(r->txt_id), "%s", txt_id);
	if (addr != NULL) {
		r->have_addr = true;
		r->addr = *addr;
	}
	r->cb = cb;
	r->arg = arg;
	s->outstanding++;
	pthread_mutex_lock(&s->lock);
	*s->todo_tail = r;
	s->todo_tail = &r->next;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	arm_poll(s);
}
