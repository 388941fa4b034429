/* spool: writes accepted messages durably through the ring.
 *
 * Per worker: one struct spool (directory fds, group commit of the queue
 * directory).  Per message being received: one struct spool_tx, embedded in
 * the SMTP session.  Body bytes are appended into two large buffers that are
 * written alternately while the session keeps reading; commit appends the
 * envelope and trailer, then, as one linked chain, write -> fdatasync ->
 * rename tmp/ID (or pool/NAME, a reused file) -> queue/ID; the queue
 * directory's fsync is shared by every message renamed before it started
 * (group commit). */
#ifndef KRELAY_SPOOL_H
#define KRELAY_SPOOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ring.h"
#include "spool_format.h"
#include "spool_seg.h"

#define SPOOL_BUF_SIZE  (64u << 10) /* a body buffer; the most one append takes */
#define SPOOL_FREE_BUFS 64          /* body buffers kept for reuse, per worker */
/* A message past SPOOL_BIG_AFTER bytes is written in SPOOL_BIG_SIZE writes
 * (fewer hand-offs to io-wq): at most SPOOL_BIG_MAX big buffers in use per
 * worker (two per large message; the rest keep small ones), SPOOL_FREE_BIG
 * of them kept for reuse. */
#define SPOOL_BIG_SIZE     (512u << 10)
#define SPOOL_BIG_AFTER    (256u << 10)
#define SPOOL_BIG_MAX      32
#define SPOOL_FREE_BIG     8
#define SPOOL_POOL_MAX     64 /* delivered message files kept for reuse, per worker */
#define SPOOL_POOL_NAME    24
#define SPOOL_SIZE_UNKNOWN UINT64_MAX

struct spool_stats {
	uint64_t messages;
	uint64_t bytes;
	uint64_t fsyncs;   /* file fdatasyncs */
	uint64_t dirsyncs; /* queue directory fsyncs, each covering a batch */
	uint64_t failures;
	/* DeliveryMode=interactive: relayed before the reply, never made durable */
	uint64_t relayed;
	uint64_t segmented; /* committed into a segment (no file of their own) */
	uint64_t segments;  /* segment files made (summed at the end) */
};

struct spool_tx;
struct spool_buf;
struct metrics_worker;

/* A delivered message's file, moved to QueueDirectory/pool/ once its
 * removal from queue/ was durable, and kept open: the next message is
 * written over it (no inode to allocate, no blocks to free). */
struct spool_pool_file {
	int fd;
	uint64_t size; /* or SPOOL_SIZE_UNKNOWN */
	char name[SPOOL_POOL_NAME];
};

/* Someone waiting for the queue directory's next fsync (group commit). */
struct spool_waiter {
	struct spool_waiter *next;
	void (*done)(struct spool_waiter *w, int res);
	/* spool_rename_dirsync: the rename made just before that fsync */
	struct ring_op *rename_op;
	int olddfd, newdfd;
	const char *oldname, *newname;
};

#define SPOOL_DIRSYNC_RENAMES 32 /* renames linked ahead of one directory fsync */

struct spool {
	struct ring *ring;
	int tmp_dfd, queue_dfd, pool_dfd, seg_dfd;
	unsigned worker;
	uint32_t id_counter;
	struct spool_waiter *dir_waiting; /* renamed, waiting for the next dirsync */
	struct spool_waiter *dir_batch;   /* covered by the dirsync in flight */
	struct ring_op op_dirsync;
	struct spool_stats stats;
	struct metrics_worker *mw; /* fsync latencies (metrics.h); may be NULL */
	int64_t dirsync_at;        /* when the directory fsync in flight was submitted */
	struct spool_buf *free_bufs, *free_big;
	unsigned nfree_bufs, nfree_big;
	unsigned nbig; /* big buffers in use */
	struct spool_pool_file pool[SPOOL_POOL_MAX];
	unsigned npool, pool_reserved;
	uint32_t pool_seq;
	/* spool_* calls under way on this worker: no event may reach an owner
	 * while it is not 0 (events come from the ring's dispatch only) */
	unsigned api_depth;
	/* the file system was found full (by any worker): each worker empties
	 * its own pool when this passes the count it saw last */
	atomic_uint *full_gen;
	unsigned full_seen;
	struct seg_set segs; /* spool_seg.h */
};

/* Where a committed message lies, handed from the spool to its owner:
 * its own file (body at 0), or, with seg set, a record in a segment (fd
 * is the segment's, held by a reference; the body at body_off).  The
 * owner lets go with spool_loc_close and, for a segment, ends the record
 * with spool_seg_done. */
struct spool_loc {
	int fd;
	uint64_t file_size;
	uint64_t body_off;
	struct spool_seg *seg;
};

enum spool_event {
	SPOOL_OPENED,    /* err: 0 or -errno */
	SPOOL_WRITABLE,  /* a buffer was freed: appends may continue */
	SPOOL_COMMITTED, /* err: 0 (durable) or -errno (nothing left behind).  On
	                  * 0, tx->fd is the message's open (read-write) file and
	                  * the callee owns it: it closes it or hands it on. */
	SPOOL_ABORTED,   /* temporary file removed */
	SPOOL_STAGED,    /* spool_tx_stage: the whole file is written (not yet
	                  * durable, not in queue/); tx->fd is the file, still
	                  * the spool's.  A failure comes as SPOOL_COMMITTED. */
};

/* Every event reaches the owner from the ring's dispatch, never from inside
 * the spool_* call that caused it (asserted): the owner may call the spool
 * again, or free itself, from its callback. */
typedef void (*spool_cb)(void *owner, enum spool_event ev, int err);

struct spool_tx {
	struct spool *sp;
	spool_cb cb;
	void *owner;
	char id[SPOOL_ID_LEN + 1];
	int fd;
	bool from_pool;     /* fd is pool/pool_name, written where it is */
	uint64_t pool_size; /* its size before (SPOOL_SIZE_UNKNOWN: not known) */
	uint64_t file_size; /* the whole file, once committed */
	char pool_name[SPOOL_POOL_NAME];
	uint64_t off; /* file offset of the next write */
	char *buf[2];
	size_t cap[2]; /* SPOOL_BUF_SIZE or SPOOL_BIG_SIZE */
	size_t fill;   /* bytes in buf[cur] */
	int cur;
	size_t wr_len; /* bytes of the write in flight */
	int error;     /* first write error, -errno */
	int stage;     /* enum in spool.c */
	bool staging;  /* spool_tx_stage: write only, no fdatasync or rename */
	char *tail;    /* last buffer + envelope + trailer, written at commit
	                * (buf[cur] itself when they fit there) */
	int commit_err;
	uint64_t body_size;
	struct spool_waiter dirwait;
	struct ring_op op_open, op_write, op_fsync, op_rename, op_close, op_unlink;
	struct ring_op op_defer; /* a NOP: the end reported on the next turn */
	int write_res, fsync_res, rename_res;
	int64_t fsync_at; /* when the write and fdatasync were submitted (metrics) */
	/* Set by the owner after spool_tx_begin: a small message may be
	 * committed into a segment (the owner then hands it to the queue). */
	bool segment_ok;
	uint64_t body_off;     /* once committed: the body's offset in fd */
	struct spool_seg *seg; /* ... and its segment, or NULL */
	struct seg_append seg_app;
};

/* Opens QueueDirectory's tmp/ and queue/ (creating them).  Returns 0 or -errno. */
int spool_init(struct spool *sp, struct ring *ring, const char *dir, unsigned worker);
void spool_exit(struct spool *sp);

/* Removes leftovers of interrupted receptions and counts queued messages.
 * Call once, before workers start. */
int spool_recover(const char *dir, unsigned *queued, unsigned *removed);

/* The IDs of the messages in DIR/sub (malloc'd array of malloc'd strings). */
int spool_list_in(const char *dir, const char *sub, char ***ids, size_t *n);
/* The same for queue/. */
int spool_list(const char *dir, char ***ids, size_t *n);

/* Makes a new queue ID (unique in this spool; time-ordered). */
void spool_new_id(struct spool *sp, char id[SPOOL_ID_LEN + 1]);

/* Starts a message: a pool file (pool/NAME) or a new tmp/ID.
 * SPOOL_OPENED follows. */
void spool_tx_begin(struct spool_tx *tx, struct spool *sp, const char *id, spool_cb cb,
                    void *owner);
/* Appends body bytes.  Returns false when both buffers are busy: wait for
 * SPOOL_WRITABLE.  After a write error it swallows bytes (tx->error set). */
bool spool_tx_append(struct spool_tx *tx, const void *buf, size_t len);
bool spool_tx_can_append(const struct spool_tx *tx, size_t len);
/* Where the next body bytes go, straight into the buffer being filled
 * (*room bytes there, never 0; a full buffer is sent to be written first),
 * or NULL when that must wait for the write in flight (SPOOL_WRITABLE).
 * Only while tx->error is 0.  spool_tx_added(tx, n) then counts the n bytes
 * put there. */
char *spool_tx_space(struct spool_tx *tx, size_t *room);
void spool_tx_added(struct spool_tx *tx, size_t n);
/* Appends the envelope and trailer and makes it durable.  SPOOL_COMMITTED follows. */
void spool_tx_commit(struct spool_tx *tx, const struct spool_env *env);
/* DeliveryMode=interactive: writes the whole file like spool_tx_commit but
 * stops before fdatasync and the rename (SPOOL_STAGED).  Then either
 * spool_tx_commit_staged() makes it durable (SPOOL_COMMITTED follows), or,
 * once the message went to the next hop, spool_tx_release_staged() gives
 * the file back to the pool: true when that is done, false when
 * SPOOL_ABORTED follows. */
void spool_tx_stage(struct spool_tx *tx, const struct spool_env *env);
void spool_tx_commit_staged(struct spool_tx *tx);
bool spool_tx_release_staged(struct spool_tx *tx);
bool spool_tx_staged(const struct spool_tx *tx);
/* After SPOOL_COMMITTED (0): the message's place, now the caller's. */
void spool_tx_take(struct spool_tx *tx, struct spool_loc *loc);
/* Lets go of it: closes its file, or drops its segment reference. */
void spool_loc_close(struct spool_loc *loc);
/* Drops the message.  SPOOL_ABORTED follows. */
void spool_tx_abort(struct spool_tx *tx);
bool spool_tx_busy(const struct spool_tx *tx);

/* Reserves a place in the pool for a delivered message's file and names
 * it (pool/NAME); false when the pool is full.  The owner renames queue/ID
 * there, and once the queue directory's fsync after that has completed
 * gives it with spool_pool_put, or gives the place back (spool_pool_cancel). */
bool spool_pool_reserve(struct spool *sp, char name[SPOOL_POOL_NAME]);
void spool_pool_put(struct spool *sp, int fd, const char *name, uint64_t size);
/* After a write that failed with err: when the file system is out of room
 * (ENOSPC, EDQUOT), every pooled file is removed, here and (through
 * full_gen, at their next message) in the other workers' spools, so that
 * what delivering mail freed is free again.  Any other err: nothing. */
void spool_pool_drain(struct spool *sp, int err);
/* The count shared by the workers' spools (see full_gen). */
void spool_share_full(struct spool *sp, atomic_uint *full_gen);
void spool_pool_cancel(struct spool *sp);

/* Calls w->done once a queue-directory fsync that started after this call
 * has completed: every rename into queue/ before the call is then durable. */
void spool_dirsync(struct spool *sp, struct spool_waiter *w);
/* Renames olddfd/oldname to newdfd/newname (RENAME_NOREPLACE) right before
 * the next queue-directory fsync, linked with it and with the other renames
 * of that batch, so that one fsync covers them all and no rename waits for a
 * separate completion before joining a batch.  (With DEFER_TASKRUN each link
 * is still handed to io-wq on its own, by the ring's thread: chains are not
 * run start to end by one io-wq worker.)  op's callback gets the rename's
 * result first, then w->done the fsync's.  The names must stay valid until
 * then. */
void spool_rename_dirsync(struct spool *sp, struct spool_waiter *w, struct ring_op *op, int olddfd,
                          const char *oldname, int newdfd, const char *newname);

/* Reads a queued message's envelope (blocking; for tools and recovery). */
int spool_load_env(int queue_dfd, const char *id, struct spool_env *env, char *err, size_t errlen);

#endif
