/* spool_seg: see spool_seg.h. */
#include "spool_seg.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

static void seg_write_cb(struct ring_op *op, int res, unsigned flags);
static void seg_lazy_cb(struct ring_op *op, int res, unsigned flags);
static void seg_sync_cb(struct ring_op *op, int res, unsigned flags);
static void seg_unlink_cb(struct ring_op *op, int res, unsigned flags);

void spool_seg_init(struct seg_set *ss, struct ring *ring, int dfd, unsigned worker, uint32_t salt,
                    uint64_t *fsyncs, void (*full)(void *arg, int err), void *full_arg)
{
	memset(ss, 0, sizeof(*ss));
	ss->ring = ring;
	ss->dfd = dfd;
	ss->worker = worker;
	ss->salt = salt;
	ss->fsyncs = fsyncs;
	ss->full = full;
	ss->full_arg = full_arg;
}

void spool_seg_exit(struct seg_set *ss)
{
	/* The files stay (spool_seg_recover takes what is left at the next
	 * start); only the descriptors go.  Nothing is in flight here. */
	while (ss->all != NULL) {
		struct spool_seg *s = ss->all;
		ss->all = s->next;
		if (s->fd >= 0)
			close(s->fd);
		free(s->wbuf);
		free(s);
	}
	ss->cur = NULL;
}

/* A new segment: created, preallocated, its header written, and file and
 * directory fsynced before any record goes in.  A plain, blocking path:
 * once per SEG_SIZE bytes of small messages. */
static struct spool_seg *seg_create(struct seg_set *ss)
{
	char hdr[SEG_HEADER_LEN];
	struct spool_seg *s = calloc(1, sizeof(*s));
	int err;

	if (s == NULL)
		return NULL;
	if (ss->count >= SEG_MAX_PER_WORKER) {
		free(s);
		return NULL; /* files meanwhile (see SEG_MAX_PER_WORKER) */
	}
	snprintf(s->name, sizeof(s->name), "w%u-%08x-%u", ss->worker, ss->salt, ++ss->seq);
	s->fd = openat(ss->dfd, s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (s->fd < 0) {
		err = -errno;
		free(s);
		log_warnx("spool: segment %s: %s (small messages use files meanwhile)", s->name,
		          strerror(-err));
		return NULL;
	}
	seg_header_format(hdr, ss->worker, (uint64_t)time(NULL));
	if ((err = posix_fallocate(s->fd, 0, SEG_SIZE)) != 0 ||
	    (pwrite(s->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) &&
	     (err = errno ? errno : EIO)) ||
	    (fdatasync(s->fd) < 0 && (err = errno)) || (fsync(ss->dfd) < 0 && (err = errno))) {
		log_warnx("spool: segment %s: %s (small messages use files meanwhile)", s->name,
		          strerror(err));
		unlinkat(ss->dfd, s->name, 0);
		close(s->fd);
		free(s);
		if (ss->full != NULL)
			ss->full(ss->full_arg, -err);
		return NULL;
	}
	s->ss = ss;
	s->end = s->synced = SEG_HEADER_LEN;
	s->broken_at = UINT64_MAX;
	s->open = true;
	ring_op_init(&s->op_sync, RING_FSYNC, seg_sync_cb, s);
	ring_op_init(&s->op_write, RING_WRITE, seg_write_cb, s);
	ring_op_init(&s->op_lazy, RING_TIMEOUT, seg_lazy_cb, s);
	ring_op_init(&s->op_unlink, RING_UNLINK, seg_unlink_cb, s);
	s->next = ss->all;
	ss->all = s;
	ss->made++;
	ss->count++;
	return s;
}

/* No message left in it, none to come and no reader holding a reference
 * (spool_seg_ref): it goes. */
static void seg_maybe_reclaim(struct spool_seg *s)
{
	if (s->open || s->live > 0 || s->readers > 0 || s->head != NULL ||
	    ring_op_busy(&s->op_sync) || ring_op_busy(&s->op_write) || ring_op_busy(&s->op_lazy) ||
	    ring_op_busy(&s->op_unlink))
		return;
	ring_unlinkat(s->ss->ring, &s->op_unlink, s->ss->dfd, s->name);
}

static void seg_unlink_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_seg *s = op->owner, **pp;

	if (res < 0)
		log_warnx("spool: segment %s: unlink: %s", s->name, strerror(-res));
	for (pp = &s->ss->all; *pp != s; pp = &(*pp)->next)
		;
	*pp = s->next;
	s->ss->count--;
	close(s->fd);
	free(s->wbuf);
	free(s);
}

void spool_seg_ref(struct spool_seg *s)
{
	s->readers++;
}

void spool_seg_unref(struct spool_seg *s)
{
	assert(s->readers > 0);
	s->readers--;
	seg_maybe_reclaim(s);
}

static void seg_close(struct spool_seg *s)
{
	s->open = false;
	if (s->ss->cur == s)
		s->ss->cur = NULL;
	seg_maybe_reclaim(s);
}

/* One write in flight per segment: every record appended meanwhile goes
 * in the next one, copied together (a write handed to io-wq costs a thread
 * wake-up; under load one carries many records). */
static void seg_flush(struct spool_seg *s)
{
	struct seg_append *a = s->unsent, *last = a;
	size_t len = a != NULL ? a->len : 0;

	if (a == NULL)
		return;
	while (last->next != NULL && len + last->next->len <= SEG_WBUF_SIZE) {
		last = last->next;
		len += last->len;
	}
	s->w_first = a;
	s->w_last = last;
	s->w_len = len;
	s->unsent = last->next;
	if (a == last || (s->wbuf == NULL && (s->wbuf = malloc(SEG_WBUF_SIZE)) == NULL)) {
		last = a; /* one record (or no buffer): from its own bytes */
		s->w_last = a;
		s->w_len = a->len;
		s->unsent = a->next;
		ring_write(s->ss->ring, &s->op_write, s->fd, a->buf, a->len, a->off, false);
		return;
	}
	len = 0;
	for (struct seg_append *p = a;; p = p->next) {
		memcpy(s->wbuf + len, p->buf, p->len);
		len += p->len;
		if (p == last)
			break;
	}
	ring_write(s->ss->ring, &s->op_write, s->fd, s->wbuf, len, a->off, false);
}

static void seg_submit(struct spool_seg *s, struct seg_append *a, const void *buf, size_t len)
{
	a->seg = s;
	a->off = s->end;
	a->len = len;
	a->end = s->end + len;
	a->buf = buf;
	a->written = false;
	a->res = 0;
	a->next = NULL;
	s->end = a->end;
	if (s->tail != NULL)
		s->tail->next = a;
	else
		s->head = a;
	s->tail = a;
	if (s->unsent == NULL)
		s->unsent = a;
	if (!ring_op_busy(&s->op_write))
		seg_flush(s);
}

bool spool_seg_append_msg(struct seg_set *ss, struct seg_append *a, const char *id, char *rec,
                          size_t len, void (*done)(struct seg_append *a, int res))
{
	struct spool_seg *s = ss->cur;
	uint64_t need = len + SEG_REC_HDR_LEN; /* and its SEG_DONE's room */

	if (len > SEG_RECORD_MAX || ss->dfd < 0)
		return false;
	if (s != NULL && (s->broken || s->end + s->done_reserve + need > SEG_SIZE)) {
		seg_close(s);
		s = NULL;
	}
	if (s == NULL && (s = ss->cur = seg_create(ss)) == NULL)
		return false;
	seg_rec_format(rec, SEG_MSG, id, rec + SEG_REC_HDR_LEN, (uint32_t)(len - SEG_REC_HDR_LEN));
	a->type = SEG_MSG;
	a->done = done;
	s->done_reserve += SEG_REC_HDR_LEN;
	s->live++;
	seg_submit(s, a, rec, len);
	return true;
}

void spool_seg_done(struct seg_append *a, const char *id,
                    void (*done)(struct seg_append *a, int res))
{
	struct spool_seg *s = a->seg;

	assert(s->done_reserve >= SEG_REC_HDR_LEN);
	s->done_reserve -= SEG_REC_HDR_LEN;
	seg_rec_format(a->rec, SEG_DONE, id, NULL, 0);
	a->type = SEG_DONE;
	a->done = done;
	seg_submit(s, a, a->rec, sizeof(a->rec));
}

/* Starts an fdatasync covering the written prefix, when it holds a record
 * not yet durable and none is in flight. */
static void seg_try_sync(struct spool_seg *s)
{
	uint64_t prefix = s->synced;
	bool msg = false;

	if (ring_op_busy(&s->op_sync))
		return;
	for (struct seg_append *a = s->head; a != NULL && a->written; a = a->next) {
		prefix = a->end;
		msg |= a->type == SEG_MSG;
	}
	if (prefix <= s->synced)
		return;
	if (!msg && !s->lazy_due) {
		/* Only SEG_DONEs: no client waits on them (only their delivery
		 * lines, and the memory), so they wait up to SEG_DONE_WAIT_MS
		 * for the next message's sync to carry them along. */
		if (!ring_op_busy(&s->op_lazy)) {
			s->lazy_ts.tv_sec = 0;
			s->lazy_ts.tv_nsec = SEG_DONE_WAIT_MS * 1000000L;
			ring_timeout(s->ss->ring, &s->op_lazy, &s->lazy_ts);
		}
		return;
	}
	s->sync_target = prefix;
	(*s->ss->fsyncs)++;
	s->sync_at = metrics_clock();
	ring_fsync(s->ss->ring, &s->op_sync, s->fd, true, false);
}

static void seg_lazy_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_seg *s = op->owner;

	s->lazy_due = true;
	seg_try_sync(s);
	s->lazy_due = false;
	seg_maybe_reclaim(s);
}

static void seg_write_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_seg *s = op->owner;
	/* the file was preallocated: a short write is a fault */
	int err = res < 0 ? res : (size_t)res < s->w_len ? -EIO : 0;

	for (struct seg_append *a = s->w_first;; a = a->next) {
		a->written = true;
		a->res = err;
		if (a == s->w_last)
			break;
	}
	if (err < 0 && !s->broken) {
		log_warnx("spool: segment %s: write: %s", s->name, strerror(-err));
		s->broken = true;
	}
	if (err < 0 && s->w_first->off < s->broken_at)
		s->broken_at = s->w_first->off;
	s->w_first = s->w_last = NULL;
	seg_flush(s);
	seg_try_sync(s);
}

static void seg_sync_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_seg *s = op->owner;
	int fail;

	if (res >= 0)
		metrics_fsync_done(s->ss->mw, s->sync_at);
	if (res < 0 && !s->broken) {
		log_warnx("spool: segment %s: fdatasync: %s", s->name, strerror(-res));
		s->broken = true;
	}
	if (res < 0 && s->synced < s->broken_at)
		s->broken_at = s->synced;
	s->synced = s->sync_target;
	/* Everything the sync covered reports, in order; after a failure
	 * (this one, or a write before) nothing after it can be read back at
	 * start-up, so every later record fails too. */
	while (s->head != NULL && s->head->written && s->head->end <= s->synced) {
		struct seg_append *a = s->head;
		s->head = a->next;
		if (s->head == NULL)
			s->tail = NULL;
		fail = a->res < 0 ? a->res : res < 0 ? res : a->off >= s->broken_at ? -EIO : 0;
		if (a->type == SEG_MSG && fail < 0)
			s->done_reserve -= SEG_REC_HDR_LEN; /* no SEG_DONE will come */
		if (a->type == SEG_DONE || fail < 0)
			s->live--;
		a->done(a, fail);
	}
	if (s->broken && s->open)
		seg_close(s);
	seg_try_sync(s);
	seg_maybe_reclaim(s);
}

/* ---- start-up and tools: plain, blocking calls --------------------------- */

struct seg_entry {
	char id[SPOOL_ID_LEN + 1];
	size_t off;
	uint32_t len;
	bool done;
};

struct seg_read {
	struct seg_entry *v;
	size_t n, cap;
};

static void seg_read_cb(void *arg, enum seg_rec_type type, const char *id, size_t off, uint32_t len)
{
	struct seg_read *r = arg;

	if (type == SEG_DONE) {
		for (size_t i = r->n; i-- > 0;)
			if (!r->v[i].done && strcmp(r->v[i].id, id) == 0) {
				r->v[i].done = true;
				break;
			}
		return;
	}
	if (r->n == r->cap) {
		struct seg_entry *p =
		    realloc(r->v, (r->cap = r->cap ? r->cap * 2 : 256) * sizeof(*p));
		if (p == NULL)
			fatalx("out of memory");
		r->v = p;
	}
	memcpy(r->v[r->n].id, id, sizeof(r->v[r->n].id));
	r->v[r->n].off = off;
	r->v[r->n].len = len;
	r->v[r->n].done = false;
	r->n++;
}

/* The whole of segment NAME in dfd, read into *buf (malloc'd). */
static int seg_read_file(int dfd, const char *name, char **buf, size_t *len)
{
	struct stat st;
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t got = 0;

	*buf = NULL;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size > (off_t)SEG_SIZE * 4 ||
	    (*buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -EIO;
	}
	while ((size_t)got < (size_t)st.st_size) {
		ssize_t k = pread(fd, *buf + got, (size_t)st.st_size - (size_t)got, got);
		if (k <= 0)
			break;
		got += k;
	}
	close(fd);
	*len = (size_t)got;
	return 0;
}

/* Calls each(arg, dfd, name) for every segment file in DIR/seg. */
static int seg_each(const char *dir, int (*each)(void *arg, int dfd, const char *name), void *arg)
{
	char path[4096];
	struct dirent *de;
	DIR *d;
	int dfd, ret = 0;

	snprintf(path, sizeof(path), "%s/seg", dir);
	if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(dup(dfd));
	while (d != NULL && ret == 0 && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			ret = each(arg, dfd, de->d_name);
	if (d != NULL)
		closedir(d);
	close(dfd);
	return ret;
}

struct seg_recovery {
	int tmp_dfd, queue_dfd, hold_dfd;
	unsigned written, segments;
	char **names;
	size_t nnames;
};

static int write_queue_file(struct seg_recovery *rc, const char *id, const char *p, size_t len)
{
	int fd = openat(rc->tmp_dfd, id, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t k = write(fd, p + done, len - done);
		if (k < 0) {
			int err = -errno;
			close(fd);
			unlinkat(rc->tmp_dfd, id, 0);
			return err;
		}
		done += (size_t)k;
	}
	if (fdatasync(fd) < 0 || renameat(rc->tmp_dfd, id, rc->queue_dfd, id) < 0) {
		int err = -errno;
		close(fd);
		unlinkat(rc->tmp_dfd, id, 0);
		return err;
	}
	close(fd);
	return 0;
}

static int recover_one(void *arg, int dfd, const char *name)
{
	struct seg_recovery *rc = arg;
	struct seg_read r = {0};
	size_t len;
	char *buf;
	long valid;
	int ret = seg_read_file(dfd, name, &buf, &len);

	if (ret < 0) {
		log_warnx("spool: segment %s: %s: left in seg/", name, strerror(-ret));
		return 0; /* kept: never removed unread */
	}
	valid = seg_scan(buf, len, seg_read_cb, &r);
	if (valid < 0) {
		log_warnx("spool: seg/%s is not a segment: left alone", name);
		free(buf);
		return 0;
	}
	for (size_t i = 0; i < r.n && ret == 0; i++) {
		struct seg_entry *e = &r.v[i];
		if (e->done || faccessat(rc->queue_dfd, e->id, F_OK, 0) == 0 ||
		    (rc->hold_dfd >= 0 && faccessat(rc->hold_dfd, e->id, F_OK, 0) == 0))
			continue;
		if ((ret = write_queue_file(rc, e->id, buf + e->off, e->len)) < 0)
			log_warnx("spool: segment %s: %s to queue/: %s (the segment is kept)", name,
			          e->id, strerror(-ret));
		else
			rc->written++;
	}
	free(r.v);
	free(buf);
	if (ret == 0) {
		char **p = realloc(rc->names, (rc->nnames + 1) * sizeof(*p));
		if (p == NULL || (p[rc->nnames] = strdup(name)) == NULL)
			fatalx("out of memory");
		rc->names = p;
		rc->nnames++;
	}
	rc->segments++;
	return 0;
}

static int open_sub(const char *dir, const char *sub)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int spool_seg_recover(const char *dir, unsigned *segments)
{
	struct seg_recovery rc = {0};
	int seg_dfd, ret;

	*segments = 0;
	rc.tmp_dfd = open_sub(dir, "tmp");
	rc.queue_dfd = open_sub(dir, "queue");
	rc.hold_dfd = open_sub(dir, "hold");
	seg_dfd = open_sub(dir, "seg");
	if (rc.tmp_dfd < 0 || rc.queue_dfd < 0 || seg_dfd < 0) {
		ret = errno == ENOENT && seg_dfd < 0 && rc.tmp_dfd >= 0 && rc.queue_dfd >= 0
		          ? 0
		          : -errno;
		goto out;
	}
	ret = seg_each(dir, recover_one, &rc);
	/* what went to queue/ is durable before any segment goes */
	if (rc.written > 0 && fsync(rc.queue_dfd) < 0) {
		ret = -errno;
		goto out;
	}
	for (size_t i = 0; i < rc.nnames; i++)
		unlinkat(seg_dfd, rc.names[i], 0);
	if (rc.nnames > 0)
		fsync(seg_dfd);
	*segments = rc.segments;
	if (ret == 0)
		ret = (int)rc.written;
out:
	for (size_t i = 0; i < rc.nnames; i++)
		free(rc.names[i]);
	free(rc.names);
	if (rc.tmp_dfd >= 0)
		close(rc.tmp_dfd);
	if (rc.queue_dfd >= 0)
		close(rc.queue_dfd);
	if (rc.hold_dfd >= 0)
		close(rc.hold_dfd);
	if (seg_dfd >= 0)
		close(seg_dfd);
	return ret;
}

struct seg_lister {
	void (*cb)(void *arg, const char *id, const char *file, size_t len);
	void *arg;
};

static int list_one(void *arg, int dfd, const char *name)
{
	struct seg_lister *l = arg;
	struct seg_read r = {0};
	size_t len;
	char *buf;

	if (seg_read_file(dfd, name, &buf, &len) < 0)
		return 0; /* gone meanwhile: its messages went with it */
	if (seg_scan(buf, len, seg_read_cb, &r) >= 0)
		for (size_t i = 0; i < r.n; i++)
			if (!r.v[i].done)
				l->cb(l->arg, r.v[i].id, buf + r.v[i].off, r.v[i].len);
	free(r.v);
	free(buf);
	return 0;
}

int spool_seg_list(const char *dir,
                   void (*cb)(void *arg, const char *id, const char *file, size_t len), void *arg)
{
	struct seg_lister l = {cb, arg};

	return seg_each(dir, list_one, &l);
}
