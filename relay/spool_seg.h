/* spool_seg: segments, where small messages are committed with one shared
 * fdatasync (seg_format.h has the file format).
 *
 * Each worker appends whole records to its open segment, a file under
 * QueueDirectory/seg/ that was preallocated (fallocate) and made durable
 * (file and directory fsynced) when it was created, so a record's write
 * changes no metadata but the extents it fills.  A record is durable once
 * an fdatasync that started after every write below its end had completed
 * has succeeded: records become durable as a prefix of the file, which is
 * what a reader at start-up (seg_scan) can read back.  One fdatasync
 * covers every record written since the last one (group commit); no
 * rename and no directory fsync per message.
 *
 * A message leaves its segment with a SEG_DONE record, made durable the
 * same way, in the same segment (each SEG_MSG reserves room for it).  A
 * segment that takes no more messages and whose every message has a
 * durable SEG_DONE, and that no reader holds (spool_seg_ref), is
 * unlinked and closed.  At start-up spool_seg_recover writes every message still in a
 * segment to queue/ID, the one form that tools, hold and retries know,
 * and removes the segments.
 *
 * Reports reach their owner from the ring's dispatch only. */
#ifndef KRELAY_SPOOL_SEG_H
#define KRELAY_SPOOL_SEG_H

#include <stdbool.h>
#include <stdint.h>

#include "ring.h"
#include "seg_format.h"

struct metrics_worker;

#define SEG_SIZE       (4u << 20) /* a segment file, preallocated */
#define SEG_RECORD_MAX (SEG_SIZE / 8)
/* Segments per worker at most: one slow message keeps its whole segment,
 * so past this many (a backlog of slow destinations) new messages get
 * files of their own until segments empty. */
#define SEG_MAX_PER_WORKER 8
#define SEG_WBUF_SIZE      (256u << 10) /* records gathered into one write */
#define SEG_DONE_WAIT_MS   20           /* a lone SEG_DONE waits this long for company */

struct spool_seg;

/* A worker's segments. */
struct seg_set {
	struct ring *ring;
	int dfd; /* QueueDirectory/seg/ */
	unsigned worker;
	uint32_t salt; /* in file names: unique per run */
	struct spool_seg *cur, *all;
	unsigned seq;
	uint64_t *fsyncs;          /* counted here (the spool's statistics) */
	struct metrics_worker *mw; /* fsync latencies (metrics.h); may be NULL */
	uint64_t made;
	unsigned count; /* segments on disk */
	/* called with -ENOSPC (or another -errno) when no segment could be made */
	void (*full)(void *arg, int err);
	void *full_arg;
};

/* One record being appended; embedded in its owner. */
struct seg_append {
	struct spool_seg *seg;
	struct seg_append *next; /* the segment's appends in offset order */
	void (*done)(struct seg_append *a, int res);
	enum seg_rec_type type;
	uint64_t off, end; /* where the record lies in the segment */
	size_t len;
	const void *buf; /* its bytes, valid until done */
	bool written;
	int res;
	char rec[SEG_REC_HDR_LEN]; /* a SEG_DONE record is all header */
};

struct spool_seg {
	struct seg_set *ss;
	int fd;
	char name[32];
	uint64_t end;          /* next record goes here */
	uint64_t done_reserve; /* room kept for the SEG_DONEs of live messages */
	uint64_t synced;       /* durable below this */
	uint64_t sync_target;  /* the fdatasync in flight covers this much */
	unsigned live;         /* SEG_MSG records admitted, no durable SEG_DONE */
	unsigned readers;      /* holders of its fd (spool_seg_ref) */
	bool open;             /* takes new messages */
	bool broken;           /* a write or sync failed: everything after fails */
	uint64_t broken_at;    /* ... from this offset on */
	struct seg_append *head, *tail;
	struct seg_append *unsent;           /* first not yet handed to a write */
	struct seg_append *w_first, *w_last; /* those the write in flight carries */
	size_t w_len;
	char *wbuf; /* SEG_WBUF_SIZE: several records copied into one write */
	struct ring_op op_write, op_sync, op_unlink, op_lazy;
	int64_t sync_at; /* when the fdatasync in flight was submitted (metrics) */
	struct __kernel_timespec lazy_ts;
	bool lazy_due;
	struct spool_seg *next; /* the worker's segments */
};

void spool_seg_init(struct seg_set *ss, struct ring *ring, int dfd, unsigned worker, uint32_t salt,
                    uint64_t *fsyncs, void (*full)(void *arg, int err), void *full_arg);
void spool_seg_exit(struct seg_set *ss);

/* Appends a SEG_MSG record: rec is SEG_REC_HDR_LEN bytes of header (filled
 * here) followed by the queue file's bytes, len in all, and must stay
 * valid until done.  False (nothing started) when it cannot go into a
 * segment: too big, no segment could be made (then the caller writes a
 * file as usual).  Else done(a, res) follows once the record is durable
 * (res 0) or could not be made so. */
bool spool_seg_append_msg(struct seg_set *ss, struct seg_append *a, const char *id, char *rec,
                          size_t len, void (*done)(struct seg_append *a, int res));

/* Whoever reads a message from s->fd (the queue, once it has it) holds a
 * reference: the segment and its fd stay until the last one goes.  (No
 * descriptor per message: a dup each ran a busy relay out of them.) */
void spool_seg_ref(struct spool_seg *s);
void spool_seg_unref(struct spool_seg *s);

/* The message of a (a SEG_MSG that was made durable) leaves its segment:
 * a SEG_DONE record in a, which then reports when it is durable. */
void spool_seg_done(struct seg_append *a, const char *id,
                    void (*done)(struct seg_append *a, int res));

/* Start-up, before the workers: every message left in QueueDirectory/seg/
 * without its SEG_DONE is written to queue/ID (tmp/, fdatasync, rename;
 * skipped when queue/ID or hold/ID is there already), the queue directory
 * is fsynced, then the segments are removed.  Returns how many messages
 * were written to queue/, or -errno. */
int spool_seg_recover(const char *dir, unsigned *segments);

/* `krelay queue list`: calls cb for each message still in a segment
 * (offline; the relay may be running). */
int spool_seg_list(const char *dir,
                   void (*cb)(void *arg, const char *id, const char *file, size_t len), void *arg);

#endif
