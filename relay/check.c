/* check: see check.h. */
#include "check.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls_ctx.h"

static const char *yn(bool b)
{
	return b ? "yes" : "no";
}

void check_print_caps(const struct caps *c, FILE *out)
{
	const char *why;
	bool ktls = probe_ktls_possible(c, &why);

	fprintf(out, "kernel     %s\n", c->kernel_release);
	fprintf(out, "io_uring   %s%s%s\n", yn(c->uring), c->uring ? "" : ": ", c->uring_error);
	fprintf(out, "  ops      send_zc=%s splice=%s openat=%s renameat=%s\n", yn(c->op_send_zc),
	        yn(c->op_splice), yn(c->op_openat), yn(c->op_renameat));
	fprintf(out, "  multishot accept=%s recv=%s\n", yn(c->accept_multishot),
	        yn(c->recv_multishot));
	fprintf(out, "openssl    %s (kTLS %s)\n", c->openssl_version,
	        c->openssl_ktls ? "built in" : "not built in");
	fprintf(out, "tls ulp    %s%s%s\n", yn(c->tls_ulp), c->tls_ulp ? "" : ": ",
	        c->tls_ulp_error);
	fprintf(out, "ktls       %s%s%s\n", ktls ? "available" : "unavailable", ktls ? "" : ": ",
	        why);
}

static int check_queue_dir(const struct config *c, FILE *out)
{
	char where[512];
	struct stat st;

	config_where(c, OPT_QUEUE_DIRECTORY, where, sizeof(where));
	if (stat(c->queue_directory, &st) < 0) {
		if (errno == ENOENT) {
			fprintf(out, "ok     QueueDirectory %s will be created\n",
			        c->queue_directory);
			return 0;
		}
		fprintf(out, "error  %s: QueueDirectory %s: %s\n", where, c->queue_directory,
		        strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode) || access(c->queue_directory, W_OK | X_OK) < 0) {
		fprintf(out, "error  %s: QueueDirectory %s: not a writable directory\n", where,
		        c->queue_directory);
		return 1;
	}
	fprintf(out, "ok     QueueDirectory %s\n", c->queue_directory);
	return 0;
}

int check_config(const struct config *c, FILE *out)
{
	int errors = tls_check(c, out);

	for (size_t i = 0; i < c->listen_count; i++) {
		if (c->listen[i].smtps && c->server_cert_file == NULL) {
			char where[512];
			config_where(c, OPT_LISTEN, where, sizeof(where));
			fprintf(
			    out,
			    "error  %s: Listen=%s smtps needs ServerCertFile and ServerKeyFile\n",
			    where, c->listen[i].text);
			errors++;
		}
	}
	errors += check_queue_dir(c, out);
	return errors;
}
