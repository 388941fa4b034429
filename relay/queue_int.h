/* queue_int: the queue's objects, shared by its files and by nobody else.
 *
 *   struct queue   one per worker: its messages, destinations, connections
 *   struct qmsg    a message (queue.c): its envelope with each recipient's
 *                  durable state, and one phase (enum qmsg_phase)
 *   struct qjob    a message's recipients for one destination (Postfix's
 *                  queue entry): made by routing, finished by a connection
 *   struct qdest   a next hop (queue_dest.c): a FIFO of jobs, its addresses
 *                  (enum qdest_addrs), what it remembers of TLS, its
 *                  connections; found by name in a hash, freed when unused
 *   struct qconn   a connection out (queue_conn.c), enum qconn_state
 *   struct qshaping  a destination's traffic shaping (queue_shaping.c): its
 *                  site, limits per egress source, the wait it is in
 *
 * and beside them bounce.c (a DSN for failed recipients),
 * queue_interactive.c (DeliveryMode=interactive), queue_admin.c (what the
 * operator asks: flush, release, hold, delete, queueonly) and the pure
 * rules in queue_policy.c.  Each state changes only through its enter
 * function, which checks the transition and traces it (LogLevel 10+). */
#ifndef KRELAY_QUEUE_INT_H
#define KRELAY_QUEUE_INT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "dane.h"
#include "dns.h"
#include "queue.h"
#include "queue_policy.h"
#include "ring.h"
#include "route.h"
#include "runtime.h"
#include "shaping.h"
#include "smtp_client.h"
#include "spool.h"
#include "spool_msg.h"
#include "state.h"
#include "sts.h"
#include "throttle.h"
#include "throttle_redis.h"
#include "tlsrpt.h"
#include "wheel.h"

#define ADDR_LOG_MAX   256 /* octets of an address a log line shows (RFC 5321 path) */
#define QDEST_TLS_KEEP 64  /* destinations' TLS memory kept after they are freed */

struct qdest;
struct qconn;

/* ---- messages ---------------------------------------------------------- */

/* Where a message is in its life; one at a time, changed only by
 * qmsg_enter().  What is not a phase: jobs (out at destinations), the
 * state writer (busy while outcomes are made durable, in QMSG_ACTIVE), the
 * interactive state (its client waiting) and admin (an operator's
 * request, carried out between attempts). */
enum qmsg_phase {
	QMSG_NEW,        /* made, not yet started */
	QMSG_OPENING,    /* its file being opened (or a NOP: open already) */
	QMSG_ACTIVE,     /* routed: jobs at destinations, outcomes recorded */
	QMSG_BOUNCING,   /* F recipients: a bounce being spooled */
	QMSG_RETRY_SAVE, /* attempts, next attempt, last error being written */
	QMSG_RETRY_WAIT, /* the retry timer is armed */
	QMSG_REMOVING,   /* every recipient final: its files being removed */
	QMSG_STOPPED,    /* the queue stopped: it stays in the spool */
	QMSG_PHASES
};

/* DeliveryMode=interactive: a message not yet durable whose client waits. */
enum qmsg_interactive {
	QI_NONE,
	QI_WAITING,    /* being relayed before the client's reply */
	QI_COMMITTING, /* the owner is making it durable; outcomes wait */
	QI_ORPHANED,   /* that failed: outcomes are only logged */
	QI_STATES
};

/* What `krelay queue hold|delete` asked of a message the relay holds: done
 * once no attempt of it is under way (queue_admin_apply). */
enum qmsg_admin { ADMIN_NONE, ADMIN_HOLD, ADMIN_DELETE };

struct qmsg {
	struct queue *q;
	struct spool_env env; /* with each recipient's P/D/F/B state */
	char **reply;         /* last reply per recipient, this attempt */
	char (*dsn)[16];      /* enhanced status per recipient, for bounces */
	unsigned attempts;
	int fd;                   /* its file while an attempt is under way, else -1 */
	uint64_t file_size;       /* of queue/ID, or SPOOL_SIZE_UNKNOWN */
	uint64_t body_off;        /* the body's offset in fd (0 but in a segment) */
	struct spool_seg *fd_seg; /* fd is this segment's (a reference), not a file */
	/* Committed into a segment and not yet out of it (spool_seg.h): it
	 * leaves with a SEG_DONE record, as its removal, or once it was
	 * written to queue/ID (migrate), which its first deferral does. */
	bool in_seg, migrating, migrate_failed;
	struct seg_append seg_app;
	char *mbuf; /* the queue file being written from the segment */
	struct ring_op op_mread;
	enum qmsg_phase phase;
	unsigned jobs;      /* jobs not finished in this attempt */
	bool dirty;         /* outcomes not yet written */
	bool bounce_failed; /* retried with the next attempt */
	bool has_state;     /* queue/ID.env may exist (written, or found at start) */
	enum qmsg_admin admin;
	struct qjob *logq;         /* finished jobs whose outcomes await durability */
	struct qjob *logq_writing; /* ... those the write in flight records */
	struct ring_op op_open, op_timer, op_timer_rm;
	struct __kernel_timespec ts;
	struct spool_state_writer st; /* queue/ID.env */
	struct spool_remover rm;      /* the message's removal */
	/* DeliveryMode=interactive */
	enum qmsg_interactive interactive;
	queue_interactive_cb icb;
	void *iowner;
	time_t ideadline;
	struct qmsg *prev, *next;
};

void qmsg_enter(struct qmsg *m, enum qmsg_phase to);
/* Opens its file and routes it (a new attempt). */
void qmsg_start(struct qmsg *m);
struct qmsg *qmsg_add(struct queue *q, const struct spool_env *env, int fd, uint64_t file_size);
struct qmsg *qmsg_add_loc(struct queue *q, const struct spool_env *env,
                          const struct spool_loc *loc);
void qmsg_free(struct qmsg *m);
/* Lets go of its open file (or its segment's fd). */
void qmsg_close_fd(struct qmsg *m);
/* Outcomes are being made durable: by the state writer, or by the removal. */
bool qmsg_recording(const struct qmsg *m);
/* Makes the outcomes waiting in m->logq durable, then logs them. */
void qmsg_record_outcomes(struct qmsg *m);
/* No job out and nothing being recorded: bounce, remove, expire or retry. */
void qmsg_attempt_over(struct qmsg *m);
/* A bounce for its F recipients ended (queued: it is in the queue now). */
void qmsg_bounce_done(struct qmsg *m, bool queued);
bool qmsg_all_delivered(const struct qmsg *m);
/* Reroutes (a reload): puts its pending recipients of j into new jobs. */
void qmsg_reroute(struct qjob *j);
const struct config *queue_cfg(const struct queue *q);

/* ---- jobs -------------------------------------------------------------- */

/* What the delivery line says of the connection a job went on; copied
 * when the job is handed to it (the connection may be gone when the line
 * is written). */
struct delivery_facts {
	char relay[DNS_NAME_MAX + 80], tls[128], ktls_why[96];
	bool verified, resumed, ktls_tx;
	const char *auth; /* smtp_client_auth: a static string */
};

struct qjob {
	struct qmsg *m;
	struct qdest *d;
	size_t *idx; /* recipients (indexes into m->env.rcpts) */
	size_t n;
	struct smtp_tx tx;
	struct smtp_tx_rcpt *rcpts;
	struct delivery_facts facts;
	struct qjob *next;
};

/* A job's transaction is over: its outcomes join its message's (2xx D,
 * 5xx F, else P), to be made durable and then logged. */
void qjob_finished(struct qjob *j);
/* Fails every recipient of j without a reply yet with text. */
void qjob_fail(struct qjob *j, int code, const char *text);
/* A job dropped before it went anywhere (the queue stops, a reload). */
void qjob_drop(struct qjob *j);
/* Logs a finished job, one line per recipient, and frees it. */
void qjob_log(struct qjob *j);

/* ---- destinations ------------------------------------------------------ */

/* Why a destination cannot be reached now; set when resolution fails. */
struct qdest_failure {
	bool permanent; /* NXDOMAIN, null MX, no address, bad literal: 5.1.2 */
	char why[384];
};

/* What a destination remembers of TLS with its peer (kept QDEST_TLS_KEEP
 * at most once destinations are freed): two independent downgrades and a
 * session to resume. */
struct qdest_tls {
	char name[DNS_NAME_MAX + 16];
	SSL_SESSION *session;
	bool clear_next; /* policy "may": last handshake failed, next try in clear */
	bool no_ktls;    /* the peer sent a KeyUpdate on a kTLS connection */
};

struct qdest {
	struct queue *q;
	char name[DNS_NAME_MAX + 16]; /* route_hop_text of hop */
	uint32_t hash;
	struct route_hop hop;
	struct qjob *head, *tail;
	unsigned active; /* connections open or opening */
	unsigned jobs;   /* jobs naming it: queued, out, or waiting to be logged */
	struct qconn *idle;
	struct qdest_tls tls;
	enum qdest_addrs addrs;
	time_t resolved_at; /* when the last lookup ended (0: never) */
	struct qdest_failure failure;
	struct dns_addr addr[DNS_ADDR_MAX];
	size_t naddr;
	unsigned char addr_mx[DNS_ADDR_MAX]; /* the MX host each address is of */
	struct dns_mx mx[DNS_MX_MAX];
	size_t nmx, mx_next;
	/* DANE (RFC 7672), when the lookup was made for TLSPolicy dane or
	 * dane-only: each host's verdict and records, by MX index (0 for a
	 * host hop) */
	bool dane;
	bool mx_secure;
	struct dns *dnsr; /* the resolver of the lookup under way */
	size_t addr_mark; /* naddr before the host being looked at */
	struct qdest_dane_host {
		enum dane_verdict v;
		struct dane_tlsa_set *tlsa; /* DANE_AUTH's records */
	} dane_host[DNS_MX_MAX];
	char dane_why[320]; /* why the last host was left out (safe for logs) */
	/* MTA-STS (RFC 8461): MTASTS=yes and TLSPolicy may or dane, MX routing */
	bool sts_want;    /* this lookup asks for the domain's policy */
	bool sts_enforce; /* an enforce policy is in force: TLS, PKIX, matching MX */
	bool sts_have;    /* a policy (testing or enforce) came with the last lookup */
	bool sts_testing; /* ... in mode testing: checked, reported, not enforced */
	char sts_id[STS_ID_MAX + 1];
	struct qshaping *shape;    /* ShapingTable: made at the first kick that needs it */
	time_t unused_since;       /* seen with nothing to do (0: in use) */
	struct qdest *hnext;       /* hash chain */
	struct qdest *prev, *next; /* q->dests */
};

/* The destination for hop, made (empty) when there is none. */
struct qdest *qdest_get(struct queue *q, const struct route_hop *hop);
void qdest_push(struct qdest *d, struct qjob *j);
struct qjob *qdest_pop(struct qdest *d);
/* Gives queued jobs to idle connections, opens new ones up to the
 * worker's share, or looks the addresses up first. */
void qdest_kick(struct qdest *d);
void qdest_kick_all(struct queue *q);
/* TLSPolicyTable entry for the next hop's name, else TLSPolicy. */
int qdest_policy(const struct qdest *d);
/* The policy a connection to address addr_idx goes with: qdest_policy,
 * or for DANE what its host's records made of it (may, encrypt, or dane
 * with *tlsa the records to authenticate the peer by). */
int qdest_conn_policy(const struct qdest *d, size_t addr_idx, const struct dane_tlsa_set **tlsa,
                      bool *sts);
/* TLSRPT=yes: records a TLS result toward d's domain (RFC 8460), when it
 * is a recipient domain routed by MX: of connection c to address addr_idx
 * (c NULL and addr_idx SIZE_MAX: of a lookup, no host), with the policy
 * type that applied to that host. */
void qdest_tlsrpt(const struct qdest *d, size_t addr_idx, enum tlsrpt_result r,
                  const struct smtp_client *c);
/* The host name address addr_idx was found for (the MX host, when routing
 * by MX): what TLS verifies and names in SNI. */
const char *qdest_host_of(const struct qdest *d, size_t addr_idx);
/* The reload's clean slate: TLS memory (kept and cached) goes. */
void qdest_forget_tls(struct queue *q);
/* Frees destinations unused for QDEST_UNUSED_KEEP_S (at most once a minute). */
void qdest_sweep(struct queue *q, time_t now);
void qdest_free_all(struct queue *q);

/* ---- traffic shaping (queue_shaping.c) ---------------------------------- */

/* What a connection was allowed to open with: its egress source and the
 * counters of source x site (a reference, with the connection counted in
 * it while the connection lives). */
struct qshaping_pick {
	int source; /* index of the table's source (the runtime's), -1: none */
	bool slot;  /* its connection slot came from the cluster's store */
	struct throttle_entry *e;
	struct shaping_limits lim; /* its reply rules point into the runtime's table */
};

struct qshaping {
	struct runtime *rt; /* whose table the limits were made from (a reference) */
	time_t resolved_at; /* after which lookup (the MX hosts make the site) */
	char site[SHAPING_SITE_MAX];
	struct shaping_limits base; /* the rules for any source: the pool */
	unsigned nsrc;              /* the pool's sources, or 1 (no pool: source -1) */
	struct qshaping_src {
		int source;
		struct shaping_limits lim;
		struct throttle_entry *e;
	} src[SHAPING_POOL_MAX];
	int wrr[SHAPING_POOL_MAX]; /* the pool's weighted round robin */
	struct wheel_timer timer;  /* wakes the destination when a wait is over */
	enum throttle_why waiting; /* the last wait (traced when it changes) */
};

/* Shaping applies to d (a ShapingTable is loaded): its limits are made or
 * made again (a reload, a new lookup).  False: none, as before. */
bool qshaping_on(struct qdest *d);
/* A new connection for d's next job: true with *pick filled (the
 * connection counted) when a source of its pool may open one now; else
 * false, with d's timer armed for when to look again. */
bool qshaping_open(struct qdest *d, struct qshaping_pick *pick);
/* The next message on connection cn may go now; else false, with its
 * destination's timer armed. */
bool qshaping_message(struct qconn *cn);
/* A reply of the peer (a recipient's, or a refused greeting) against
 * the reply rules: a suspension or a lowered rate, logged. */
void qshaping_reply(struct qconn *cn, const char *reply);
/* The same for the recipients' replies of a transaction (the first that
 * a rule matches). */
void qshaping_tx(struct qconn *cn, const struct smtp_tx *tx);
/* The same connection's job moves on to the next address: *pick is a
 * copy of cn's, counted again; false when shaping does not allow that
 * (cn was not shaped, or a reload came since). */
bool qshaping_again(struct qconn *cn, struct qshaping_pick *pick);
/* The connection ends: it is no longer counted. */
void qshaping_conn_end(struct qconn *cn);
void qshaping_free(struct qdest *d);

/* ---- connections ------------------------------------------------------- */

enum qconn_state {
	QCONN_CONNECTING, /* opening (connect, banner, EHLO, STARTTLS) */
	QCONN_SENDING,    /* a job's transaction under way */
	QCONN_IDLE,       /* open, in its destination's idle list */
	QCONN_QUITTING,   /* QUIT said, or failed: closed follows */
	QCONN_CLOSED,     /* the client is gone; the idle timer still out */
	QCONN_STATES
};

struct qconn {
	struct queue *q;
	struct qdest *d; /* not to be used once closed (it may be freed) */
	unsigned seq;    /* for traces: DEST#SEQ */
	int tls_policy;  /* what it was opened with (qdest_conn_policy) */
	bool sts;        /* ... because of an MTA-STS policy */
	bool sts_check;  /* MTA-STS testing: the peer checked, not required */
	bool shaped;     /* opened through qshaping_open: pick holds */
	struct qshaping_pick pick;
	struct qconn *prev_all, *next_all; /* q->conn_all */
	struct runtime *rt;                /* the configuration it was opened with */
	struct smtp_client *c;
	struct qjob *job;
	size_t addr_idx;
	unsigned messages;
	enum qconn_state state;
	/* inside smtp_client_send: no callback of the client may come now
	 * (asserted; it would nest a job inside the handing over of another) */
	bool in_send;
	struct ring_op op_idle, op_idle_rm;
	struct __kernel_timespec idle_ts;
	struct timespec idle_since; /* CLOCK_MONOTONIC, when it last went idle */
	struct qconn *next_idle;
};

/* Opens a connection to d's address addr_idx for job; pick: what shaping
 * allowed it (taken over), or NULL. */
void qconn_start(struct qdest *d, size_t addr_idx, struct qjob *job,
                 const struct qshaping_pick *pick);
void qconn_send(struct qconn *cn, struct qjob *j);
/* Takes cn out of its destination's idle list (for a job). */
struct qconn *qconn_take_idle(struct qdest *d);
/* Takes this idle connection out of the list. */
void qconn_unidle(struct qconn *cn);
/* The idle connections of d say QUIT. */
void qconn_quit_idle(struct qdest *d);
/* krelay stops: connections not yet sending a body end now. */
void qconn_stop_all(struct queue *q);

/* ---- the queue --------------------------------------------------------- */

struct queue {
	struct queue_ctx ctx;
	time_t nofile_logged;  /* the last "out of descriptors" warning */
	unsigned fds, fds_max; /* messages' own open files, and the most of them */
	struct runtime *rt;    /* the configuration new connections take */
	unsigned rt_gen;       /* srv->generation it was taken at */
	struct dns *dns;
	struct dns *dnssec;   /* validating resolver: made when a DANE destination first needs it */
	struct sts *sts;      /* MTA-STS policies, made when a destination first needs one */
	struct tredis *store; /* ThrottleStore: this worker's client of the cluster's store */
	bool stopping;
	unsigned dns_pending; /* queries whose callback has not run yet */
	/* calls of an interactive message's owner under way: the callback
	 * asserts that none is, so no owner is called back from inside its
	 * own call */
	unsigned api_depth;
	/* DeliveryMode=queueonly: durable messages waiting for a queue run */
	char (*parked)[SPOOL_ID_LEN + 1];
	size_t nparked, parked_cap;
	struct qmsg *msgs;
	struct qconn *conn_all; /* every connection out, for queue_stop */
	unsigned conns, conn_seq;
	/* destinations: all, and by name */
	struct qdest *dests;
	struct qdest **dest_hash;
	size_t ndests, dest_buckets;
	time_t dest_swept;
	struct qdest_tls tls_kept[QDEST_TLS_KEEP]; /* of freed destinations */
	unsigned tls_kept_next;
	struct queue_stats stats;
	unsigned waiting; /* interactive messages in QI_WAITING */
	struct ring_op op_itick;
	struct __kernel_timespec itick_ts;
};

/* The reload (SIGHUP) reaches the queue: new connections take it. */
void queue_follow_reload(struct queue *q);

/* queue_interactive.c */
void queue_interactive_tick(struct ring_op *op, int res, unsigned flags); /* op_itick */
void qi_enter(struct qmsg *m, enum qmsg_interactive to);
/* A job of an interactive message finished (its outcome is in logq). */
void qi_progress(struct qmsg *m);
/* The message's owner is asked to make it durable now. */
void qi_ask_commit(struct qmsg *m);
/* Logs the finished jobs of a message that leaves without a trace in the
 * spool (relayed before its reply, or never made durable) and frees it. */
void qi_leave(struct qmsg *m);

/* bounce.c: queues one bounce for every F recipient of m (its sender is
 * not <>); qmsg_bounce_done follows. */
void bounce_start(struct qmsg *m);

/* queue_admin.c: what the operator asked of m is done now (no attempt of
 * it under way); m is freed. */
void queue_admin_apply(struct qmsg *m);
/* A `krelay queue delete` of a message still in its segment is done. */
void queue_admin_deleted(struct qmsg *m);

#endif
