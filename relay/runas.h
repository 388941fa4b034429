/* runas: who the relay runs as (RunAsUser, Sendmail's option).  Started as
 * root, krelay binds its listeners, reads its keys and certificates, opens
 * its log and locks its queue, then becomes RunAsUser (default "krelay")
 * before it serves anybody: supplementary groups, gid, uid, in that order,
 * checked to be irreversible, and no_new_privs.  Root without a user to
 * become is refused, unless RunAsUser=root says so.  Not started as root,
 * it stays who it is (a service manager's User=), and a RunAsUser naming
 * somebody else is an error.
 *
 * The queue directory belongs to that user, mode 0700; one writable by
 * group or others, or owned by another user, is a start-up error
 * (Sendmail's SafeFileEnvironment spirit). */
#ifndef KRELAY_RUNAS_H
#define KRELAY_RUNAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "config.h"

#define RUNAS_DEFAULT_USER "krelay"

struct runas {
	bool drop;    /* started as root and becoming somebody else */
	bool by_name; /* name[] is a passwd entry: its groups are initgroups' */
	uid_t uid;    /* who the relay runs as, after start-up */
	gid_t gid;
	char name[64];  /* user name (or number) for messages */
	char group[64]; /* group name (or number) for messages */
};

/* Resolves spec (RunAsUser's value, NULL when unset) for a process whose
 * effective uid is euid.  -1 with err when the user or group does not
 * exist, or when a process not started as root is asked to become
 * somebody else. */
int runas_resolve(const char *spec, uid_t euid, struct runas *ra, char *err, size_t errlen);

/* Makes dir (QueueDirectory) ready for ra's user while still privileged:
 * creates it when create (mode 0700, owned by ra's user and group) and
 * missing, and refuses one that is not a directory, is owned by another
 * user, or is writable by group or others (err names the command that
 * fixes it).  Without create a missing one is fine (`krelay check`). */
int runas_queue_dir(const char *dir, const struct runas *ra, bool create, char *err, size_t errlen);

/* Becomes ra's user for good (when ra->drop): setgroups, setgid, setuid,
 * then checks that root cannot be had back, and sets no_new_privs.  -1
 * with err; a process that returns -1 must not go on. */
int runas_drop(const struct runas *ra, char *err, size_t errlen);

/* The same for a helper that must still open files it does not own (the
 * Sendmail queue runner: Sendmail's queue files are root's, mode 0600):
 * becomes ra's user keeping CAP_DAC_OVERRIDE and no other capability. */
int runas_drop_keep_dac(const struct runas *ra, char *err, size_t errlen);

/* `krelay queue` run by root: becomes the owner of dir, so that what it
 * writes into the queue stays the relay's.  0 when there is nothing to do
 * (not root, the directory owned by root or missing). */
int runas_become_owner(const char *dir, char *err, size_t errlen);

/* For `krelay check`: reports on out, for every file the configuration
 * names (certificates, keys, CA file and path, tables, the configuration
 * and log file, the queue), whether ra's user can use it, checked by a
 * child process that becomes that user.  Returns the number of errors. */
int runas_check_files(const struct config *c, const char *conf_path, const struct runas *ra,
                      FILE *out);

#endif
