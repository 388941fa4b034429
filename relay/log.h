/* log: one line per event, "key=value" pairs after a 16-hex-digit session
 * id, to stderr and optionally LogFile.  Each line is one write(2). */
#ifndef KRELAY_LOG_H
#define KRELAY_LOG_H

#include <stdarg.h>
#include <stdint.h>

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Opens (appends to) path in addition to stderr; NULL closes it.
 * Returns 0 or -errno. */
int log_open(const char *path);
void log_stderr(int on);

/* "<time> krelay[pid]: <id> <event> <fmt...>" */
void log_event(uint64_t id, const char *fmt, ...) LOG_PRINTF(2, 3);
/* "<time> krelay[pid]: <fmt...>" for process-wide events. */
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Append ": strerror(errno)" and exit(1). */
void fatal(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));

#endif
