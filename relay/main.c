/* krelay: command line, start-up, signals (SIGTERM/SIGINT: graceful stop,
 * SIGHUP: reload certificates and configuration without dropping anybody). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "client_count.h"
#include "config.h"
#include "dns.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "queue_cli.h"
#include "runas.h"
#include "sendmail_cli.h"
#include "service.h"
#include "shaping.h"
#include "sm_import_cli.h"
#include "sm_queue.h"
#include "throttle.h"

#include "spool.h"
#include "tls_ctx.h"
#include "tlsrpt_cli.h"
#include "tlsrpt_log.h"
#include "worker.h"

#define KRELAY_VERSION "0.1.0"
#define MAX_WORKERS    256

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: krelay [-C FILE]           run the relay in the foreground\n"
	        "       krelay check [-C FILE]     show what this machine can offload and "
	        "check the configuration\n"
	        "       krelay queue [-C FILE] list [--json]|flush|delete ID|hold ID|release ID\n"
	        "       krelay queue [-C FILE] import-sendmail MQUEUE-DIR\n"
	        "       krelay sendmail [-t] [-i] [-f ADDR] [-F NAME] [-bs|-bp|-q] [RCPT...]\n"
	        "                                  Sendmail's command line (also as sendmail, "
	        "mailq)\n"
	        "       krelay import-sendmail [--access FILE] [--mailertable FILE] [-o FILE] "
	        "sendmail.mc|.cf\n"
	        "       krelay tlsrpt [-C FILE] --show [DATE] | --report|--send [DATE] [DOMAIN]\n"
	        "                                  TLS results per recipient domain (TLSRPT=yes)\n"
	        "       krelay version\n"
	        "FILE holds Name=value lines (sendmail.cf \"O Name=value\" lines work too);\n"
	        "without -C the built-in defaults are used (see README.md).\n");
}

/* Loads defaults + file and fills what only the machine knows. */
static int load_config(struct config *c, const char *path, char *err, size_t errlen)
{
	config_defaults(c);
	if (path != NULL && config_load(c, path, err, errlen) < 0)
		return -1;
	return config_fill_hostname(c);
}

/* `krelay check`: who the relay would run as, and whether that user can
 * use the queue and re-read what a reload re-reads. */
static int check_run_as(const struct config *c, const char *path)
{
	char err[1024];
	struct runas ra;
	int errors = 0;

	if (runas_resolve(c->run_as_user, geteuid(), &ra, err, sizeof(err)) < 0) {
		printf("error  %s\n", err);
		return 1;
	}
	if (ra.uid == 0)
		printf(
		    "warn   RunAsUser: the relay would run as root; name an unprivileged user\n");
	else
		printf("ok     RunAsUser: the relay runs as %s:%s (uid %u, gid %u)%s\n", ra.name,
		       ra.group, (unsigned)ra.uid, (unsigned)ra.gid,
		       ra.drop ? " once its listeners, keys and queue are open" : "");
	if (runas_queue_dir(c->queue_directory, &ra, false, err, sizeof(err)) < 0) {
		printf("error  %s\n", err);
		errors++;
	}
	if (ra.drop)
		errors += runas_check_files(c, path, &ra, stdout);
	return errors;
}

static int cmd_check(const char *path)
{
	struct config c;
	struct caps caps;
	char err[CONFIG_ERR_MAX];
	int errors;

	probe_run(&caps);
	check_print_caps(&caps, stdout);
	if (load_config(&c, path, err, sizeof(err)) < 0) {
		printf("error  %s\n", err);
		printf("configuration: 1 error\n");
		config_free(&c);
		return 1;
	}
	printf("config     %s\n", path ? path : "built-in defaults");
	errors = check_config(&c, stdout);
	errors += check_dnssec(&c, stdout);
	errors += check_throttle_store(&c, stdout);
	errors += check_run_as(&c, path);
	printf("configuration: %d error%s\n", errors, errors == 1 ? "" : "s");
	config_free(&c);
	return errors ? 1 : 0;
}

/* A subcommand's "[-C FILE]" (taken off argc/argv) and configuration;
 * -1 with the message printed as "krelay NAME: ...". */
static int cli_config(const char *name, int *argc, char ***argv, struct config *c)
{
	char err[CONFIG_ERR_MAX];
	const char *path = NULL;

	if (*argc >= 2 && strcmp((*argv)[0], "-C") == 0) {
		path = (*argv)[1];
		*argc -= 2;
		*argv += 2;
	}
	if (load_config(c, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "krelay %s: %s\n", name, err);
		config_free(c);
		return -1;
	}
	return 0;
}

/* `krelay tlsrpt [-C FILE] ...`: reads what the relay recorded. */
static int cmd_tlsrpt(int argc, char **argv)
{
	struct config c;
	int ret;

	if (cli_config("tlsrpt", &argc, &argv, &c) < 0)
		return 1;
	ret = tlsrpt_cli(&c, argc, argv);
	config_free(&c);
	return ret;
}

static int cmd_queue(int argc, char **argv)
{
	struct config c;
	char err[CONFIG_ERR_MAX];
	int ret;

	if (cli_config("queue", &argc, &argv, &c) < 0)
		return 1;
	config_fill_hostname(&c);
	/* root acts as the queue's owner: what it writes stays the relay's.
	 * Not for a list or a summary (they only read) or an import (Sendmail's
	 * files are root's; what it writes is given to the queue's owner,
	 * sm_queue.c). */
	bool as_root =
	    argc >= 1 && (strcmp(argv[0], "list") == 0 || strcmp(argv[0], "summary") == 0 ||
	                  strcmp(argv[0], "import-sendmail") == 0);
	if (!as_root && runas_become_owner(c.queue_directory, err, sizeof(err)) < 0) {
		fprintf(stderr, "krelay queue: %s\n", err);
		config_free(&c);
		return 1;
	}
	ret = queue_cli(&c, argc, argv);
	config_free(&c);
	return ret;
}

/* SmartHost, TransportTable and TLSPolicyTable, parsed once per
 * configuration (so a reload that cannot read them keeps the old one). */
static int load_routes(struct runtime *rt, char *err, size_t errlen)
{
	const struct config *c = &rt->cfg;

	if (c->smart_host != NULL) {
		if (route_parse_hop(c->smart_host, &rt->smarthost, err, errlen) < 0)
			return -1;
		rt->has_smarthost = true;
	}
	if (c->transport_table != NULL &&
	    (rt->transports = route_table_load(c->transport_table, err, errlen)) == NULL)
		return -1;
	if (c->tls_policy_table != NULL &&
	    (rt->tls_policies = tls_policy_load(c->tls_policy_table, err, errlen)) == NULL) {
		route_table_free(rt->transports);
		return -1;
	}
	rt->dane = TLS_POLICY_IS_DANE(c->tls_policy) || tls_policy_any_dane(rt->tls_policies);
	if (rt->dane && dns_anchor_read(c->trust_anchor_file, &rt->trust_anchor, err, errlen) < 0)
		goto fail;
	if (c->shaping_table != NULL &&
	    (rt->shaping = shaping_load(c->shaping_table, err, errlen)) == NULL)
		goto fail;
	return 0;
fail:
	free(rt->trust_anchor);
	rt->trust_anchor = NULL;
	tls_policy_free(rt->tls_policies);
	rt->tls_policies = NULL;
	route_table_free(rt->transports);
	rt->transports = NULL;
	return -1;
}

/* Builds a runtime from path; NULL with err on any error. */
static struct runtime *runtime_load(const char *path, char *err, size_t errlen)
{
	struct runtime *rt = calloc(1, sizeof(*rt));
	char *buf = NULL;
	size_t len = 0;
	FILE *mem;

	if (rt == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&rt->refs, 1);
	if (load_config(&rt->cfg, path, err, errlen) < 0)
		goto fail;
	mem = open_memstream(&buf, &len);
	if (mem != NULL && check_config(&rt->cfg, mem) > 0) {
		fclose(mem);
		/* report the error lines only, on one line */
		size_t n = 0;
		err[0] = '\0';
		for (char *sp, *line = strtok_r(buf, "\n", &sp); line != NULL;
		     line = strtok_r(NULL, "\n", &sp))
			if (strncmp(line, "error  ", 7) == 0 && n < errlen)
				n += (size_t)snprintf(err + n, errlen - n, "%s%s", n ? "; " : "",
				                      line + 7);
		free(buf);
		goto fail;
	}
	if (mem != NULL) {
		fclose(mem);
		free(buf);
	}
	rt->server_ctx = tls_server_ctx(&rt->cfg, err, errlen);
	if (rt->server_ctx == NULL && err[0] != '\0')
		goto fail;
	rt->client_ctx = tls_client_ctx(&rt->cfg, err, errlen);
	if (rt->client_ctx == NULL) {
		SSL_CTX_free(rt->server_ctx);
		goto fail;
	}
	if (rt->cfg.mta_sts && (rt->sts_ctx = tls_client_ctx_ca(&rt->cfg, rt->cfg.mta_sts_ca_file,
	                                                        NULL, err, errlen)) == NULL) {
		char why[256];
		snprintf(why, sizeof(why), "MTASTSCAFile %s: %s", rt->cfg.mta_sts_ca_file, err);
		snprintf(err, errlen, "%s", why);
		SSL_CTX_free(rt->server_ctx);
		SSL_CTX_free(rt->client_ctx);
		goto fail;
	}
	if (load_routes(rt, err, errlen) < 0) {
		SSL_CTX_free(rt->server_ctx);
		SSL_CTX_free(rt->client_ctx);
		SSL_CTX_free(rt->sts_ctx);
		goto fail;
	}
	return rt;
fail:
	config_free(&rt->cfg);
	free(rt);
	return NULL;
}

static bool same_listen(const struct config *a, const struct config *b)
{
	if (a->listen_count != b->listen_count)
		return false;
	for (size_t i = 0; i < a->listen_count; i++)
		if (a->listen[i].smtps != b->listen[i].smtps ||
		    a->listen[i].addrlen != b->listen[i].addrlen ||
		    memcmp(&a->listen[i].addr, &b->listen[i].addr, a->listen[i].addrlen) != 0)
			return false;
	return true;
}

/* Settings a reload cannot change (the listeners are bound, the spool
 * open, the threads and resolvers made): each one changed is named. */
static void restart_only(const struct config *old, const struct config *now)
{
	char names[256] = "";
	size_t n = 0;
	const char *changed[16];
	const struct config_listen *ma = &old->metrics_listen, *mb = &now->metrics_listen;

	if (!same_listen(old, now))
		changed[n++] = "Listen";
	if (strcmp(old->queue_directory, now->queue_directory) != 0)
		changed[n++] = "QueueDirectory";
	if (old->workers != now->workers)
		changed[n++] = "Workers";
	if (strcmp(old->dns_server ? old->dns_server : "",
	           now->dns_server ? now->dns_server : "") != 0)
		changed[n++] = "DNSServer";
	if (strcmp(old->trust_anchor_file, now->trust_anchor_file) != 0)
		changed[n++] = "DNSSECTrustAnchorFile";
	if (old->has_throttle_store != now->has_throttle_store ||
	    (now->has_throttle_store &&
	     strcmp(old->throttle_store.text, now->throttle_store.text) != 0))
		changed[n++] = "ThrottleStore";
	bool queues_same = old->sendmail_queues_count == now->sendmail_queues_count &&
	                   old->sendmail_queue_interval_s == now->sendmail_queue_interval_s;
	for (size_t i = 0; queues_same && i < old->sendmail_queues_count; i++)
		queues_same = strcmp(old->sendmail_queues[i], now->sendmail_queues[i]) == 0;
	if (!queues_same)
		changed[n++] = "SendmailQueue";
	const char *so, *sn;
	if (log_file_is_syslog(old->log_file, &so) != log_file_is_syslog(now->log_file, &sn) ||
	    (log_file_is_syslog(old->log_file, &so) && strcmp(so, sn) != 0))
		changed[n++] = "LogFile";
	if (strcmp(old->run_as_user ? old->run_as_user : "",
	           now->run_as_user ? now->run_as_user : "") != 0)
		changed[n++] = "RunAsUser";
	if (ma->addrlen != mb->addrlen || memcmp(&ma->addr, &mb->addr, ma->addrlen) != 0)
		changed[n++] = "MetricsListen";
	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++)
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
		         i == 0       ? ""
		         : i + 1 == n ? " and "
		                      : ", ",
		         changed[i]);
	log_warnx("reload: %s changed: %s at restart; the running %s", names,
	          n == 1 ? "it takes effect" : "they take effect",
	          n == 1 ? "value stays" : "values stay");
}

/* The user the relay became at start (RunAsUser), for reload's messages;
 * empty when it did not change user. */
static char dropped_to[64];

static void reload(struct server *srv, const char *path)
{
	char err[4096];
	struct runtime *rt = runtime_load(path, err, sizeof(err)), *old;

	if (rt == NULL) {
		bool perm = strstr(err, "Permission denied") != NULL ||
		            strstr(err, "permission denied") != NULL;
		log_warnx("reload failed, keeping the running configuration: %s%s%s%s", err,
		          perm && dropped_to[0] ? " (krelay runs as user " : "",
		          perm && dropped_to[0] ? dropped_to : "",
		          perm && dropped_to[0] ? ", so what a reload reads must be readable "
		                                  "by it, e.g. group krelay and mode 0640; or "
		                                  "restart krelay)"
		                                : "");
		return;
	}
	pthread_mutex_lock(&srv->lock);
	old = srv->current;
	srv->current = rt;
	pthread_mutex_unlock(&srv->lock);
	atomic_fetch_add(&srv->generation, 1); /* new connections out take it */
	restart_only(&srv->started->cfg, &rt->cfg);
	const char *sock;
	if (rt->cfg.log_file != NULL && !log_file_is_syslog(rt->cfg.log_file, &sock) &&
	    log_open(rt->cfg.log_file) < 0)
		log_warnx("reload: LogFile %s: %s%s%s; logging goes on where it went",
		          rt->cfg.log_file, strerror(errno), dropped_to[0] ? " as user " : "",
		          dropped_to);
	log_set_level(rt->cfg.log_level);
	log_info("reload ok config=%s starttls=%s", path ? path : "built-in",
	         rt->server_ctx ? "offered" : "off");
	runtime_put(old);
}

/* QueueDirectory/krelay.pid: the relay's pid, and a lock (flock) held as
 * long as it runs.  A second relay on the same queue refuses to start (two
 * would deliver each other's messages and recover each other's files), and
 * `krelay queue` signals the pid only while the file is locked: a file left
 * by kill -9 names a pid that may by now be any process's. */
static int pid_fd = -1;
static char pid_path[4096];

static int pid_lock(const char *dir, char *err, size_t errlen)
{
	char buf[32];
	int n;

	mkdir(dir, 0700); /* (the spool makes the rest) */
	snprintf(pid_path, sizeof(pid_path), "%s/krelay.pid", dir);
	pid_fd = open(pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (pid_fd < 0) {
		snprintf(err, errlen, "%.400s: %s", pid_path, strerror(errno));
		return -1;
	}
	if (flock(pid_fd, LOCK_EX | LOCK_NB) < 0) {
		long other = 0;
		n = (int)pread(pid_fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		other = strtol(buf, NULL, 10);
		snprintf(err, errlen, "QueueDirectory %s is in use by another krelay (pid %ld)",
		         dir, other);
		close(pid_fd);
		pid_fd = -1;
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(pid_fd, 0) < 0 || pwrite(pid_fd, buf, (size_t)n, 0) != n) {
		snprintf(err, errlen, "%.400s: %s", pid_path, strerror(errno));
		return -1; /* (pid_unlock removes it) */
	}
	return 0;
}

static void pid_unlock(void)
{
	if (pid_fd < 0)
		return;
	unlink(pid_path);
	close(pid_fd); /* the lock goes with it */
	pid_fd = -1;
}

/* The counters (MetricsListen), made before the workers: kept here, so a
 * start that stops half-way leaves them reachable, not leaked. */
static struct metrics *metrics;

/* A start that cannot go on once the runtime is loaded: says why, gives the
 * runtime back (its configuration and TLS contexts; LeakSanitizer counts it
 * otherwise) and returns run()'s exit status. */
static int not_starting(struct runtime *rt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int not_starting(struct runtime *rt, const char *fmt, ...)
{
	va_list ap;

	fputs("krelay: not starting: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pid_unlock();
	runtime_put(rt);
	return 1;
}

static unsigned worker_count(const struct config *c)
{
	long n = c->workers ? (long)c->workers : sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

/* Every session, its spool file, each outbound connection, pooled spool file
 * and listener is a descriptor, and the usual soft limit (1024) is below
 * what MaxConnections' default needs: the soft limit goes up to the hard
 * one.  Returns the limit now in force; *need is what the configuration may
 * use at its busiest. */
static unsigned long long raise_nofile(const struct config *c, unsigned workers,
                                       unsigned long long *need)
{
	struct rlimit rl;

	/* sessions and their files; per next hop, max(DestinationConcurrency,
	 * workers) connections (and a file each); per worker its pool */
	*need =
	    2ull * c->max_connections +
	    2ull * (c->destination_concurrency > workers ? c->destination_concurrency : workers) +
	    (unsigned long long)workers * (SPOOL_POOL_MAX + 32) + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit up = {rl.rlim_max, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	return rl.rlim_cur == RLIM_INFINITY ? ~0ull : (unsigned long long)rl.rlim_cur;
}

static int run(const char *path)
{
	static struct worker workers[MAX_WORKERS];
	struct server srv;
	struct spool_stats total = {0};
	char err[4096];
	const char *why;
	unsigned queued, removed;
	sigset_t set;
	int sig;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN); /* a file size limit is a write error, not death */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	memset(&srv, 0, sizeof(srv));
	pthread_mutex_init(&srv.lock, NULL);
	probe_run(&srv.caps);
	srv.current = runtime_load(path, err, sizeof(err));
	if (srv.current == NULL) {
		fprintf(stderr, "krelay: not starting: %s\n", err);
		return 1;
	}
	const struct config *c = &srv.current->cfg;
	struct runas ra;
	/* Privileged part: who to become, the log, the queue directory and its
	 * lock, the rings and listeners.  Then the drop, then the queue. */
	if (runas_resolve(c->run_as_user, geteuid(), &ra, err, sizeof(err)) < 0)
		return not_starting(srv.current, "%s", err);
	const char *syslog_socket = NULL;
	bool to_syslog = log_file_is_syslog(c->log_file, &syslog_socket);
	if (c->log_file != NULL && !to_syslog) {
		bool made = access(c->log_file, F_OK) < 0;
		if (log_open(c->log_file) < 0)
			return not_starting(srv.current, "LogFile %s: %s", c->log_file,
			                    strerror(errno));
		if (made && ra.drop && chown(c->log_file, ra.uid, ra.gid) < 0)
			return not_starting(srv.current, "LogFile %s: chown to %s: %s", c->log_file,
			                    ra.name, strerror(errno));
	}
	log_choose(to_syslog ? syslog_socket : NULL);
	log_set_level(c->log_level);
	if (!srv.caps.uring)
		return not_starting(srv.current, "%s", srv.caps.uring_error);
	if (runas_queue_dir(c->queue_directory, &ra, true, err, sizeof(err)) < 0)
		return not_starting(srv.current, "%s", err);
	if (pid_lock(c->queue_directory, err, sizeof(err)) < 0)
		return not_starting(srv.current, "%s", err);
	if (ra.drop && fchown(pid_fd, ra.uid, ra.gid) < 0)
		return not_starting(srv.current, "%s: chown to %s: %s", pid_path, ra.name,
		                    strerror(errno));
	/* The Sendmail queue runner: forked while still privileged (it keeps
	 * CAP_DAC_OVERRIDE for Sendmail's root-owned files), before any ring or
	 * listener exists that it would inherit. */
	pid_t mqueue_runner = -1;
	if (c->sendmail_queues_count > 0) {
		mqueue_runner = smq_runner_start(
		    c->sendmail_queues, c->sendmail_queues_count, c->queue_directory, c->hostname,
		    c->sendmail_queue_interval_s, &ra, err, sizeof(err));
		if (mqueue_runner < 0)
			return not_starting(srv.current, "%s", err);
	}
	srv.workers = worker_count(c);
	if ((srv.metrics = metrics = metrics_new(srv.workers)) == NULL)
		return not_starting(srv.current, "out of memory");
	for (unsigned i = 0; i < srv.workers; i++)
		if (worker_init(&workers[i], &srv, i, c, err, sizeof(err)) < 0)
			return not_starting(srv.current, "%s", err);
	if (runas_drop(&ra, err, sizeof(err)) < 0)
		return not_starting(srv.current, "%s", err);
	if (ra.drop)
		snprintf(dropped_to, sizeof(dropped_to), "%s", ra.name);
	if (spool_recover(c->queue_directory, &queued, &removed) < 0)
		return not_starting(srv.current, "QueueDirectory %s: %s%s%s", c->queue_directory,
		                    strerror(errno), ra.drop ? " as user " : "",
		                    ra.drop ? ra.name : "");
	for (unsigned i = 0; i < srv.workers; i++)
		if (worker_open_spool(&workers[i], c, ra.drop ? ra.name : NULL, err, sizeof(err)) <
		    0)
			return not_starting(srv.current, "%s", err);
	char **ids;
	size_t nids;
	if (spool_list(c->queue_directory, &ids, &nids) < 0)
		nids = 0;
	/* Messages found at start go to the worker their ID names. */
	for (size_t i = 0; i < nids; i++) {
		struct worker *w = &workers[spool_id_owner(ids[i], srv.workers)];
		if (w->nrecover % 64 == 0)
			w->recover = realloc(w->recover, (w->nrecover + 64) * sizeof(char *));
		w->recover[w->nrecover++] = ids[i];
	}
	free(ids);
	for (unsigned i = 0; i < srv.workers; i++)
		workers[i].queue_only = c->queue_only;
	probe_ktls_possible(&srv.caps, &why);
	unsigned long long need, nofile = raise_nofile(c, srv.workers, &need);
	log_info("krelay %s starting config=%s workers=%u hostname=%s user=%s group=%s log=%s%s%s "
	         "queue=%s queued=%u removed_tmp=%u nofile=%llu starttls=%s ktls=%s%s%s%s",
	         KRELAY_VERSION, path ? path : "built-in", srv.workers, c->hostname, ra.name,
	         ra.group, log_sink_name(), c->log_file && !to_syslog ? "+" : "",
	         c->log_file && !to_syslog ? c->log_file : "", c->queue_directory, queued, removed,
	         nofile, srv.current->server_ctx ? "offered" : "off",
	         why[0] ? "unavailable" : "available", why[0] ? " ktls_why=\"" : "", why,
	         why[0] ? "\"" : "");
	if (ra.uid == 0)
		log_warnx("running as root (RunAsUser=root): a flaw in krelay would be a flaw "
		          "in the whole machine; name an unprivileged user");
	if (nofile < need)
		log_warnx(
		    "open-file limit %llu is below the %llu that MaxConnections=%u, "
		    "DestinationConcurrency=%u and %u workers may use at their busiest: raise "
		    "the hard limit (ulimit -Hn; systemd: LimitNOFILE=)",
		    nofile, need, c->max_connections, c->destination_concurrency, srv.workers);
	for (size_t i = 0; i < c->listen_count; i++)
		log_info("listening on %s%s", c->listen[i].text,
		         c->listen[i].smtps ? " (smtps, implicit TLS)" : "");
	if (c->metrics_listen.addrlen != 0)
		log_info("metrics on http://%s/metrics", c->metrics_listen.text);
	srv.clients = client_count_new();
	if (srv.clients == NULL)
		fatal("client_count_new");
	srv.throttle = throttle_new();
	if (metrics_add_provider(metrics, throttle_metrics, srv.throttle) < 0)
		fatalx("metrics_add_provider");
	{
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/tlsrpt", c->queue_directory);
		if ((srv.tlsrpt = tlsrpt_log_open(dir)) == NULL)
			fatal("tlsrpt_log_open");
	}
	for (unsigned i = 0; i < srv.workers; i++)
		if (worker_start(&workers[i]) < 0)
			fatal("pthread_create");
	srv.started = runtime_hold(srv.current);
	service_notify("READY=1\nSTATUS=relaying, %u workers\nMAINPID=%d", srv.workers,
	               (int)getpid());

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			service_notify("RELOADING=1");
			reload(&srv, path);
			for (unsigned i = 0; i < srv.workers; i++)
				worker_wake(&workers[i]); /* the queues follow it now */
			service_notify("READY=1\nSTATUS=relaying, reloaded");
			continue;
		}
		if (sig == SIGUSR2) {
			for (unsigned i = 0; i < srv.workers; i++)
				worker_requests(&workers[i]);
			continue;
		}
		if (sig == SIGUSR1) {
			log_info("queue run requested (krelay queue flush)");
			if (mqueue_runner > 0)
				kill(mqueue_runner, SIGUSR1); /* the Sendmail queues too */
			for (unsigned i = 0; i < srv.workers; i++)
				worker_flush(&workers[i]);
			continue;
		}
		break;
	}
	log_info("stopping on signal %d: no new connections, finishing sessions", sig);
	service_notify("STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
	atomic_store(&srv.stopping, true);
	for (unsigned i = 0; i < srv.workers; i++)
		worker_wake(&workers[i]);
	for (unsigned i = 0; i < srv.workers; i++) {
		worker_join(&workers[i]);
		total.messages += workers[i].spool.stats.messages;
		total.bytes += workers[i].spool.stats.bytes;
		total.fsyncs += workers[i].spool.stats.fsyncs;
		total.dirsyncs += workers[i].spool.stats.dirsyncs;
		total.failures += workers[i].spool.stats.failures;
		total.relayed += workers[i].spool.stats.relayed;
		total.segmented += workers[i].spool.stats.segmented;
		total.segments += workers[i].spool.segs.made;
	}
	uint64_t relayed = 0, bounced = 0, deferred = 0, conns = 0;
	uint64_t turns = 0, cqes = 0, nops = 0, kinds[RING_KIND_COUNT] = {0};
	for (unsigned i = 0; i < srv.workers; i++) {
		turns += workers[i].ring.turns;
		cqes += workers[i].ring.completions;
		nops += workers[i].ring.deferred;
		for (unsigned k = 0; k < RING_KIND_COUNT; k++)
			kinds[k] += workers[i].ring.by_kind[k];
		relayed += workers[i].relayed;
		bounced += workers[i].bounced;
		deferred += workers[i].deferred;
		conns += workers[i].connections;
	}
	log_info("krelay stopped messages=%llu bytes=%llu fsyncs=%llu dirsyncs=%llu "
	         "spool_failures=%llu interactive=%llu relayed=%llu bounced=%llu deferred=%llu "
	         "connections=%llu segmented=%llu segments=%llu",
	         (unsigned long long)total.messages, (unsigned long long)total.bytes,
	         (unsigned long long)total.fsyncs, (unsigned long long)total.dirsyncs,
	         (unsigned long long)total.failures, (unsigned long long)total.relayed,
	         (unsigned long long)relayed, (unsigned long long)bounced,
	         (unsigned long long)deferred, (unsigned long long)conns,
	         (unsigned long long)total.segmented, (unsigned long long)total.segments);
	/* what the rings did: turns of the loop (each one wait) and completions
	 * by kind, for telling what a change did to the wake-ups per message */
	char by_kind[RING_KIND_COUNT * 32] = "";
	size_t used = 0;
	for (unsigned k = 0; k < RING_KIND_COUNT && used < sizeof(by_kind); k++)
		if (kinds[k] > 0)
			used += (size_t)snprintf(by_kind + used, sizeof(by_kind) - used, " %s=%llu",
			                         ring_kind_name(k), (unsigned long long)kinds[k]);
	struct rusage ru;
	long long nvcsw = -1, nivcsw = -1, minflt = -1;
	if (getrusage(RUSAGE_SELF, &ru) == 0) /* every thread, io-wq's included */
		nvcsw = ru.ru_nvcsw, nivcsw = ru.ru_nivcsw, minflt = ru.ru_minflt;
	log_info("krelay ring turns=%llu completions=%llu nops=%llu context_switches=%lld "
	         "involuntary=%lld minor_faults=%lld%s",
	         (unsigned long long)turns, (unsigned long long)cqes, (unsigned long long)nops,
	         nvcsw, nivcsw, minflt, by_kind);
	if (mqueue_runner > 0) {
		int status;
		kill(mqueue_runner, SIGTERM);
		waitpid(mqueue_runner, &status, 0);
	}
	pid_unlock();
	runtime_put(srv.current);
	runtime_put(srv.started);
	client_count_free(srv.clients);
	throttle_free(srv.throttle);
	tlsrpt_log_close(srv.tlsrpt);
	metrics_free(metrics);
	metrics = NULL;
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool check = false;
	int i = 1;

	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	/* installed as /usr/sbin/sendmail, mailq or newaliases */
	if (strcmp(base, "sendmail") == 0 || strcmp(base, "mailq") == 0 ||
	    strcmp(base, "newaliases") == 0)
		return sendmail_cli(base, argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "sendmail") == 0)
		return sendmail_cli("krelay", argc - 2, argv + 2);
	if (argc > 1 && strcmp(argv[1], "import-sendmail") == 0)
		return sm_import_cli(argc - 2, argv + 2);
	if (argc > 1 && strcmp(argv[1], "queue") == 0)
		return cmd_queue(argc - 2, argv + 2);
	if (argc > 1 && strcmp(argv[1], "tlsrpt") == 0)
		return cmd_tlsrpt(argc - 2, argv + 2);
	if (argc > 1 && strcmp(argv[1], "check") == 0) {
		check = true;
		i++;
	} else if (argc > 1 && strcmp(argv[1], "version") == 0) {
		printf("krelay %s (%s)\n", KRELAY_VERSION, OpenSSL_version(OPENSSL_VERSION));
		return 0;
	}
	for (; i < argc; i++) {
		if (strcmp(argv[i], "-C") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "krelay: unknown argument '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	return check ? cmd_check(path) : run(path);
}
