/* probe: what this kernel and this OpenSSL can offload, found once at start. */
#ifndef KRELAY_PROBE_H
#define KRELAY_PROBE_H

#include <stdbool.h>

struct caps {
	char kernel_release[65];
	bool uring;           /* io_uring usable at all */
	char uring_error[96]; /* why not */
	bool op_send_zc;
	bool op_splice;
	bool op_openat;
	bool op_renameat;
	bool accept_multishot;  /* kernel >= 5.19 */
	bool recv_multishot;    /* kernel >= 6.0 */
	bool tls_ulp;           /* setsockopt(TCP_ULP, "tls") worked on loopback */
	char tls_ulp_error[96]; /* why not: "kernel has no tls module (ENOENT)" */
	char openssl_version[96];
	bool openssl_ktls; /* OpenSSL built with kTLS support */
};

/* Fills c.  Safe to call once per process before workers start. */
void probe_run(struct caps *c);

/* True when kTLS can be used at all: OpenSSL has it and the kernel has the
 * tls ULP.  *why explains the first missing piece. */
bool probe_ktls_possible(const struct caps *c, const char **why);

#endif
