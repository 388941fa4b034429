/* check: `krelay check`: what this machine can offload, and whether the
 * configuration would start.  Also used at start-up. */
#ifndef KRELAY_CHECK_H
#define KRELAY_CHECK_H

#include <stdio.h>

#include "config.h"
#include "probe.h"

void check_print_caps(const struct caps *c, FILE *out);

/* Checks what config_load cannot: files, keys, directories, listeners that
 * need a certificate.  Prints findings; returns the number of errors. */
int check_config(const struct config *c, FILE *out);
/* `krelay check` only (it asks the network): with TLSPolicy dane or
 * dane-only, whether the resolver's answers validate from the trust
 * anchor.  Returns the number of errors. */
/* ThrottleStore: whether the store answers (a warning when not: the
 * relay runs on its own limits then).  Returns 0. */
int check_throttle_store(const struct config *c, FILE *out);
int check_dnssec(const struct config *c, FILE *out);

#endif
