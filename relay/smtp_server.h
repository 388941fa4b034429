/* smtp_server: the inbound SMTP session (RFC 5321, 3207, 2920, 3030, 6531).
 * One explicit state machine; commands come from a table; every transition
 * goes through enter_state(), which can trace "old -> new". */
#ifndef KRELAY_SMTP_SERVER_H
#define KRELAY_SMTP_SERVER_H

#include <stdbool.h>
#include <sys/socket.h>

struct worker;
struct smtp_session;

/* Takes over fd (accepted, non-blocking). */
void smtp_session_start(struct worker *w, int fd, bool smtps, const char *listener);

/* Graceful stop: idle sessions get 421 now; a message being received is
 * dropped (the client still has it); one being committed finishes first. */
void smtp_session_shutdown(struct smtp_session *s);

struct smtp_session *smtp_session_next(struct smtp_session *s);

#endif
