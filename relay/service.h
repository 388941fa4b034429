/* service: tells a supervisor how the relay stands (systemd's Type=notify):
 * READY=1 once the listeners are bound and the queue is loaded, RELOADING=1
 * then READY=1 around a reload, STOPPING=1 when it stops.  The protocol is
 * sd_notify(3)'s: one datagram to the AF_UNIX socket $NOTIFY_SOCKET names
 * (a path, or "@name" for an abstract one).  Without it, nothing happens;
 * no library is needed. */
#ifndef KRELAY_SERVICE_H
#define KRELAY_SERVICE_H

#include "log.h"

/* Sends "fmt..." (newline-separated assignments); returns 0, or -errno
 * (logged once; a supervisor that cannot be told is not fatal). */
int service_notify(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
