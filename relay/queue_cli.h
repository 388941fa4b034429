/* queue_cli: `krelay queue -C FILE list|flush|delete ID|hold ID|release ID`.
 * Works on the spool directly, also while the relay runs: hold moves a
 * message to QueueDirectory/hold/, release moves it back, and flush (and
 * release) signal the running relay (SIGUSR1, pid in QueueDirectory/krelay.pid)
 * to retry now and pick up released messages. */
#ifndef KRELAY_QUEUE_CLI_H
#define KRELAY_QUEUE_CLI_H

#include "config.h"

int queue_cli(const struct config *c, int argc, char **argv);
/* `mailq` / `sendmail -bp`: the queue in Sendmail's layout. */
int queue_cli_mailq(const struct config *c);
/* `sendmail -q`: asks the running relay for a queue run. */
int queue_cli_flush(const struct config *c);

#endif
