/* spool_msg: see spool_msg.h. */
#include "spool_msg.h"

#include <assert.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

/* The calls below count themselves in the spool's api_depth, as the
 * spool's own do: a report asserts that none is under way. */
#define API_ENTER(sp) ((sp)->api_depth++)
#define API_LEAVE(sp) (assert((sp)->api_depth > 0), (sp)->api_depth--)

static void report(struct spool *sp, spool_msg_cb done, void *owner, int res)
{
	assert(sp->api_depth == 0);
	done(owner, res);
}

int spool_state_load(int queue_dfd, const char *id, struct spool_env *env, char *err, size_t errlen)
{
	char name[SPOOL_ID_LEN + 8], *buf;
	struct stat st;
	int fd, ret = -1;

	snprintf(name, sizeof(name), "%s.env", id);
	fd = openat(queue_dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return spool_load_env(queue_dfd, id, env, err, errlen);
	if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size < SPOOL_ENV_MAX &&
	    (buf = malloc((size_t)st.st_size)) != NULL) {
		if (pread(fd, buf, (size_t)st.st_size, 0) == st.st_size)
			ret = spool_env_parse(buf, (size_t)st.st_size, env, err, errlen);
		free(buf);
	} else {
		snprintf(err, errlen, "%s: unreadable", name);
	}
	close(fd);
	return ret;
}

/* ---- the state file --------------------------------------------------- */

static void state_cb(struct ring_op *op, int res, unsigned flags);

static void state_dirsync_done(struct spool_waiter *dw, int res)
{
	struct spool_state_writer *w =
	    (struct spool_state_writer *)(void *)((char *)dw -
	                                          offsetof(struct spool_state_writer, dirwait));

	w->busy = false;
	report(w->sp, w->done, w->owner, res);
}

void spool_state_init(struct spool_state_writer *w, struct spool *sp, spool_msg_cb done,
                      void *owner)
{
	memset(w, 0, sizeof(*w));
	w->sp = sp;
	w->done = done;
	w->owner = owner;
	w->fd = -1;
	w->dirwait.done = state_dirsync_done;
	ring_op_init(&w->op_open, RING_OPEN, state_cb, w);
	ring_op_init(&w->op_write, RING_WRITE, state_cb, w);
	ring_op_init(&w->op_sync, RING_FSYNC, state_cb, w);
	ring_op_init(&w->op_close, RING_CLOSE, state_cb, w);
	ring_op_init(&w->op_rename, RING_RENAME, state_cb, w);
}

void spool_state_write(struct spool_state_writer *w, const struct spool_env *env)
{
	size_t need = spool_env_format(env, NULL, 0) + 1;

	assert(!w->busy);
	API_ENTER(w->sp);
	w->busy = true;
	free(w->buf);
	w->buf = malloc(need);
	if (w->buf == NULL)
		fatalx("out of memory");
	w->len = spool_env_format(env, w->buf, need);
	w->res = 0;
	w->fd = -1;
	snprintf(w->id, sizeof(w->id), "%s", env->id);
	snprintf(w->name, sizeof(w->name), "%s.env", env->id);
	ring_openat(w->sp->ring, &w->op_open, w->sp->tmp_dfd, w->name,
	            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	API_LEAVE(w->sp);
}

void spool_state_write_file(struct spool_state_writer *w, const char *id, char *buf, size_t len)
{
	assert(!w->busy);
	API_ENTER(w->sp);
	w->busy = true;
	free(w->buf);
	w->buf = buf;
	w->len = len;
	w->res = 0;
	w->fd = -1;
	snprintf(w->id, sizeof(w->id), "%s", id);
	snprintf(w->name, sizeof(w->name), "%s", id);
	ring_openat(w->sp->ring, &w->op_open, w->sp->tmp_dfd, w->name,
	            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	API_LEAVE(w->sp);
}

/* open, then write -> fdatasync -> rename (one chain), then close; then
 * the directory fsync makes the rename durable. */
static void state_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_state_writer *w = op->owner;
	struct spool *sp = w->sp;

	if (op == &w->op_open) {
		if (res < 0) {
			w->res = res;
		} else {
			w->fd = res;
			ring_reserve(sp->ring, 3); /* the chain is submitted whole */
			ring_write(sp->ring, &w->op_write, w->fd, w->buf, w->len, 0, true);
			w->sync_at = metrics_clock();
			ring_fsync(sp->ring, &w->op_sync, w->fd, true, true);
			ring_renameat(sp->ring, &w->op_rename, sp->tmp_dfd, w->name, sp->queue_dfd,
			              w->name, 0, false);
			return;
		}
	} else if (op != &w->op_close && res < 0 && w->res == 0) {
		w->res = res;
	} else if (op == &w->op_sync && res >= 0) {
		metrics_fsync_done(sp->mw, w->sync_at);
	}
	if (ring_op_busy(&w->op_open) || ring_op_busy(&w->op_write) || ring_op_busy(&w->op_sync) ||
	    ring_op_busy(&w->op_rename) || ring_op_busy(&w->op_close))
		return;
	if (w->fd >= 0) {
		ring_close(sp->ring, &w->op_close, w->fd);
		w->fd = -1;
		return;
	}
	if (w->res < 0) {
		log_warnx("queue: %s: writing delivery state: %s (a recipient may be tried again)",
		          w->id, strerror(-w->res));
		/* what was written of tmp/ID.env goes (error path: a plain call) */
		unlinkat(sp->tmp_dfd, w->name, 0);
		spool_pool_drain(sp, w->res);
	}
	spool_dirsync(sp, &w->dirwait);
}

void spool_state_free(struct spool_state_writer *w)
{
	free(w->buf);
	w->buf = NULL;
}

/* ---- removal ----------------------------------------------------------- */

static void remove_finish(struct spool_remover *r, int res)
{
	if (r->pooling && res >= 0 && r->fd >= 0) {
		/* out of queue/ for good: the file may take a new message */
		spool_pool_put(r->sp, r->fd, r->pool_name, r->size);
		r->fd = -1;
	} else if (r->pooling) {
		spool_pool_cancel(r->sp);
	}
	r->pooling = false;
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	r->busy = false;
	report(r->sp, r->done, r->owner, res);
}

static void env_unlinked_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_remover *r = op->owner;

	remove_finish(r, r->res);
}

/* queue/ID's removal is durable (res >= 0): now queue/ID.env may go. */
static void removal_dirsync_done(struct spool_waiter *dw, int res)
{
	struct spool_remover *r =
	    (struct spool_remover *)(void *)((char *)dw - offsetof(struct spool_remover, dirwait));

	r->rename_linked = false;
	if (!r->has_state || res < 0) {
		/* (not durable: the state file stays with the message, so that a
		 * restart that finds the message finds its state too) */
		remove_finish(r, res);
		return;
	}
	r->res = res;
	ring_unlinkat(r->sp->ring, &r->op_env, r->sp->queue_dfd, r->env_name);
}

static void msg_removed_cb(struct ring_op *op, int res, unsigned flags)
{
	struct spool_remover *r = op->owner;

	if (r->pooling && res < 0) {
		r->pooling = false; /* not moved (gone already?): no reuse */
		spool_pool_cancel(r->sp);
	}
	if (r->rename_linked)
		return; /* linked with the dirsync: removal_dirsync_done follows */
	spool_dirsync(r->sp, &r->dirwait);
}

void spool_remover_init(struct spool_remover *r, struct spool *sp, spool_msg_cb done, void *owner)
{
	memset(r, 0, sizeof(*r));
	r->sp = sp;
	r->done = done;
	r->owner = owner;
	r->fd = -1;
	r->dirwait.done = removal_dirsync_done;
	ring_op_init(&r->op_msg, RING_UNLINK, msg_removed_cb, r);
	ring_op_init(&r->op_env, RING_UNLINK, env_unlinked_cb, r);
}

void spool_msg_remove(struct spool_remover *r, const char *id, int fd, uint64_t size,
                      bool has_state)
{
	struct spool *sp = r->sp;

	assert(!r->busy);
	API_ENTER(sp);
	r->busy = true;
	r->fd = fd;
	r->size = size;
	r->has_state = has_state;
	r->res = 0;
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->env_name, sizeof(r->env_name), "%s.env", id);
	if (fd >= 0 && spool_pool_reserve(sp, r->pool_name)) {
		/* moved aside rather than unlinked: its inode and blocks serve the
		 * next message once the move is durable; the rename goes with the
		 * directory fsync that makes it durable */
		r->pooling = true;
		r->rename_linked = true;
		r->op_msg.kind = RING_RENAME;
		spool_rename_dirsync(sp, &r->dirwait, &r->op_msg, sp->queue_dfd, r->id,
		                     sp->pool_dfd, r->pool_name);
	} else {
		r->op_msg.kind = RING_UNLINK;
		ring_unlinkat(sp->ring, &r->op_msg, sp->queue_dfd, r->id);
	}
	API_LEAVE(sp);
}
