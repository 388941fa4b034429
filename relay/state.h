/* state: the one way an object's state changes.  Each kind of object
 * (session, client, message, destination, connection) has a table: the
 * names of its states and, for each, one bit per state it may enter.  A
 * transition the table does not list is a bug: logged, then stopped at
 * once (assert) rather than left to corrupt the object.  An allowed one is
 * traced at LogLevel 10 and up: "trace: KIND WHO OLD -> NEW". */
#ifndef KRELAY_STATE_H
#define KRELAY_STATE_H

#include <stdbool.h>

#include "log.h"

#define TO(s) (1u << (s))

struct state_table {
	const char *kind;          /* "message", "connection", ... */
	const char *const *names;  /* one per state */
	const unsigned *may_enter; /* one per state: TO(next) | ... */
	unsigned count;
};

bool state_may(const struct state_table *t, unsigned from, unsigned to);
/* Checks and traces from -> to; returns to.  who_fmt names the object
 * (formatted only when the line is written). */
unsigned state_enter(const struct state_table *t, unsigned from, unsigned to, const char *who_fmt,
                     ...) LOG_PRINTF(4, 5);

#endif
