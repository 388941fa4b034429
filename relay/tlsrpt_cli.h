/* tlsrpt_cli: `krelay tlsrpt`: what TLSRPT=yes recorded, per day. */
#ifndef KRELAY_TLSRPT_CLI_H
#define KRELAY_TLSRPT_CLI_H

#include "config.h"

/* argv after "tlsrpt" and -C FILE: "--show [DATE]", "--report [DATE]
 * [DOMAIN]" (DATE YYYY-MM-DD, UTC; today by default), or "--send [DATE]
 * [DOMAIN]" (yesterday by default): each domain's report to the rua
 * addresses of its _smtp._tls record.  Exit status. */
int tlsrpt_cli(const struct config *c, int argc, char **argv);

#endif
