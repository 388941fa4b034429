/* probe: fills struct caps from uname, io_uring_get_probe, a loopback TCP
 * pair with the tls ULP, and OpenSSL's build flags. */
#include "probe.h"

#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/opensslconf.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static bool kernel_at_least(const char *release, int major, int minor)
{
	int ma = 0, mi = 0;

	if (sscanf(release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

static void probe_uring(struct caps *c)
{
	struct io_uring ring;
	struct io_uring_probe *p;
	int ret = io_uring_queue_init(4, &ring, 0);

	if (ret < 0) {
		snprintf(c->uring_error, sizeof(c->uring_error), "io_uring_queue_init: %s",
		         strerror(-ret));
		return;
	}
	c->uring = true;
	p = io_uring_get_probe_ring(&ring);
	if (p != NULL) {
		c->op_send_zc = io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
		c->op_splice = io_uring_opcode_supported(p, IORING_OP_SPLICE);
		c->op_openat = io_uring_opcode_supported(p, IORING_OP_OPENAT);
		c->op_renameat = io_uring_opcode_supported(p, IORING_OP_RENAMEAT);
		io_uring_free_probe(p);
	}
	io_uring_queue_exit(&ring);
	c->accept_multishot = kernel_at_least(c->kernel_release, 5, 19);
	c->recv_multishot = kernel_at_least(c->kernel_release, 6, 0);
}

/* The ULP can only be set on an ESTABLISHED socket, so build a pair. */
static void probe_tls_ulp(struct caps *c)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int lfd = -1, cfd = -1, afd = -1;
	const char *step = "socket";

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || cfd < 0)
		goto fail;
	step = "listen";
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
		goto fail;
	step = "connect";
	if (connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	afd = accept(lfd, NULL, NULL);
	if (afd < 0)
		goto fail;
	if (setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0) {
		c->tls_ulp = true;
	} else if (errno == ENOENT) {
		snprintf(c->tls_ulp_error, sizeof(c->tls_ulp_error),
		         "kernel has no tls module (TCP_ULP tls: ENOENT)");
	} else {
		snprintf(c->tls_ulp_error, sizeof(c->tls_ulp_error), "TCP_ULP tls: %s",
		         strerror(errno));
	}
	goto out;
fail:
	snprintf(c->tls_ulp_error, sizeof(c->tls_ulp_error), "probe %s: %s", step, strerror(errno));
out:
	if (afd >= 0)
		close(afd);
	if (cfd >= 0)
		close(cfd);
	if (lfd >= 0)
		close(lfd);
}

void probe_run(struct caps *c)
{
	struct utsname u;

	memset(c, 0, sizeof(*c));
	if (uname(&u) == 0)
		snprintf(c->kernel_release, sizeof(c->kernel_release), "%s", u.release);
	probe_uring(c);
	probe_tls_ulp(c);
	snprintf(c->openssl_version, sizeof(c->openssl_version), "%s",
	         OpenSSL_version(OPENSSL_VERSION));
#ifndef OPENSSL_NO_KTLS
	c->openssl_ktls = true;
#endif
}

bool probe_ktls_possible(const struct caps *c, const char **why)
{
	if (!c->openssl_ktls) {
		*why = "OpenSSL was built without kTLS";
		return false;
	}
	if (!c->tls_ulp) {
		*why = c->tls_ulp_error[0] ? c->tls_ulp_error : "kernel tls ULP unavailable";
		return false;
	}
	*why = "";
	return true;
}
