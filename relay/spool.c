/* spool: see spool.h. */
#include "spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

enum tx_stage {
	TX_IDLE,
	TX_OPENING,
	TX_OPEN,
	TX_COMMIT_WAIT, /* commit asked while a write is in flight */
	TX_CHAIN,       /* write -> fdatasync -> rename in flight */
	TX_DIRSYNC,
	TX_CLOSING, /* after success or failure, closing fd (and unlinking) */
	TX_ABORT_WAIT,
	TX_ABORTING,
	TX_STAGED,  /* written, not durable (spool_tx_stage) */
	TX_SEGMENT, /* appended to a segment, waiting for its fdatasync */
};

#define EPOCH_2020 1577836800

/* Body buffers are kept per worker and reused (a message needs two). */
struct spool_buf {
	struct spool_buf *next;
};

static void open_cb(struct ring_op *op, int res, unsigned flags);
static void write_cb(struct ring_op *op, int res, unsigned flags);
static void chain_cb(struct ring_op *op, int res, unsigned flags);
static void dirsync_cb(struct ring_op *op, int res, unsigned flags);
static void close_cb(struct ring_op *op, int res, unsigned flags);
static void dirsync_done(struct spool_waiter *w, int res);

/* The public calls count themselves (api_depth) so that notify() can
 * assert that no event reaches an owner from inside one: an event caused
 * by a call is deferred to the next ring turn (op_defer) instead. */
#define API_ENTER(sp) ((sp)->api_depth++)
#define API_LEAVE(sp) (assert((sp)->api_depth > 0), (sp)->api_depth--)

static void notify(struct spool_tx *tx, enum spool_event ev, int err)
{
	assert(tx->sp->api_depth == 0);
	tx->cb(tx->owner, ev, err);
}

static void seg_full(void *arg, int err)
{
	spool_pool_drain(arg, err);
}

static int open_dir(int parent, const char *name)
{
	if (mkdirat(parent, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int spool_init(struct spool *sp, struct ring *ring, const char *dir, unsigned worker)
{
	int top;

	memset(sp, 0, sizeof(*sp));
	sp->ring = ring;
	sp->worker = worker;
	sp->tmp_dfd = sp->queue_dfd = sp->pool_dfd = sp->seg_dfd = -1;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0)
		return -errno;
	sp->tmp_dfd = open_dir(top, "tmp");
	sp->queue_dfd = open_dir(top, "queue");
	sp->pool_dfd = open_dir(top, "pool");
	sp->seg_dfd = open_dir(top, "seg");
	close(top);
	if (sp->tmp_dfd < 0 || sp->queue_dfd < 0 || sp->pool_dfd < 0 || sp->seg_dfd < 0) {
		int err = sp->tmp_dfd < 0     ? sp->tmp_dfd
		          : sp->queue_dfd < 0 ? sp->queue_dfd
		          : sp->pool_dfd < 0  ? sp->pool_dfd
		                              : sp->seg_dfd;
		sp->tmp_dfd = sp->tmp_dfd < 0 ? -1 : sp->tmp_dfd;
		sp->queue_dfd = sp->queue_dfd < 0 ? -1 : sp->queue_dfd;
		sp->pool_dfd = sp->pool_dfd < 0 ? -1 : sp->pool_dfd;
		sp->seg_dfd = sp->seg_dfd < 0 ? -1 : sp->seg_dfd;
		spool_exit(sp);
		return err;
	}
	if (getrandom(&sp->id_counter, sizeof(sp->id_counter), 0) < 0)
		sp->id_counter = (uint32_t)getpid();
	ring_op_init(&sp->op_dirsync, RING_FSYNC, dirsync_cb, sp);
	spool_seg_init(&sp->segs, ring, sp->seg_dfd, worker, sp->id_counter, &sp->stats.fsyncs,
	               seg_full, sp);
	return 0;
}

static void free_list(struct spool_buf **head)
{
	while (*head != NULL) {
		struct spool_buf *b = *head;
		*head = b->next;
		free(b);
	}
}

void spool_exit(struct spool *sp)
{
	free_list(&sp->free_bufs);
	free_list(&sp->free_big);
	sp->nfree_bufs = sp->nfree_big = 0;
	for (unsigned i = 0; i < sp->npool; i++)
		close(sp->pool[i].fd); /* the files stay in pool/; removed at start */
	sp->npool = 0;
	spool_seg_exit(&sp->segs);
	if (sp->seg_dfd >= 0)
		close(sp->seg_dfd);
	if (sp->tmp_dfd >= 0)
		close(sp->tmp_dfd);
	if (sp->queue_dfd >= 0)
		close(sp->queue_dfd);
	if (sp->pool_dfd >= 0)
		close(sp->pool_dfd);
	sp->tmp_dfd = sp->queue_dfd = sp->pool_dfd = sp->seg_dfd = -1;
}

bool spool_pool_reserve(struct spool *sp, char name[SPOOL_POOL_NAME])
{
	if (sp->npool + sp->pool_reserved >= SPOOL_POOL_MAX)
		return false;
	sp->pool_reserved++;
	snprintf(name, SPOOL_POOL_NAME, "%02X-%08X", sp->worker & 0xff, sp->pool_seq++);
	return true;
}

void spool_pool_cancel(struct spool *sp)
{
	sp->pool_reserved--;
}

/* An open file, pool/name, into the pool (the caller checked for room). */
static void pool_add(struct spool *sp, int fd, const char *name, uint64_t size)
{
	struct spool_pool_file *f = &sp->pool[sp->npool++];

	f->fd = fd;
	f->size = size;
	snprintf(f->name, sizeof(f->name), "%s", name);
}

static void pool_release(struct spool *sp, const char *why)
{
	unsigned n = sp->npool;

	/* (a rare path: plain calls, not the ring) */
	while (sp->npool > 0) {
		struct spool_pool_file *f = &sp->pool[--sp->npool];
		unlinkat(sp->pool_dfd, f->name, 0);
		close(f->fd);
	}
	if (n > 0)
		log_warnx("spool: worker %u: %s: %u reusable files in pool/ released", sp->worker,
		          why, n);
}

void spool_pool_drain(struct spool *sp, int err)
{
	if (err != -ENOSPC && err != -EDQUOT)
		return;
	if (sp->full_gen != NULL)
		sp->full_seen = atomic_fetch_add(sp->full_gen, 1) + 1;
	pool_release(sp, strerror(-err));
}

void spool_share_full(struct spool *sp, atomic_uint *full_gen)
{
	sp->full_gen = full_gen;
	sp->full_seen = atomic_load(full_gen);
}

void spool_pool_put(struct spool *sp, int fd, const char *name, uint64_t size)
{
	sp->pool_reserved--;
	pool_add(sp, fd, name, size);
}

static void clear_sub(const char *dir, const char *sub)
{
	char path[4096];
	struct dirent *de;
	DIR *d;
	int dfd;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return;
	d = fdopendir(dfd);
	while (d != NULL && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			unlinkat(dfd, de->d_name, 0);
	if (d != NULL)
		closedir(d);
	else
		close(dfd);
}

/* For each state file ID.env in the directory dfd whose message ID is not
 * there: the message is in the other directory (queue/ or hold/) when
 * `krelay queue hold|release` was cut short between its two renames, and
 * its state goes to it (never left behind: without it the message's own
 * envelope says every recipient is pending); else the message is gone
 * (delivered, or deleted while a delivery was under way) and so does the
 * state file.  Returns the number of files moved or removed. */
static unsigned reunite_in(int dfd, int other_dfd)
{
	char id[SPOOL_ID_LEN + 1], name[SPOOL_ID_LEN + 5];
	unsigned changed = 0;
	struct dirent *de;
	DIR *d = fdopendir(dup(dfd));

	if (d != NULL)
		rewinddir(d); /* the dup shares the offset of an earlier scan */
	while (d != NULL && (de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);

		if (n != SPOOL_ID_LEN + 4 || strcmp(de->d_name + SPOOL_ID_LEN, ".env") != 0)
			continue;
		memcpy(id, de->d_name, SPOOL_ID_LEN);
		id[SPOOL_ID_LEN] = '\0';
		memcpy(name, de->d_name, sizeof(name));
		if (!spool_id_valid(id) || faccessat(dfd, id, F_OK, 0) == 0)
			continue;
		if (other_dfd >= 0 && faccessat(other_dfd, id, F_OK, 0) == 0) {
			/* (one there already: the move had completed; drop this copy) */
			if (renameat2(dfd, name, other_dfd, name, RENAME_NOREPLACE) == 0 ||
			    (errno == EEXIST && unlinkat(dfd, name, 0) == 0))
				changed++;
		} else if (unlinkat(dfd, name, 0) == 0) {
			changed++;
		}
	}
	if (d != NULL)
		closedir(d);
	return changed;
}

static void reunite(const char *dir, int queue_dfd)
{
	char path[4096];
	int hold_dfd;

	snprintf(path, sizeof(path), "%s/hold", dir);
	hold_dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (reunite_in(queue_dfd, hold_dfd) +
	        (hold_dfd >= 0 ? reunite_in(hold_dfd, queue_dfd) : 0) >
	    0) {
		fsync(queue_dfd);
		if (hold_dfd >= 0)
			fsync(hold_dfd);
	}
	if (hold_dfd >= 0)
		close(hold_dfd);
}

int spool_recover(const char *dir, unsigned *queued, unsigned *removed)
{
	struct spool sp;
	struct dirent *de;
	DIR *d;
	int ret = spool_init(&sp, NULL, dir, 0);

	*queued = *removed = 0;
	if (ret < 0)
		return ret;
	/* A file in tmp/ was never acknowledged: the client still has it. */
	d = fdopendir(dup(sp.tmp_dfd));
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.' && unlinkat(sp.tmp_dfd, de->d_name, 0) == 0)
			(*removed)++;
	}
	if (d != NULL)
		closedir(d);
	/* Messages still in segments go to queue/ (the segments then go). */
	{
		unsigned segs;
		int n = spool_seg_recover(dir, &segs);
		if (n < 0)
			log_warnx("spool: recovering segments: %s", strerror(-n));
		else if (segs > 0)
			log_info("spool: %u messages recovered from %u segments into queue/", n,
			         segs);
	}
	/* pool/ holds spare files of delivered messages: nothing to keep */
	d = fdopendir(dup(sp.pool_dfd));
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.')
			unlinkat(sp.pool_dfd, de->d_name, 0);
	}
	if (d != NULL)
		closedir(d);
	d = fdopendir(dup(sp.queue_dfd));
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (spool_id_valid(de->d_name))
			(*queued)++;
	}
	if (d != NULL)
		closedir(d);
	reunite(dir, sp.queue_dfd);
	if (*removed > 0)
		fsync(sp.tmp_dfd);
	/* release/ID: `krelay queue release` while stopped; everything in
	 * queue/ is taken in at start anyway */
	clear_sub(dir, "release");
	clear_sub(dir, "request"); /* the CLI moves files itself while krelay is stopped */
	spool_exit(&sp);
	return 0;
}

int spool_list(const char *dir, char ***ids, size_t *n)
{
	return spool_list_in(dir, "queue", ids, n);
}

int spool_list_in(const char *dir, const char *sub, char ***ids, size_t *n)
{
	char path[4096];
	struct dirent *de;
	size_t cap = 0;
	DIR *d;

	*ids = NULL;
	*n = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL) {
		if (!spool_id_valid(de->d_name))
			continue;
		if (*n == cap) {
			char **p = realloc(*ids, (cap = cap ? cap * 2 : 64) * sizeof(*p));
			if (p == NULL)
				break;
			*ids = p;
		}
		if (((*ids)[*n] = strdup(de->d_name)) != NULL)
			(*n)++;
	}
	closedir(d);
	return 0;
}

void spool_new_id(struct spool *sp, char id[SPOOL_ID_LEN + 1])
{
	uint64_t secs = (uint64_t)(time(NULL) - EPOCH_2020) & 0xffffffffu;
	uint64_t v =
	    secs << 32 | (uint64_t)(sp->worker & 0xff) << 24 | (sp->id_counter++ & 0xffffff);

	snprintf(id, SPOOL_ID_LEN + 1, "%016llX", (unsigned long long)v);
}

bool spool_tx_busy(const struct spool_tx *tx)
{
	return ring_op_busy(&tx->op_open) || ring_op_busy(&tx->op_write) ||
	       ring_op_busy(&tx->op_fsync) || ring_op_busy(&tx->op_rename) ||
	       ring_op_busy(&tx->op_close) || ring_op_busy(&tx->op_unlink) ||
	       ring_op_busy(&tx->op_defer) || tx->stage == TX_SEGMENT;
}

static void open_new(struct spool_tx *tx)
{
	tx->from_pool = false;
	tx->op_open.kind = RING_OPEN;
	/* read-write: once committed, the same fd serves the delivery */
	ring_openat(tx->sp->ring, &tx->op_open, tx->sp->tmp_dfd, tx->id,
	            O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

static void tx_begin_call(struct spool_tx *tx, struct spool *sp, const char *id, spool_cb cb,
                          void *owner)
{
	memset(tx, 0, sizeof(*tx));
	tx->sp = sp;
	tx->cb = cb;
	tx->owner = owner;
	tx->fd = -1;
	memcpy(tx->id, id, SPOOL_ID_LEN + 1);
	ring_op_init(&tx->op_open, RING_OPEN, open_cb, tx);
	ring_op_init(&tx->op_write, RING_WRITE, write_cb, tx);
	ring_op_init(&tx->op_fsync, RING_FSYNC, chain_cb, tx);
	ring_op_init(&tx->op_rename, RING_RENAME, chain_cb, tx);
	ring_op_init(&tx->op_close, RING_CLOSE, close_cb, tx);
	ring_op_init(&tx->op_unlink, RING_UNLINK, close_cb, tx);
	ring_op_init(&tx->op_defer, RING_NOP, close_cb, tx);
	tx->stage = TX_OPENING;
	if (sp->full_gen != NULL && atomic_load(sp->full_gen) != sp->full_seen) {
		sp->full_seen = atomic_load(sp->full_gen);
		pool_release(sp, "another worker found the file system full");
	}
	if (sp->npool > 0) {
		/* reuse a delivered message's file: written over where it is
		 * (pool/ is emptied at start, as tmp/ is), renamed to queue/ID
		 * at commit.  A NOP brings SPOOL_OPENED on the next turn. */
		struct spool_pool_file *f = &sp->pool[--sp->npool];
		tx->from_pool = true;
		tx->fd = f->fd;
		tx->pool_size = f->size;
		memcpy(tx->pool_name, f->name, sizeof(tx->pool_name));
		tx->op_open.kind = RING_NOP;
		ring_nop(sp->ring, &tx->op_open);
		return;
	}
	open_new(tx);
}

/* A body buffer of cap bytes (SPOOL_BUF_SIZE or SPOOL_BIG_SIZE), from the
 * worker's free list for that size when it has one. */
static char *buf_get(struct spool *sp, size_t cap)
{
	bool big = cap == SPOOL_BIG_SIZE;
	struct spool_buf **head = big ? &sp->free_big : &sp->free_bufs, *b = *head;

	if (b == NULL)
		return malloc(cap);
	*head = b->next;
	(*(big ? &sp->nfree_big : &sp->nfree_bufs))--;
	return (char *)b;
}

static void buf_put(struct spool *sp, char *p, size_t cap)
{
	struct spool_buf *b = (struct spool_buf *)(void *)p;
	bool big = cap == SPOOL_BIG_SIZE;
	struct spool_buf **head = big ? &sp->free_big : &sp->free_bufs;
	unsigned *nfree = big ? &sp->nfree_big : &sp->nfree_bufs;

	if (p == NULL)
		return;
	if (big)
		sp->nbig--;
	if (*nfree >= (big ? SPOOL_FREE_BIG : SPOOL_FREE_BUFS)) {
		free(p);
		return;
	}
	b->next = *head;
	*head = b;
	(*nfree)++;
}

/* Once a message is past SPOOL_BIG_AFTER bytes, the buffer being filled
 * (never the one being written) becomes a big one, while the worker has
 * big buffers to spare. */
static void maybe_grow(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;
	int c = tx->cur;
	char *big;

	if (tx->cap[c] == SPOOL_BIG_SIZE || tx->off < SPOOL_BIG_AFTER ||
	    sp->nbig >= SPOOL_BIG_MAX || (big = buf_get(sp, SPOOL_BIG_SIZE)) == NULL)
		return;
	sp->nbig++;
	memcpy(big, tx->buf[c], tx->fill);
	buf_put(sp, tx->buf[c], tx->cap[c]);
	tx->buf[c] = big;
	tx->cap[c] = SPOOL_BIG_SIZE;
}

static void release(struct spool_tx *tx)
{
	if (tx->tail != tx->buf[0] && tx->tail != tx->buf[1])
		free(tx->tail);
	buf_put(tx->sp, tx->buf[0], tx->cap[0]);
	buf_put(tx->sp, tx->buf[1], tx->cap[1]);
	tx->buf[0] = tx->buf[1] = tx->tail = NULL;
}

/* Closes the file, removing it from tmp/ (or pool/) unless it reached
 * queue/.  A message made durable keeps its fd open: SPOOL_COMMITTED hands
 * it over.  A pool file whose message was dropped goes back to the pool. */
static void finish(struct spool_tx *tx, int err, bool unlink_tmp)
{
	struct spool *sp = tx->sp;

	tx->commit_err = err;
	spool_pool_drain(sp, err);
	if (tx->stage != TX_ABORTING)
		tx->stage = TX_CLOSING;
	if (unlink_tmp && tx->from_pool && err == 0 && tx->fd >= 0 &&
	    sp->npool + sp->pool_reserved < SPOOL_POOL_MAX) {
		/* aborted: still pool/NAME, its old bytes partly written over */
		pool_add(sp, tx->fd, tx->pool_name, SPOOL_SIZE_UNKNOWN);
		tx->fd = -1;
		unlink_tmp = false;
	}
	if (unlink_tmp && tx->from_pool)
		ring_unlinkat(sp->ring, &tx->op_unlink, sp->pool_dfd, tx->pool_name);
	else if (unlink_tmp)
		ring_unlinkat(sp->ring, &tx->op_unlink, sp->tmp_dfd, tx->id);
	if (tx->fd >= 0 && (err != 0 || tx->stage == TX_ABORTING)) {
		ring_close(tx->sp->ring, &tx->op_close, tx->fd);
		tx->fd = -1;
	}
	if (spool_tx_busy(tx))
		return; /* close_cb reports it once the last operation is done */
	if (sp->api_depth > 0)
		ring_nop(sp->ring, &tx->op_defer); /* inside the owner's call */
	else
		close_cb(&tx->op_close, 0, 0);
}

static void close_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_tx *tx = op->owner;
	bool aborted = tx->stage == TX_ABORTING;

	if (spool_tx_busy(tx))
		return;
	release(tx);
	tx->stage = TX_IDLE;
	if (aborted) {
		notify(tx, SPOOL_ABORTED, 0);
	} else {
		if (tx->commit_err == 0) {
			tx->sp->stats.messages++;
			tx->sp->stats.bytes += tx->body_size;
		} else {
			tx->sp->stats.failures++;
		}
		notify(tx, SPOOL_COMMITTED, tx->commit_err);
	}
	/* tx may be dangling after the callback */
}

static void open_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_tx *tx = op->owner;

	if (tx->from_pool)
		res = tx->fd; /* the NOP: nothing can fail */
	if (res >= 0)
		tx->fd = res;
	if (tx->stage == TX_ABORT_WAIT) {
		tx->stage = TX_ABORTING;
		finish(tx, 0, res >= 0);
		return;
	}
	if (res < 0) {
		tx->stage = TX_IDLE;
		spool_pool_drain(tx->sp, res);
		notify(tx, SPOOL_OPENED, res);
		return;
	}
	tx->buf[0] = buf_get(tx->sp, SPOOL_BUF_SIZE);
	tx->buf[1] = buf_get(tx->sp, SPOOL_BUF_SIZE);
	tx->cap[0] = tx->cap[1] = SPOOL_BUF_SIZE;
	if (tx->buf[0] == NULL || tx->buf[1] == NULL)
		tx->error = -ENOMEM;
	tx->stage = TX_OPEN;
	notify(tx, SPOOL_OPENED, 0);
}

static void submit_write(struct spool_tx *tx)
{
	tx->wr_len = tx->fill;
	ring_write(tx->sp->ring, &tx->op_write, tx->fd, tx->buf[tx->cur], tx->fill, tx->off, false);
	tx->cur ^= 1;
	tx->fill = 0;
	maybe_grow(tx);
}

bool spool_tx_can_append(const struct spool_tx *tx, size_t len)
{
	return tx->error != 0 || tx->fill + len <= tx->cap[tx->cur] || !ring_op_busy(&tx->op_write);
}

static bool tx_append_call(struct spool_tx *tx, const void *buf, size_t len)
{
	const char *p = buf;
	size_t room;

	assert(tx->stage == TX_OPEN && len <= SPOOL_BUF_SIZE);
	tx->body_size += len;
	if (tx->error != 0)
		return true; /* the message is lost already: keep the session reading */
	if (tx->fill + len <= tx->cap[tx->cur]) {
		memcpy(tx->buf[tx->cur] + tx->fill, p, len);
		tx->fill += len;
		return true;
	}
	if (ring_op_busy(&tx->op_write)) {
		tx->body_size -= len;
		return false;
	}
	room = tx->cap[tx->cur] - tx->fill;
	memcpy(tx->buf[tx->cur] + tx->fill, p, room);
	tx->fill += room;
	submit_write(tx);
	memcpy(tx->buf[tx->cur], p + room, len - room);
	tx->fill = len - room;
	return true;
}

static char *tx_space_call(struct spool_tx *tx, size_t *room)
{
	assert(tx->stage == TX_OPEN && tx->error == 0);
	if (tx->fill == tx->cap[tx->cur]) {
		if (ring_op_busy(&tx->op_write))
			return NULL;
		submit_write(tx);
	}
	*room = tx->cap[tx->cur] - tx->fill;
	return tx->buf[tx->cur] + tx->fill;
}

static void tx_added_call(struct spool_tx *tx, size_t n)
{
	assert(tx->fill + n <= tx->cap[tx->cur]);
	tx->fill += n;
	tx->body_size += n;
}

static void start_chain(struct spool_tx *tx);
static void sync_and_rename(struct spool_tx *tx);

static void write_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_tx *tx = op->owner;

	if (res < 0 && tx->error == 0)
		tx->error = res;
	else if (res >= 0 && (size_t)res < tx->wr_len && tx->error == 0)
		tx->error = -ENOSPC; /* a short write to a regular file: out of room */
	tx->off += tx->wr_len;
	switch (tx->stage) {
	case TX_COMMIT_WAIT:
		start_chain(tx);
		break;
	case TX_ABORT_WAIT:
		tx->stage = TX_ABORTING;
		finish(tx, 0, true);
		break;
	default:
		notify(tx, SPOOL_WRITABLE, 0);
	}
}

static void seg_committed(struct seg_append *a, int res);

/* The file opened for the message is not needed: a pool file goes back
 * to the pool as it was (nothing was written to it), a new one (the pool
 * was empty) into the pool, or away.  Plain calls, and rare ones. */
static void give_back_file(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;
	char name[SPOOL_POOL_NAME];

	if (tx->from_pool && sp->npool + sp->pool_reserved < SPOOL_POOL_MAX) {
		pool_add(sp, tx->fd, tx->pool_name, tx->pool_size);
	} else if (!tx->from_pool && spool_pool_reserve(sp, name)) {
		if (renameat(sp->tmp_dfd, tx->id, sp->pool_dfd, name) == 0) {
			spool_pool_put(sp, tx->fd, name, 0);
		} else {
			spool_pool_cancel(sp);
			unlinkat(sp->tmp_dfd, tx->id, 0);
			close(tx->fd);
		}
	} else {
		unlinkat(tx->from_pool ? sp->pool_dfd : sp->tmp_dfd,
		         tx->from_pool ? tx->pool_name : tx->id, 0);
		close(tx->fd);
	}
	tx->fd = -1;
	tx->from_pool = false;
}

/* A message that fits in one buffer goes into the worker's segment as one
 * record (body, envelope, trailer: a queue file's bytes): one shared
 * fdatasync makes it durable.  False when it does not qualify. */
static bool commit_to_segment(struct spool_tx *tx, const struct spool_env *e, size_t env_len)
{
	size_t len = SEG_REC_HDR_LEN + tx->fill + env_len + SPOOL_TRAILER_LEN;
	char *rec;

	if (!tx->segment_ok || tx->error != 0 || tx->off != 0 || tx->staging ||
	    ring_op_busy(&tx->op_write) || len > SEG_RECORD_MAX || (rec = malloc(len + 1)) == NULL)
		return false;
	memcpy(rec + SEG_REC_HDR_LEN, tx->buf[tx->cur], tx->fill);
	spool_env_format(e, rec + SEG_REC_HDR_LEN + tx->fill, env_len + 1);
	spool_trailer_format(rec + SEG_REC_HDR_LEN + tx->fill + env_len, tx->body_size,
	                     (uint32_t)env_len);
	if (!spool_seg_append_msg(&tx->sp->segs, &tx->seg_app, tx->id, rec, len, seg_committed)) {
		free(rec);
		return false;
	}
	tx->tail = rec;
	tx->file_size = len - SEG_REC_HDR_LEN;
	tx->stage = TX_SEGMENT;
	give_back_file(tx);
	return true;
}

static void seg_committed(struct seg_append *a, int res)
{
	struct spool_tx *tx =
	    (struct spool_tx *)(void *)((char *)a - offsetof(struct spool_tx, seg_app));
	struct spool *sp = tx->sp;

	assert(tx->stage == TX_SEGMENT);
	release(tx);
	tx->stage = TX_IDLE;
	tx->commit_err = res;
	if (res == 0) {
		/* the segment's own fd, held by a reference (spool_loc_close) */
		tx->fd = a->seg->fd;
		spool_seg_ref(a->seg);
		tx->seg = a->seg;
		tx->body_off = a->off + SEG_REC_HDR_LEN;
		sp->stats.messages++;
		sp->stats.segmented++;
		sp->stats.bytes += tx->body_size;
	} else {
		sp->stats.failures++;
	}
	notify(tx, SPOOL_COMMITTED, res);
}

void spool_loc_close(struct spool_loc *loc)
{
	if (loc->seg != NULL)
		spool_seg_unref(loc->seg);
	else if (loc->fd >= 0)
		close(loc->fd);
	loc->fd = -1;
	loc->seg = NULL;
}

void spool_tx_take(struct spool_tx *tx, struct spool_loc *loc)
{
	loc->fd = tx->fd;
	loc->file_size = tx->file_size;
	loc->body_off = tx->seg != NULL ? tx->body_off : 0;
	loc->seg = tx->seg;
	tx->fd = -1;
	tx->seg = NULL;
}

static void tx_commit_call(struct spool_tx *tx, const struct spool_env *env)
{
	struct spool_env e = *env;
	size_t env_len;

	assert(tx->stage == TX_OPEN);
	e.body_size = tx->body_size;
	env_len = spool_env_format(&e, NULL, 0);
	if (commit_to_segment(tx, &e, env_len))
		return;
	if (tx->error == 0 && tx->fill + env_len + 1 + SPOOL_TRAILER_LEN <= tx->cap[tx->cur])
		tx->tail = tx->buf[tx->cur]; /* it fits behind the last bytes */
	else
		tx->tail = malloc(tx->fill + env_len + 1 + SPOOL_TRAILER_LEN);
	if (tx->tail == NULL && tx->error == 0)
		tx->error = -ENOMEM;
	if (tx->error == 0) {
		if (tx->tail != tx->buf[tx->cur])
			memcpy(tx->tail, tx->buf[tx->cur], tx->fill);
		spool_env_format(&e, tx->tail + tx->fill, env_len + 1);
		spool_trailer_format(tx->tail + tx->fill + env_len, tx->body_size,
		                     (uint32_t)env_len);
		tx->fill += env_len + SPOOL_TRAILER_LEN;
	}
	tx->stage = TX_COMMIT_WAIT;
	if (!ring_op_busy(&tx->op_write))
		start_chain(tx);
}

static void start_chain(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;

	if (tx->error != 0) {
		finish(tx, tx->error, true);
		return;
	}
	tx->stage = TX_CHAIN;
	tx->wr_len = tx->fill;
	tx->file_size = tx->off + tx->fill;
	/* A pool file longer than this message keeps no stale tail.  (io_uring
	 * has no ftruncate before Linux 6.9; it is one metadata call.) */
	if (tx->from_pool && tx->pool_size > tx->file_size &&
	    ftruncate(tx->fd, (off_t)tx->file_size) < 0) {
		finish(tx, -errno, true);
		return;
	}
	tx->write_res = tx->fsync_res = tx->rename_res = 0;
	if (tx->staging) {
		/* the write alone: chain_cb stops at TX_STAGED */
		ring_write(sp->ring, &tx->op_write, tx->fd, tx->tail, tx->fill, tx->off, false);
		tx->op_write.cb = chain_cb;
		return;
	}
	ring_reserve(sp->ring, 3); /* the chain is submitted whole */
	ring_write(sp->ring, &tx->op_write, tx->fd, tx->tail, tx->fill, tx->off, true);
	/* the write's completion comes to chain_cb through op_write */
	tx->op_write.cb = chain_cb;
	sync_and_rename(tx);
}

/* fdatasync -> rename to queue/ID, linked (after whatever the caller linked
 * ahead of them); chain_cb gets both. */
static void sync_and_rename(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;

	tx->fsync_at = metrics_clock();
	ring_fsync(sp->ring, &tx->op_fsync, tx->fd, true, true);
	ring_renameat(sp->ring, &tx->op_rename, tx->from_pool ? sp->pool_dfd : sp->tmp_dfd,
	              tx->from_pool ? tx->pool_name : tx->id, sp->queue_dfd, tx->id,
	              RENAME_NOREPLACE, false);
	sp->stats.fsyncs++;
}

static void tx_stage_call(struct spool_tx *tx, const struct spool_env *env)
{
	tx->staging = true;
	spool_tx_commit(tx, env);
}

bool spool_tx_staged(const struct spool_tx *tx)
{
	return tx->stage == TX_STAGED;
}

static void tx_commit_staged_call(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;

	assert(tx->stage == TX_STAGED);
	tx->stage = TX_CHAIN;
	tx->write_res = tx->fsync_res = tx->rename_res = 0;
	ring_reserve(sp->ring, 2); /* the chain is submitted whole */
	sync_and_rename(tx);
}

static bool tx_release_staged_call(struct spool_tx *tx)
{
	struct spool *sp = tx->sp;
	char name[SPOOL_POOL_NAME];

	assert(tx->stage == TX_STAGED);
	sp->stats.relayed++;
	if (tx->from_pool && sp->npool + sp->pool_reserved < SPOOL_POOL_MAX) {
		/* still pool/NAME: it takes the next message as it is */
		pool_add(sp, tx->fd, tx->pool_name, tx->file_size);
		tx->fd = -1;
		tx->stage = TX_IDLE;
		return true;
	}
	if (!tx->from_pool && spool_pool_reserve(sp, name)) {
		/* a new file (the pool was empty): into the pool.  Rare (the
		 * pool fills once), so a plain rename(2); both directories are
		 * emptied at start, so no fsync either. */
		if (renameat(sp->tmp_dfd, tx->id, sp->pool_dfd, name) == 0) {
			spool_pool_put(sp, tx->fd, name, tx->file_size);
			tx->fd = -1;
			tx->stage = TX_IDLE;
			return true;
		}
		spool_pool_cancel(sp);
	}
	tx->stage = TX_ABORTING; /* removed and closed; SPOOL_ABORTED follows */
	finish(tx, 0, true);
	return false;
}

static void dirsync_start(struct spool *sp)
{
	struct spool_waiter *w, *next, *keep = NULL;
	unsigned renames = 0;

	sp->dir_batch = NULL;
	for (w = sp->dir_waiting; w != NULL; w = next) {
		next = w->next;
		if (w->rename_op != NULL && renames == SPOOL_DIRSYNC_RENAMES) {
			w->next = keep; /* the next batch */
			keep = w;
			continue;
		}
		renames += w->rename_op != NULL;
		w->next = sp->dir_batch;
		sp->dir_batch = w;
	}
	sp->dir_waiting = keep;
	sp->stats.dirsyncs++;
	/* renames -> fsync as one chain; a failed rename does not stop the
	 * others nor the fsync (hard links) */
	ring_reserve(sp->ring, renames + 1);
	for (w = sp->dir_batch; w != NULL; w = w->next) {
		if (w->rename_op == NULL)
			continue;
		ring_renameat(sp->ring, w->rename_op, w->olddfd, w->oldname, w->newdfd, w->newname,
		              RENAME_NOREPLACE, false);
		ring_hardlink_last(sp->ring);
	}
	sp->dirsync_at = metrics_clock();
	ring_fsync(sp->ring, &sp->op_dirsync, sp->queue_dfd, false, false);
}

static void chain_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_tx *tx = op->owner;
	struct spool *sp = tx->sp;

	if (op == &tx->op_write)
		tx->write_res = res < 0 ? res : (size_t)res < tx->wr_len ? -ENOSPC : 0;
	else if (op == &tx->op_fsync) {
		tx->fsync_res = res;
		if (res >= 0)
			metrics_fsync_done(sp->mw, tx->fsync_at);
	} else
		tx->rename_res = res;
	if (ring_op_busy(&tx->op_write) || ring_op_busy(&tx->op_fsync) ||
	    ring_op_busy(&tx->op_rename))
		return;
	tx->op_write.cb = write_cb;
	if (tx->write_res < 0 || tx->fsync_res < 0 || tx->rename_res < 0) {
		int err = tx->write_res < 0   ? tx->write_res
		          : tx->fsync_res < 0 ? tx->fsync_res
		                              : tx->rename_res;
		tx->staging = false;
		finish(tx, err, true);
		return;
	}
	if (tx->staging) {
		tx->staging = false;
		tx->stage = TX_STAGED;
		release(tx); /* the buffers: nothing more is written */
		notify(tx, SPOOL_STAGED, 0);
		return;
	}
	tx->stage = TX_DIRSYNC;
	tx->dirwait.done = dirsync_done;
	spool_dirsync(sp, &tx->dirwait);
}

void spool_rename_dirsync(struct spool *sp, struct spool_waiter *w, struct ring_op *op, int olddfd,
                          const char *oldname, int newdfd, const char *newname)
{
	w->rename_op = op;
	w->olddfd = olddfd;
	w->oldname = oldname;
	w->newdfd = newdfd;
	w->newname = newname;
	w->next = sp->dir_waiting;
	sp->dir_waiting = w;
	if (!ring_op_busy(&sp->op_dirsync))
		dirsync_start(sp);
}

void spool_dirsync(struct spool *sp, struct spool_waiter *w)
{
	w->rename_op = NULL;
	w->next = sp->dir_waiting;
	sp->dir_waiting = w;
	if (!ring_op_busy(&sp->op_dirsync))
		dirsync_start(sp);
}

static void dirsync_done(struct spool_waiter *w, int res)
{
	struct spool_tx *tx =
	    (struct spool_tx *)(void *)((char *)w - offsetof(struct spool_tx, dirwait));

	if (res < 0) /* not durable: take it back so the client retries */
		unlinkat(tx->sp->queue_dfd, tx->id, 0);
	finish(tx, res < 0 ? res : 0, false);
}

static void dirsync_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool *sp = op->owner;
	struct spool_waiter *w = sp->dir_batch, *next;

	if (res >= 0)
		metrics_fsync_done(sp->mw, sp->dirsync_at);
	sp->dir_batch = NULL;
	if (sp->dir_waiting != NULL)
		dirsync_start(sp);
	for (; w != NULL; w = next) {
		next = w->next;
		w->done(w, res);
	}
}

static void tx_abort_call(struct spool_tx *tx)
{
	switch (tx->stage) {
	case TX_OPENING:
		tx->stage = TX_ABORT_WAIT;
		break;
	case TX_OPEN:
		if (ring_op_busy(&tx->op_write)) {
			tx->stage = TX_ABORT_WAIT;
			break;
		}
		tx->stage = TX_ABORTING;
		finish(tx, 0, true);
		break;
	default:
		/* committing or already done: the commit's outcome stands */
		break;
	}
}

int spool_load_env(int queue_dfd, const char *id, struct spool_env *env, char *err, size_t errlen)
{
	char trailer[SPOOL_TRAILER_LEN], *buf;
	uint64_t off;
	uint32_t len;
	struct stat st;
	int fd = openat(queue_dfd, id, O_RDONLY | O_CLOEXEC), ret = -1;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", id, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_size < SPOOL_TRAILER_LEN ||
	    pread(fd, trailer, sizeof(trailer), st.st_size - SPOOL_TRAILER_LEN) !=
	        SPOOL_TRAILER_LEN ||
	    spool_trailer_parse(trailer, &off, &len) < 0 || len > SPOOL_ENV_MAX ||
	    off + len + SPOOL_TRAILER_LEN != (uint64_t)st.st_size) {
		snprintf(err, errlen, "%s: no valid trailer", id);
		close(fd);
		return -1;
	}
	buf = malloc(len + 1);
	if (buf != NULL && pread(fd, buf, len, (off_t)off) == (ssize_t)len)
		ret = spool_env_parse(buf, len, env, err, errlen);
	else
		snprintf(err, errlen, "%s: cannot read envelope", id);
	if (ret == 0 && env->body_size != off) {
		snprintf(err, errlen, "%s: body size %llu != envelope offset %llu", id,
		         (unsigned long long)env->body_size, (unsigned long long)off);
		spool_env_free(env);
		ret = -1;
	}
	free(buf);
	close(fd);
	return ret;
}

/* ---- the public calls: counted (api_depth), see notify() ---------------- */

void spool_tx_begin(struct spool_tx *tx, struct spool *sp, const char *id, spool_cb cb, void *owner)
{
	API_ENTER(sp);
	tx_begin_call(tx, sp, id, cb, owner);
	API_LEAVE(sp);
}

bool spool_tx_append(struct spool_tx *tx, const void *buf, size_t len)
{
	bool r;

	API_ENTER(tx->sp);
	r = tx_append_call(tx, buf, len);
	API_LEAVE(tx->sp);
	return r;
}

char *spool_tx_space(struct spool_tx *tx, size_t *room)
{
	char *r;

	API_ENTER(tx->sp);
	r = tx_space_call(tx, room);
	API_LEAVE(tx->sp);
	return r;
}

void spool_tx_added(struct spool_tx *tx, size_t n)
{
	API_ENTER(tx->sp);
	tx_added_call(tx, n);
	API_LEAVE(tx->sp);
}

void spool_tx_commit(struct spool_tx *tx, const struct spool_env *env)
{
	API_ENTER(tx->sp);
	tx_commit_call(tx, env);
	API_LEAVE(tx->sp);
}

void spool_tx_stage(struct spool_tx *tx, const struct spool_env *env)
{
	API_ENTER(tx->sp);
	tx_stage_call(tx, env);
	API_LEAVE(tx->sp);
}

void spool_tx_commit_staged(struct spool_tx *tx)
{
	API_ENTER(tx->sp);
	tx_commit_staged_call(tx);
	API_LEAVE(tx->sp);
}

bool spool_tx_release_staged(struct spool_tx *tx)
{
	bool r;

	API_ENTER(tx->sp);
	r = tx_release_staged_call(tx);
	API_LEAVE(tx->sp);
	return r;
}

void spool_tx_abort(struct spool_tx *tx)
{
	API_ENTER(tx->sp);
	tx_abort_call(tx);
	API_LEAVE(tx->sp);
}
