/* metrics_srv: MetricsListen's HTTP endpoint, served on one worker's ring
 * (worker 0's): accept, recv, send and close are ring operations, the
 * deadline a timer on the ring's wheel; no thread, no blocking call.  One
 * fixed path, GET or HEAD /metrics, answered with metrics_render's text;
 * any other request gets 404, 405 or 400 (metrics_http.c parses), and the
 * connection is closed after each answer.
 *
 * Bounds: a request head of METRICS_HTTP_MAX bytes; METRICS_SRV_TIMEOUT_S
 * to send it and as much to read the answer, then 2 s (and 64 KiB) for
 * what the client still sends before it closes (a close with unread bytes
 * would reset the connection and could lose the answer); METRICS_SRV_CONNS
 * connections at a time: one more closes the oldest still sending its
 * request or done with its answer (one whose answer is being sent is never
 * cut off), so clients that connect and say nothing cannot keep a scrape
 * out. */
#ifndef KRELAY_METRICS_SRV_H
#define KRELAY_METRICS_SRV_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "metrics.h"
#include "ring.h"

#define METRICS_SRV_CONNS     16
#define METRICS_SRV_TIMEOUT_S 10

struct metrics_srv;

/* Binds and listens on l (before the relay drops its privileges).
 * Returns NULL with err set. */
struct metrics_srv *metrics_srv_new(struct ring *ring, struct metrics *m,
                                    const struct config_listen *l, char *err, size_t errlen);
/* Starts accepting (from the thread that owns the ring). */
void metrics_srv_start(struct metrics_srv *ms);
/* Stops accepting and ends the connections; metrics_srv_idle() then
 * tells when nothing is in flight any more. */
void metrics_srv_stop(struct metrics_srv *ms);
bool metrics_srv_idle(const struct metrics_srv *ms);
void metrics_srv_free(struct metrics_srv *ms);

#endif
