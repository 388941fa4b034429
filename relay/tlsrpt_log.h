/* tlsrpt_log: where TLSRPT=yes puts each TLS result toward a recipient
 * domain: one line (tlsrpt.h's format) appended to DIR/YYYY-MM-DD (UTC),
 * the file of the day the event happened, shared by every worker (a lock
 * around one write(2), as the log's own lines are written). */
#ifndef KRELAY_TLSRPT_LOG_H
#define KRELAY_TLSRPT_LOG_H

#include "tlsrpt.h"

struct tlsrpt_log;

/* dir: made at the first record (QueueDirectory/tlsrpt).  NULL when out
 * of memory. */
struct tlsrpt_log *tlsrpt_log_open(const char *dir);
void tlsrpt_log_record(struct tlsrpt_log *l, const struct tlsrpt_event *e);
void tlsrpt_log_close(struct tlsrpt_log *l);

#endif
