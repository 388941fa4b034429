/* sts_policy: MTA-STS (RFC 8461) as text: the _mta-sts TXT record, the
 * policy file fetched over HTTPS, and which MX hosts a policy allows.
 * Pure code. */
#ifndef KRELAY_STS_POLICY_H
#define KRELAY_STS_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#define STS_ID_MAX     32 /* RFC 8461 section 3.1: 1*32(ALPHA / DIGIT) */
#define STS_MX_MAX     16 /* mx: lines kept */
#define STS_NAME_MAX   255
#define STS_POLICY_MAX 65536     /* section 3.3: a policy larger than 64 KiB is refused */
#define STS_MAX_AGE    31557600u /* section 3.2: at most about a year */

enum sts_mode { STS_MODE_NONE, STS_MODE_TESTING, STS_MODE_ENFORCE };

struct sts_policy {
	enum sts_mode mode;
	unsigned max_age; /* seconds */
	size_t nmx;
	char mx[STS_MX_MAX][STS_NAME_MAX + 1]; /* lower case; "*.example.net" allowed */
};

/* One TXT record (its strings joined): 1 when it is an MTA-STS record
 * ("v=STSv1; id=..."), with the id in id[STS_ID_MAX + 1]; 0 when it is
 * some other record (not v=STSv1); -1 when it starts v=STSv1 but is
 * malformed. */
int sts_txt_parse(const char *txt, size_t len, char *id);

/* The policy file's text; 0, or -1 with err saying why (the policy is then
 * unusable: RFC 8461 section 3.2). */
int sts_policy_parse(const char *text, size_t len, struct sts_policy *p, char *err, size_t errlen);

/* Whether host (an MX host name, no trailing dot, any case) is allowed by
 * one of the policy's mx patterns: an exact name, or "*.suffix" for one
 * more label on the left (section 4.1). */
bool sts_mx_match(const struct sts_policy *p, const char *host);

const char *sts_mode_name(enum sts_mode m);

#endif
