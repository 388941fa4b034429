/* runas: see runas.h. */
#include "runas.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static bool all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static int resolve_group(const char *g, gid_t *gid, char *err, size_t errlen)
{
	struct group *gr;

	if (all_digits(g)) {
		*gid = (gid_t)strtoul(g, NULL, 10);
		return 0;
	}
	errno = 0;
	gr = getgrnam(g);
	if (gr == NULL) {
		snprintf(err, errlen, "RunAsUser: group %s does not exist", g);
		return -1;
	}
	*gid = gr->gr_gid;
	return 0;
}

int runas_resolve(const char *spec, uid_t euid, struct runas *ra, char *err, size_t errlen)
{
	char user[64], *group = NULL;
	struct passwd *pw = NULL;

	memset(ra, 0, sizeof(*ra));
	if (spec == NULL && euid != 0) {
		ra->uid = euid;
		ra->gid = getegid();
		pw = getpwuid(euid);
		snprintf(ra->name, sizeof(ra->name), "%s", pw ? pw->pw_name : "");
		if (pw == NULL)
			snprintf(ra->name, sizeof(ra->name), "%u", (unsigned)euid);
		struct group *gr = getgrgid(ra->gid);
		if (gr != NULL)
			snprintf(ra->group, sizeof(ra->group), "%s", gr->gr_name);
		else
			snprintf(ra->group, sizeof(ra->group), "%u", (unsigned)ra->gid);
		return 0;
	}
	snprintf(user, sizeof(user), "%s", spec ? spec : RUNAS_DEFAULT_USER);
	if ((group = strchr(user, ':')) != NULL)
		*group++ = '\0';
	if (all_digits(user)) {
		ra->uid = (uid_t)strtoul(user, NULL, 10);
		pw = getpwuid(ra->uid);
	} else {
		pw = getpwnam(user);
		if (pw == NULL) {
			if (spec == NULL)
				snprintf(
				    err, errlen,
				    "started as root, and RunAsUser is not set and there is no "
				    "user %s to run as: create it (adduser --system --group "
				    "--home /var/spool/krelay krelay), or name a user with "
				    "RunAsUser=user[:group] (RunAsUser=root keeps root, not "
				    "recommended)",
				    RUNAS_DEFAULT_USER);
			else
				snprintf(err, errlen, "RunAsUser: user %s does not exist", user);
			return -1;
		}
		ra->uid = pw->pw_uid;
		ra->by_name = true;
	}
	if (group != NULL) {
		if (resolve_group(group, &ra->gid, err, errlen) < 0)
			return -1;
		snprintf(ra->group, sizeof(ra->group), "%s", group);
	} else if (pw != NULL) {
		struct group *gr = getgrgid(pw->pw_gid);
		ra->gid = pw->pw_gid;
		if (gr != NULL)
			snprintf(ra->group, sizeof(ra->group), "%s", gr->gr_name);
		else
			snprintf(ra->group, sizeof(ra->group), "%u", (unsigned)ra->gid);
	} else {
		snprintf(err, errlen,
		         "RunAsUser: uid %s has no passwd entry: name its group too "
		         "(uid:gid)",
		         user);
		return -1;
	}
	snprintf(ra->name, sizeof(ra->name), "%s", pw ? pw->pw_name : user);
	if (euid != 0) {
		if (ra->uid != euid) {
			snprintf(err, errlen,
			         "RunAsUser=%s: krelay was started as uid %u, not root, and cannot "
			         "become another user",
			         spec, (unsigned)euid);
			return -1;
		}
		return 0; /* already that user (a service manager's User=) */
	}
	ra->drop = ra->uid != 0;
	return 0;
}

int runas_queue_dir(const char *dir, const struct runas *ra, bool create, char *err, size_t errlen)
{
	struct stat st;

	if (!create && access(dir, F_OK) < 0 && errno == ENOENT)
		return 0;
	if (!create) {
		/* (looked at below) */
	} else if (mkdir(dir, 0700) == 0) {
		if (lchown(dir, ra->uid, ra->gid) < 0) {
			snprintf(err, errlen, "QueueDirectory %s: chown to %s: %s", dir, ra->name,
			         strerror(errno));
			return -1;
		}
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "QueueDirectory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		snprintf(err, errlen, "QueueDirectory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "QueueDirectory %s is not a directory%s", dir,
		         S_ISLNK(st.st_mode) ? " (a symbolic link: name its target)" : "");
		return -1;
	}
	if (st.st_uid != ra->uid) {
		struct passwd *pw = getpwuid(st.st_uid);
		char owner[64];
		if (pw != NULL)
			snprintf(owner, sizeof(owner), "%s", pw->pw_name);
		else
			snprintf(owner, sizeof(owner), "uid %u", (unsigned)st.st_uid);
		snprintf(err, errlen,
		         "QueueDirectory %s is owned by %s, not by %s, who the relay runs as: "
		         "chown -R %s:%s %s",
		         dir, owner, ra->name, ra->name, ra->group, dir);
		return -1;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen,
		         "QueueDirectory %s is writable by %s (mode %04o): anybody who can write "
		         "there can make or change mail; chmod 0700 %s",
		         dir, st.st_mode & S_IWOTH ? "others" : "its group",
		         (unsigned)(st.st_mode & 07777), dir);
		return -1;
	}
	return 0;
}

int runas_drop(const struct runas *ra, char *err, size_t errlen)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;

	if (!ra->drop)
		return 0;
	if ((ra->by_name ? initgroups(ra->name, ra->gid) : setgroups(1, &ra->gid)) < 0 ||
	    setresgid(ra->gid, ra->gid, ra->gid) < 0 || setresuid(ra->uid, ra->uid, ra->uid) < 0) {
		snprintf(err, errlen, "RunAsUser: becoming %s:%s: %s", ra->name, ra->group,
		         strerror(errno));
		return -1;
	}
	if (getresuid(&r, &e, &s) < 0 || getresgid(&rg, &eg, &sg) < 0 || r != ra->uid ||
	    e != ra->uid || s != ra->uid || rg != ra->gid || eg != ra->gid || sg != ra->gid ||
	    setuid(0) == 0 || seteuid(0) == 0) {
		snprintf(err, errlen, "RunAsUser: %s:%s did not stick (root can be had back)",
		         ra->name, ra->group);
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "RunAsUser: no_new_privs: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int runas_drop_keep_dac(const struct runas *ra, char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	uid_t r, e, s;

	if (!ra->drop)
		return 0;
	memset(data, 0, sizeof(data));
	data[CAP_DAC_OVERRIDE / 32].effective = data[CAP_DAC_OVERRIDE / 32].permitted =
	    1u << (CAP_DAC_OVERRIDE % 32);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 ||
	    (ra->by_name ? initgroups(ra->name, ra->gid) : setgroups(1, &ra->gid)) < 0 ||
	    setresgid(ra->gid, ra->gid, ra->gid) < 0 || setresuid(ra->uid, ra->uid, ra->uid) < 0 ||
	    syscall(SYS_capset, &hdr, data) < 0 || prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) {
		snprintf(err, errlen, "becoming %s:%s with CAP_DAC_OVERRIDE only: %s", ra->name,
		         ra->group, strerror(errno));
		return -1;
	}
	if (getresuid(&r, &e, &s) < 0 || r != ra->uid || e != ra->uid || s != ra->uid ||
	    setuid(0) == 0 || seteuid(0) == 0) {
		snprintf(err, errlen, "%s:%s did not stick (root can be had back)", ra->name,
		         ra->group);
		return -1;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		snprintf(err, errlen, "no_new_privs: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int runas_become_owner(const char *dir, char *err, size_t errlen)
{
	struct runas ra;
	struct stat st;
	struct passwd *pw;

	if (geteuid() != 0 || stat(dir, &st) < 0 || st.st_uid == 0)
		return 0;
	memset(&ra, 0, sizeof(ra));
	ra.drop = true;
	ra.uid = st.st_uid;
	ra.gid = st.st_gid;
	pw = getpwuid(st.st_uid);
	if (pw != NULL) {
		snprintf(ra.name, sizeof(ra.name), "%s", pw->pw_name);
		ra.gid = pw->pw_gid;
		ra.by_name = true;
	} else {
		snprintf(ra.name, sizeof(ra.name), "%u", (unsigned)st.st_uid);
	}
	snprintf(ra.group, sizeof(ra.group), "%u", (unsigned)ra.gid);
	return runas_drop(&ra, err, errlen);
}

/* One file as the child (ra's user) sees it: 1 when it cannot be used. */
static int check_one(FILE *out, const char *what, const char *path, bool dir, bool write,
                     const char *user)
{
	int fd;

	if (path == NULL)
		return 0;
	if (write)
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	else
		fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		close(fd);
	if (fd >= 0 && dir && access(path, X_OK) < 0)
		fd = -1;
	if (fd < 0 && write && errno == ENOENT)
		return 0; /* made at start, by root, for the user */
	if (fd < 0 && write) {
		/* opened before the drop, so the relay runs; a reload cannot reopen it */
		fprintf(out,
		        "warn   %s %s: %s as user %s: a reload (log rotation) cannot reopen it\n",
		        what, path, strerror(errno), user);
		return 0;
	}
	if (fd < 0) {
		/* read before the drop, so the relay runs; a reload cannot re-read it */
		fprintf(out,
		        "warn   %s %s: %s as user %s: a reload (SIGHUP) cannot re-read it, "
		        "only a restart\n",
		        what, path, strerror(errno), user);
		return 0;
	}
	fprintf(out, "ok     %s %s can be %s by user %s\n", what, path, write ? "written" : "read",
	        user);
	return 0;
}

int runas_check_files(const struct config *c, const char *conf_path, const struct runas *ra,
                      FILE *out)
{
	int errors = 0, status;
	pid_t pid;

	fflush(out);
	pid = fork();
	if (pid < 0) {
		fprintf(out, "error  RunAsUser: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		char err[512];
		if (runas_drop(ra, err, sizeof(err)) < 0) {
			fprintf(out, "error  %s\n", err);
			fflush(out);
			_exit(1);
		}
		errors += check_one(out, "configuration", conf_path, false, false, ra->name);
		errors +=
		    check_one(out, "ServerCertFile", c->server_cert_file, false, false, ra->name);
		errors +=
		    check_one(out, "ServerKeyFile", c->server_key_file, false, false, ra->name);
		errors +=
		    check_one(out, "ClientCertFile", c->client_cert_file, false, false, ra->name);
		errors +=
		    check_one(out, "ClientKeyFile", c->client_key_file, false, false, ra->name);
		errors += check_one(out, "CACertFile", c->ca_cert_file, false, false, ra->name);
		errors += check_one(out, "CACertPath", c->ca_cert_path, true, false, ra->name);
		errors +=
		    check_one(out, "TransportTable", c->transport_table, false, false, ra->name);
		errors +=
		    check_one(out, "TLSPolicyTable", c->tls_policy_table, false, false, ra->name);
		errors += check_one(out, "ShapingTable", c->shaping_table, false, false, ra->name);
		if (c->mta_sts)
			errors += check_one(out, "MTASTSCAFile", c->mta_sts_ca_file, false, false,
			                    ra->name);
		if (TLS_POLICY_IS_DANE(c->tls_policy) || c->line[OPT_DNSSEC_TRUST_ANCHOR_FILE])
			errors += check_one(out, "DNSSECTrustAnchorFile", c->trust_anchor_file,
			                    false, false, ra->name);
		const char *sock;
		if (!log_file_is_syslog(c->log_file, &sock))
			errors += check_one(out, "LogFile", c->log_file, false, true, ra->name);
		fflush(out);
		_exit(errors > 100 ? 100 : errors);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
