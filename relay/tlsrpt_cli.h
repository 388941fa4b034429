/* tlsrpt_cli: `krelay tlsrpt`: what TLSRPT=yes recorded, per day. */
#ifndef KRELAY_TLSRPT_CLI_H
#define KRELAY_TLSRPT_CLI_H

#include "config.h"

/* argv after "tlsrpt" and -C FILE: "--show [DATE]" or "--report [DATE]
 * [DOMAIN]" (DATE YYYY-MM-DD, UTC; today by default).  Exit status. */
int tlsrpt_cli(const struct config *c, int argc, char **argv);

#endif
