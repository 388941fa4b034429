/* smtp_server: the inbound SMTP session (RFC 5321, 3207, 2920, 3030, 6531).
 * One explicit state machine; commands come from a table; every transition
 * goes through enter_state(), which can trace "old -> new". */
#ifndef KRELAY_SMTP_SERVER_H
#define KRELAY_SMTP_SERVER_H

#include <stdbool.h>
#include <sys/socket.h>

struct ring;
struct spool;
struct server;
struct queue;
struct smtp_session;
struct metrics_worker;

/* One worker's inbound side: what its sessions use, and the sessions. */
struct smtp_server {
	struct ring *ring;
	struct spool *spool;
	struct server *srv;
	struct queue *queue;           /* NULL until the worker thread made it */
	struct metrics_worker *mw;     /* the worker's counters (metrics.h) */
	struct smtp_session *sessions; /* all live sessions, for shutdown */
	unsigned nsessions;
};

/* Takes over fd (accepted, non-blocking). */
void smtp_session_start(struct smtp_server *sv, int fd, bool smtps, const char *listener);

/* Graceful stop of every session: idle ones get 421 now; a message being
 * received is dropped (the client still has it); one being committed
 * finishes first. */
void smtp_server_shutdown(struct smtp_server *sv);

#endif
