/* sm_import: `krelay import-sendmail`: a Sendmail configuration (sendmail.mc
 * or sendmail.cf, the access map, the mailertable, relay-domains) becomes a
 * krelay configuration, a TransportTable and a TLSPolicyTable.  What has a
 * krelay equivalent is carried over, each line after a comment naming the
 * file and line it came from; everything else becomes a comment saying
 * "not imported" and why: never a silent drop.  Pure code (the CLI reads
 * and writes the files): tests/unit/test_sm_import.c. */
#ifndef KRELAY_SM_IMPORT_H
#define KRELAY_SM_IMPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

struct smi {
	struct strbuf conf;                         /* krelay.conf lines */
	struct strbuf transport;                    /* TransportTable lines */
	struct strbuf tls_policy;                   /* TLSPolicyTable lines */
	struct strbuf relay_domains, relay_clients; /* comma lists, gathered */
	/* CertIssuer:DN SUBJECT and CertSubject:DN RELAY, each "DN\tfile:line\n":
	 * paired into RelayClientSubject lines at the end */
	struct strbuf subject_issuers, subjects;
	unsigned imported, skipped;
	bool access_db;        /* FEATURE(access_db) or an access map named in the cf */
	char mailertable[512]; /* FEATURE(mailertable)'s source file, "" if none */
};

void smi_init(struct smi *s);
void smi_free(struct smi *s);

/* One input each; file names the input in the comments.  The kind of a
 * configuration is guessed from its text (m4 calls: .mc; else .cf). */
void smi_config(struct smi *s, const char *text, const char *file);
void smi_access(struct smi *s, const char *text, const char *file);
void smi_mailertable(struct smi *s, const char *text, const char *file);
void smi_relay_domains(struct smi *s, const char *text, const char *file);

/* The gathered RelayDomains and RelayClients lines, once all is read. */
void smi_finish(struct smi *s);

#endif
