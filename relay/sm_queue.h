/* sm_queue: takes messages that Sendmail queued (qf/df pairs in a mqueue
 * directory) into krelay's spool, for `SendmailQueue=` (the relay's
 * Sendmail queue runner, a process of its own) and `krelay queue
 * import-sendmail DIR` (once, for a migration).  Blocking file I/O.
 *
 * Each qf is locked as Sendmail locks it (flock, which Debian's build uses,
 * and an fcntl lock, which other builds use), without waiting: a locked
 * file is Sendmail's (being written, or being delivered by `sendmail -q`)
 * or another runner's, and is skipped.  After the lock, the name is looked
 * up again and must still be the file that was locked (Sendmail renames
 * a tf over a qf when it requeues).
 *
 * Taking responsibility, in an order that every crash leaves decidable:
 *   1. write the krelay message (headers, CRLF body, envelope) to
 *      QueueDirectory/import/MQ.SMID, fdatasync it and the directory;
 *   2. rename mqueue/qfSMID -> mqueue/kfSMID.KQ (Sendmail's runners only
 *      look at qf names: from here the message is krelay's), fsync mqueue;
 *   3. rename import/MQ.SMID -> queue/ID (never over an existing name),
 *      fsync queue/, and leave request/take.ID for the running relay;
 *   4. unlink kfSMID.KQ and dfSMID.
 * MQ and KQ are hashes of the two directories' paths, so several mqueues
 * and several krelays never take each other's markers.  Recovery, before
 * each pass: import/MQ.SMID with kfSMID.KQ -> step 3 again; import/MQ.SMID
 * without it -> removed (step 2 never happened: the qf is still
 * Sendmail's); kfSMID.KQ without import/MQ.SMID -> step 4 (step 3 had
 * happened).  So a message is in exactly one of the two queues, and a
 * recipient krelay logs as sent is not sent again by Sendmail.
 *
 * A file that cannot be parsed, or whose df is missing, is left in place,
 * logged once per process (by name and inode), and counted. */
#ifndef KRELAY_SM_QUEUE_H
#define KRELAY_SM_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct smq_seen; /* the bad files already reported */

struct smq {
	const char *queue_dir; /* krelay's QueueDirectory */
	const char *hostname;  /* $j */
	/* files made in the queue directory are given to its owner (a root
	 * process importing for the relay's user) */
	bool chown_to_owner;
	uid_t owner_uid;
	gid_t owner_gid;
	bool wait_lock;    /* wait for another importer's pass (else skip this one) */
	bool stop_on_term; /* end a pass early once SIGTERM/SIGINT is pending */
	struct smq_seen *seen;
	size_t nseen, seen_cap;
};

struct smq_stats {
	unsigned taken;     /* moved into krelay's queue this pass */
	unsigned recovered; /* handovers a crash had cut short, finished */
	unsigned locked;    /* skipped: locked by somebody else */
	unsigned bad;       /* left in place: cannot be parsed, df missing */
	unsigned failed;    /* left in place: an I/O error here (tried again) */
	unsigned waiting;   /* qf files left in the directory after the pass */
	bool busy;          /* another importer was at work: nothing done */
};

/* 0 or -1 with err (the queue directory cannot be used at all: the pass
 * did nothing).  Set up q with smq_init. */
int smq_init(struct smq *q, const char *queue_dir, const char *hostname, char *err, size_t errlen);
void smq_free(struct smq *q);

/* One pass over one Sendmail queue directory (the qf/ and df/
 * subdirectories when it has them).  Returns 0, or -1 with err when the
 * directory cannot be read. */
int smq_run(struct smq *q, const char *mqueue, struct smq_stats *st, char *err, size_t errlen);

/* For `krelay queue list`: what a pass would find, without taking
 * anything: each qf's state on out ("ok", "locked" or the reason it cannot
 * be taken).  Returns the number of qf files, or -1 with err. */
struct smq_look {
	unsigned files, ok, locked, bad;
};
int smq_look(const char *mqueue, const char *hostname, bool list, struct smq_look *lk, char *err,
             size_t errlen);

/* The Sendmail queue runner of a relay (SendmailQueue=): a process forked
 * before the relay drops its privileges.  It becomes the relay's user,
 * keeping only CAP_DAC_OVERRIDE (Sendmail's files are root's, mode 0600)
 * when it had it, and every interval_s seconds, or on SIGUSR1, runs a pass
 * over each directory; after a pass that took messages it sends SIGUSR2 to
 * the relay (parent), which takes them in from request/take.ID.  It ends
 * with the relay (SIGTERM, or the parent's death).  Returns its pid, or -1
 * with err. */
struct runas;
pid_t smq_runner_start(char *const *mqueues, size_t n, const char *queue_dir, const char *hostname,
                       unsigned interval_s, const struct runas *ra, char *err, size_t errlen);

#endif
