/* log: one line per event, "key=value" pairs after a 16-hex-digit session
 * id, to stderr and optionally LogFile.  A line is written whole by one
 * write(2); a worker thread gathers its lines and writes them together once
 * per ring turn, before that turn's submissions reach the kernel (so a line
 * is out before the reply or delivery it reports goes anywhere). */
#ifndef KRELAY_LOG_H
#define KRELAY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Opens (appends to) path in addition to stderr; NULL closes it.
 * Returns 0 or -errno. */
int log_open(const char *path);
void log_stderr(int on);

/* Where the relay's lines go besides LogFile (log_choose, once at start):
 *  - stderr, as they are, when somebody reads it (a terminal, a pipe, a file);
 *  - the journal when stderr is the journal's stream ($JOURNAL_STREAM names
 *    it, as systemd sets it): each line gets its priority ("<6>", "<4>")
 *    and loses the time and pid, which the journal records itself;
 *  - syslog (facility mail, "krelay[pid]:") when stderr is /dev/null or
 *    closed, as a daemon started without systemd has it;
 *  - syslog, and not stderr, when LogFile=syslog or LogFile=syslog:SOCKET
 *    asks for it (the socket of a syslog daemon: /dev/log by default).
 * The text of a line is the same everywhere.  log_sink_name says which. */
#define LOG_SYSLOG_SOCKET "/dev/log"
void log_choose(const char *syslog_socket);
const char *log_sink_name(void);
/* Whether LogFile's value asks for syslog; *socket is its socket path. */
bool log_file_is_syslog(const char *log_file, const char **socket);

/* The calling thread gathers its lines from now on; log_flush writes them
 * (call it once per loop turn), log_buffer_stop flushes and goes back to
 * writing each line at once.  fatal() flushes first. */
void log_buffer_start(void);
void log_flush(void);
void log_buffer_stop(void);

/* "<time> krelay[pid]: <id> <event> <fmt...>" */
void log_event(uint64_t id, const char *fmt, ...) LOG_PRINTF(2, 3);
/* "<time> krelay[pid]: <fmt...>" for process-wide events. */
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);

/* LogLevel (Sendmail's option and numbers): at LOG_LEVEL_DEFAULT every
 * event above is logged; from LOG_LEVEL_TRACE up, each object's state
 * changes are traced too ("trace: <what> <id> <old> -> <new>").  Lower
 * levels log as the default does (kept for Sendmail configurations). */
#define LOG_LEVEL_DEFAULT 9
#define LOG_LEVEL_TRACE   10
void log_set_level(unsigned level);
bool log_tracing(void);
/* "<time> krelay[pid]: trace: <fmt...>", only when log_tracing(). */
void log_trace(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Append ": strerror(errno)" and exit(1). */
void fatal(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));

#endif
