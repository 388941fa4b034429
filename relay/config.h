/* config: krelay's configuration file.  One "Name=value" per line, '#'
 * comments, an optional leading "O " so that sendmail.cf lines paste in
 * unchanged.  Pure code: parses and validates syntax; files named by the
 * options are checked by tls_ctx (check_*), not here. */
#ifndef KRELAY_CONFIG_H
#define KRELAY_CONFIG_H

#define CONFIG_LINE_MAX 4096 /* a configuration line, at most */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONFIG_LISTEN_MAX 16
#define CONFIG_LIST_MAX   64
#define CONFIG_ERR_MAX    1024

enum config_opt {
	OPT_CA_CERT_PATH,
	OPT_CA_CERT_FILE,
	OPT_SERVER_CERT_FILE,
	OPT_SERVER_KEY_FILE,
	OPT_CLIENT_CERT_FILE,
	OPT_CLIENT_KEY_FILE,
	OPT_LISTEN,
	OPT_QUEUE_DIRECTORY,
	OPT_HOSTNAME,
	OPT_WORKERS,
	OPT_MAX_MESSAGE_SIZE,
	OPT_MAX_RECIPIENTS,
	OPT_MAX_CONNECTIONS,
	OPT_RELAY_CLIENTS,
	OPT_RELAY_DOMAINS,
	OPT_RELAY_CLIENT_CERTS,
	OPT_TLS_MIN_VERSION,
	OPT_LOG_FILE,
	OPT_COMMAND_TIMEOUT,
	OPT_DATA_TIMEOUT,
	OPT_SMART_HOST,
	OPT_TRANSPORT_TABLE,
	OPT_DESTINATION_CONCURRENCY,
	OPT_MAX_MESSAGES_PER_CONNECTION,
	OPT_RETRY_SCHEDULE,
	OPT_QUEUE_LIFETIME,
	OPT_TLS_POLICY,
	OPT_TLS_POLICY_TABLE,
	OPT_DNS_SERVER,
	OPT_CONNECT_TIMEOUT,
	OPT_BODY_PATH,
	OPT_DELIVERY_MODE,
	OPT_TLS_MAX_VERSION,
	OPT_CIPHER_LIST,
	OPT_CIPHER_SUITES,
	OPT_SERVER_SSL_OPTIONS,
	OPT_CLIENT_SSL_OPTIONS,
	OPT_INTERACTIVE_TIMEOUT,
	OPT_MIN_DATA_RATE,
	OPT_MAX_CONNECTIONS_PER_CLIENT,
	OPT_LOG_LEVEL,
	OPT_RUN_AS_USER,
	OPT_RELAY_CLIENT_ISSUER,
	OPT_RELAY_CLIENT_SUBJECT,
	OPT_SENDMAIL_QUEUE,
	OPT_SENDMAIL_QUEUE_INTERVAL,
	OPT_DNSSEC_TRUST_ANCHOR_FILE,
	OPT_MTA_STS,
	OPT_MTA_STS_CA_FILE,
	OPT_TLSRPT,
	OPT_SHAPING_TABLE,
	OPT_THROTTLE_STORE,
	OPT_METRICS_LISTEN,
	OPT_COUNT
};

/* dane: authenticated TLS (RFC 7672) with a host that has usable, DNSSEC-
 * validated TLSA records, else as may; dane-only: such records required. */
enum config_tls_policy {
	TLS_POLICY_NONE,
	TLS_POLICY_MAY,
	TLS_POLICY_ENCRYPT,
	TLS_POLICY_VERIFY,
	TLS_POLICY_DANE,
	TLS_POLICY_DANE_ONLY,
	TLS_POLICY_COUNT
};
#define TLS_POLICY_IS_DANE(p) ((p) == TLS_POLICY_DANE || (p) == TLS_POLICY_DANE_ONLY)
/* Debian's root key (dns-root-data): DNSSECTrustAnchorFile's default */
#define CONFIG_TRUST_ANCHOR_DEFAULT "/usr/share/dns/root.key"
/* Debian's bundle of public CAs (ca-certificates): MTASTSCAFile's default */
#define CONFIG_PUBLIC_CA_DEFAULT "/etc/ssl/certs/ca-certificates.crt"
enum config_body_path { BODY_PATH_AUTO, BODY_PATH_SPLICE, BODY_PATH_COPY };

const char *config_tls_policy_name(int policy);
/* "none", "may", "encrypt", "verify", "dane", "dane-only" -> enum; -1 when
 * unknown. */
int config_tls_policy_parse(const char *s);

struct config_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	bool smtps;    /* implicit TLS (RFC 8314) */
	char text[80]; /* as written: "127.0.0.1:25", "[::1]:465" */
};

/* Sendmail's ServerSSLOptions / ClientSSLOptions: OpenSSL SSL_OP_* bits the
 * admin sets ("+SSL_OP_NO_TLSv1_3") or clears ("-SSL_OP_ENABLE_KTLS") on top
 * of krelay's own. */
struct config_ssl_options {
	uint64_t set, clear;
};

struct config_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct config {
	char *ca_cert_path;
	char *ca_cert_file;
	char *server_cert_file;
	char *server_key_file;
	char *client_cert_file;
	char *client_key_file;
	struct config_listen listen[CONFIG_LISTEN_MAX];
	size_t listen_count;
	char *queue_directory;
	char *hostname;
	unsigned workers; /* 0: one per online CPU */
	uint64_t max_message_size;
	unsigned max_recipients;
	unsigned max_connections;
	unsigned max_connections_per_client; /* 0: no limit; see config_client_limit */
	struct config_cidr relay_clients[CONFIG_LIST_MAX];
	size_t relay_clients_count;
	char *relay_domains[CONFIG_LIST_MAX]; /* lower case */
	size_t relay_domains_count;
	uint8_t relay_client_certs[CONFIG_LIST_MAX][32]; /* SHA-256 */
	size_t relay_client_certs_count;
	/* RelayClientIssuer=DN (repeatable): a verified client certificate from
	 * this issuer may relay (Sendmail's CertIssuer:DN RELAY).
	 * RelayClientSubject=ISSUER SUBJECT (repeatable): one from that issuer
	 * with that subject may (CertIssuer:ISSUER SUBJECT + CertSubject:SUBJECT
	 * RELAY).  Names as Sendmail's access map writes them: X509_NAME_oneline
	 * with space, '+', '\\', '<', '>', '(', ')', '"' and other bytes outside
	 * 0x21..0x7e as +HH; compared without regard to case. */
	char *relay_client_issuers[CONFIG_LIST_MAX];
	size_t relay_client_issuers_count;
	struct config_cert_name {
		char *issuer, *subject;
	} relay_client_subjects[CONFIG_LIST_MAX];
	size_t relay_client_subjects_count;
	int tls_min_version; /* TLS1_2_VERSION (0x0303) or TLS1_3_VERSION (0x0304) */
	int tls_max_version; /* the same; TLS1_3_VERSION by default */
	char *cipher_list;   /* TLS 1.2 cipher string (CipherList); NULL: krelay's default */
	char *cipher_suites; /* TLS 1.3 suites (CipherSuites); NULL: OpenSSL's default */
	struct config_ssl_options server_ssl_options, client_ssl_options;
	char *log_file;
	unsigned command_timeout_s;
	unsigned data_timeout_s;
	unsigned min_data_rate; /* bytes/s that extend a deadline by 1 s; 0: none */

	/* outbound */
	char *smart_host;      /* next hop text, checked by route_parse_hop */
	char *transport_table; /* file */
	unsigned destination_concurrency;
	unsigned max_messages_per_connection;
	unsigned retry_min_s, retry_max_s;
	unsigned queue_lifetime_s;
	int tls_policy; /* enum config_tls_policy */
	char *tls_policy_table;
	char *dns_server;
	char *trust_anchor_file; /* DNSSECTrustAnchorFile (never NULL after defaults) */
	bool mta_sts;            /* MTASTS=yes: RFC 8461 for may and dane destinations */
	char *mta_sts_ca_file;   /* MTASTSCAFile (never NULL after defaults) */
	bool tlsrpt;             /* TLSRPT=yes: record TLS results per domain (RFC 8460) */
	char *shaping_table;     /* ShapingTable: traffic shaping, egress sources (shaping.h) */
	/* ThrottleStore=redis://ADDR:PORT/: shaping's counters shared by a cluster */
	bool has_throttle_store;
	struct config_listen throttle_store;
	unsigned connect_timeout_s;
	int body_path;   /* enum config_body_path */
	bool queue_only; /* DeliveryMode=queueonly: deliver only on `krelay queue flush` */
	/* DeliveryMode=interactive: relay a message before replying to its
	 * client; it is made durable only when that does not fully succeed
	 * within interactive_timeout_s (Sendmail's SuperSafe=interactive) */
	bool interactive;
	unsigned interactive_timeout_s;
	/* LogLevel (Sendmail's name): LOG_LEVEL_DEFAULT logs every event;
	 * LOG_LEVEL_TRACE and up also trace each object's state changes */
	unsigned log_level;
	/* RunAsUser=user[:group] (Sendmail's name): who the relay becomes once
	 * its listeners, keys and queue are open; NULL: "krelay" when started as
	 * root, else whoever started it. */
	char *run_as_user;
	/* SendmailQueue=DIR (repeatable): a Sendmail mqueue whose messages the
	 * relay takes and delivers (sm_queue.c), every
	 * SendmailQueueInterval seconds */
	char *sendmail_queues[CONFIG_LIST_MAX];
	size_t sendmail_queues_count;
	unsigned sendmail_queue_interval_s;
	/* MetricsListen=ADDR:PORT: the Prometheus endpoint (metrics_srv.c);
	 * addrlen 0 when off (the default) */
	struct config_listen metrics_listen;

	char *path;               /* file it came from, NULL for built-in defaults */
	unsigned line[OPT_COUNT]; /* line that set each option, 0 if default */
};

/* "90", "90s", "15m", "1h", "5d" -> seconds (1 s to 366 days); 0 or -1. */
int config_duration(const char *val, unsigned *out);
const char *config_opt_name(enum config_opt opt);
/* Sessions one client address may hold: MaxConnectionsPerClient, never more
 * than MaxConnections; 0: no limit.  RelayClients are exempt (smtp_server). */
unsigned config_client_limit(const struct config *c);

/* Built-in defaults: listen on 127.0.0.1:25, relay for loopback only,
 * queue in /var/spool/krelay, TLS 1.2 minimum, no certificates. */
/* Hostname unset: this machine's name (gethostname), as Sendmail's $j. */
int config_fill_hostname(struct config *c);
void config_defaults(struct config *c);

/* Loads path over the defaults.  Returns 0, or -1 with err set to
 * "path:line: message" (or "path: message" when the file cannot be read). */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* Parses one line (without its newline).  Used by config_load and tests. */
int config_parse_line(struct config *c, const char *line, unsigned lineno, char *err,
                      size_t errlen);

void config_free(struct config *c);

/* "file:line" for messages about an option's value ("built-in default" when
 * it was not set in a file). */
void config_where(const struct config *c, enum config_opt opt, char *buf, size_t len);

/* krelay's TLS 1.2 cipher string when CipherList is not set: AEAD and
 * forward secret only, AES-128-GCM first (the cheapest per byte with AES-NI;
 * kTLS takes all of these). */
#define CONFIG_DEFAULT_CIPHER_LIST                                                                 \
	"ECDHE+AES128+AESGCM:ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
/* TLS 1.3 suites when CipherSuites is not set: OpenSSL's three, AES-128-GCM
 * first for the same reason. */
#define CONFIG_DEFAULT_CIPHER_SUITES                                                               \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* The protocol range one side (server: ServerSSLOptions, else
 * ClientSSLOptions) may negotiate, from TLSMinVersion, TLSMaxVersion and
 * SSL_OP_NO_TLSv1_2/1_3.  Returns 0, or -1 with err naming the options that
 * leave no version. */
int config_tls_versions(const struct config *c, bool server, int *min, int *max, char *err,
                        size_t errlen);

bool config_cidr_match(const struct config_cidr *n, const struct sockaddr *sa);
bool config_relay_client(const struct config *c, const struct sockaddr *sa);
/* Case-insensitive exact match of a recipient domain against RelayDomains. */
bool config_relay_domain(const struct config *c, const char *domain);
/* Whether a verified client certificate may relay: its SHA-256 listed in
 * RelayClientCerts, or its issuer (RelayClientIssuer), or its issuer and
 * subject (RelayClientSubject), the names in Sendmail's +HH form. */
bool config_relay_cert(const struct config *c, const uint8_t sha256[32], const char *issuer,
                       const char *subject);

#endif
