/* spool_msg: the files of a message once it is in queue/, for the queue.
 *
 * A message is queue/ID (envelope and body, written once by the spool) and,
 * after its first delivery attempt, queue/ID.env: the envelope again with
 * every recipient's state (P pending, D delivered, F failed, B bounced),
 * replaced atomically (tmp/ID.env, write, fdatasync, rename, then the queue
 * directory's fsync, shared with everybody else's: group commit).
 *
 * A finished message is removed in an order no crash can undo: queue/ID
 * first (moved to pool/ for reuse, or unlinked), made durable by the
 * directory fsync, and only then queue/ID.env.  A crash in between leaves
 * a state file without its message, which recovery removes; never the
 * message without its state (whose own envelope says every recipient is
 * pending).
 *
 * Both run through the ring and report once, from the ring's dispatch,
 * never from inside the call that started them (asserted). */
#ifndef KRELAY_SPOOL_MSG_H
#define KRELAY_SPOOL_MSG_H

#include <stdbool.h>
#include <stdint.h>

#include "spool.h"

typedef void (*spool_msg_cb)(void *owner, int res);

/* Reads queue/ID's current envelope (blocking; start-up and tools):
 * queue/ID.env when present, else the one embedded in queue/ID. */
int spool_state_load(int queue_dfd, const char *id, struct spool_env *env, char *err,
                     size_t errlen);

/* Writes queue/ID.env.  done(owner, res) follows once the directory fsync
 * after the rename completed: res is that fsync's result.  A failed write
 * is logged here (the recipients it would have recorded may be tried
 * again) and its temporary file removed; done still follows. */
struct spool_state_writer {
	struct spool *sp;
	spool_msg_cb done;
	void *owner;
	bool busy;
	char id[SPOOL_ID_LEN + 1];
	char name[SPOOL_ID_LEN + 8]; /* ID.env, in tmp/ then in queue/ */
	char *buf;
	size_t len;
	int fd, res;
	struct ring_op op_open, op_write, op_sync, op_rename, op_close;
	struct spool_waiter dirwait;
	int64_t sync_at; /* when the write and fdatasync were submitted (metrics) */
};

void spool_state_init(struct spool_state_writer *w, struct spool *sp, spool_msg_cb done,
                      void *owner);
/* env is formatted at once (the caller may change it afterwards). */
void spool_state_write(struct spool_state_writer *w, const struct spool_env *env);
void spool_state_free(struct spool_state_writer *w);
/* The same for a whole queue file: buf (len bytes, malloc'd, now the
 * writer's) becomes queue/ID.  w->res < 0 afterwards if it did not. */
void spool_state_write_file(struct spool_state_writer *w, const char *id, char *buf, size_t len);

/* Removes queue/ID (and queue/ID.env when has_state says it may exist).
 * fd, the message's open file or -1, is the spool's from here: once the
 * move into pool/ is durable the file serves the next message, else it is
 * closed.  done(owner, res) follows: res < 0 when the removal may not be
 * durable (then queue/ID.env, if any, stays with what is left). */
struct spool_remover {
	struct spool *sp;
	spool_msg_cb done;
	void *owner;
	bool busy;
	bool has_state;
	bool pooling;       /* queue/ID is being moved to pool/pool_name */
	bool rename_linked; /* ... by the rename linked ahead of the dirsync */
	int fd, res;
	uint64_t size;
	char id[SPOOL_ID_LEN + 1];
	char env_name[SPOOL_ID_LEN + 8];
	char pool_name[SPOOL_POOL_NAME];
	struct ring_op op_msg, op_env;
	struct spool_waiter dirwait;
};

void spool_remover_init(struct spool_remover *r, struct spool *sp, spool_msg_cb done, void *owner);
void spool_msg_remove(struct spool_remover *r, const char *id, int fd, uint64_t size,
                      bool has_state);

#endif
