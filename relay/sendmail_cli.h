/* sendmail_cli: Sendmail's command line, for the programs and admins that
 * call /usr/sbin/sendmail and mailq (cron, PHP's mail(), scripts):
 *
 *   krelay sendmail [-t] [-i] [-f addr] [-F name] [-oi] [-bm] [-bs] [-bp]
 *                   [-q] [-v] [-C file] [rcpt...]
 *   mailq            (krelay by that name: sendmail -bp)
 *   sendmail ...     (krelay by that name: krelay sendmail ...)
 *
 * A message is handed to the running relay over SMTP on its first plain
 * listener (loopback when it listens on a wildcard address), so it is in
 * the queue, durable, when the command exits 0, and nowhere when it does
 * not: a half message is never left.  Exit codes are sysexits.h's, as
 * Sendmail's: EX_TEMPFAIL (75) when the relay cannot take it now (not
 * running, 4xx), EX_DATAERR (65) when it refuses the message, EX_NOUSER (67)
 * when it refuses a recipient, EX_USAGE (64) for bad arguments. */
#ifndef KRELAY_SENDMAIL_CLI_H
#define KRELAY_SENDMAIL_CLI_H

/* The configuration the command reads without -C: the installed one when
 * it is there, else the built-in defaults. */
#define SENDMAIL_DEFAULT_CONF "/etc/krelay/krelay.conf"

/* argv[0] is the name it was called by ("sendmail", "mailq", or "krelay"
 * with argv[1] "sendmail" already taken off). */
int sendmail_cli(const char *name, int argc, char **argv);

#endif
