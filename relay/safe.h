/* safe: the one place where a value that came from outside (a HELO name, an
 * envelope address, a certificate subject, a peer's reply) is made safe for
 * what krelay writes: a log line, a header of a relayed message, a bounce.
 * Pure code.  Every function writes a NUL-terminated string into dst (cap
 * bytes, cap > 0, cut short rather than overflow) and returns dst, so that
 * it can stand as a printf argument.
 *
 * The escape is "\xHH" (two upper-case hex digits) for every byte that may
 * not stand as itself; a reader turns each back into its byte. */
#ifndef KRELAY_SAFE_H
#define KRELAY_SAFE_H

#include <stdbool.h>
#include <stddef.h>

/* Room for a value of n bytes once escaped (every byte may take 4). */
#define SAFE_LEN(n) (4 * (n) + 1)

/* A log value written between delimiters: key=<...> or key="...".  Keeps
 * printable ASCII (and '=', for SRS and BATV addresses) and well-formed
 * UTF-8 text (an SMTPUTF8 address reads as itself) but escapes space, '\\',
 * '"', '<' and '>', control bytes, DEL, any other 8-bit byte, and the
 * characters that do not show as what they are (C1 controls, U+2028/9, the
 * bidirectional overrides): a value can never close its delimiter or pose
 * as another key=value pair. */
const char *safe_log(char *dst, size_t cap, const char *src);
/* The length of the character at p: 1 for an ASCII byte, 2-4 for
 * well-formed UTF-8 that shows as what it is, 0 otherwise (and at NUL). */
size_t safe_utf8_len(const unsigned char *p);

/* Free text logged as key="...": like safe_log but keeps spaces (a peer's
 * reply reads as it was sent; it still cannot close its quotes). */
const char *safe_log_text(char *dst, size_t cap, const char *src);

/* Text written inside a header comment "( ... )" or a quoted string in one,
 * e.g. a certificate's subject in Received: printable ASCII and space; '\\',
 * '"', '(' and ')' escaped, as are control bytes (CR, LF: no header line can
 * be ended or added), DEL and 8-bit bytes, except, with utf8 (a message
 * whose headers may be UTF-8, RFC 6532), well-formed UTF-8 text as for
 * safe_log. */
const char *safe_comment(char *dst, size_t cap, const char *src, bool utf8);

/* Text of a line of a generated message body (a peer's reply in a bounce):
 * printable ASCII, space and tab; everything else escaped. */
const char *safe_body_text(char *dst, size_t cap, const char *src);

/* True when s is a HELO/EHLO argument RFC 5321 allows (section 4.1.4):
 * a Domain (sub-domains of letters, digits and inner hyphens, dot-separated,
 * each 1..63 octets, 255 in all) or an address literal ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]", checked by inet_pton). */
bool safe_helo_valid(const char *s);

#endif
