/* test_config: config.c against real files written under /tmp. */
#include "config.h"
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* Path of the file the last load() wrote; error messages must start with it. */
static char tmp_path[64];

static int write_file(const char *text)
{
	size_t len = strlen(text);
	int fd;

	strcpy(tmp_path, "/tmp/test_config.XXXXXX");
	fd = mkstemp(tmp_path);
	if (fd < 0)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return close(fd);
}

/* Writes text to a fresh temp file and loads it over the defaults. */
static int load(struct config *c, const char *text, char *err)
{
	int rc;

	err[0] = '\0';
	config_defaults(c);
	if (write_file(text) < 0)
		return -2;
	rc = config_load(c, tmp_path, err, CONFIG_ERR_MAX);
	unlink(tmp_path);
	return rc;
}

static int load_ok(struct config *c, const char *text)
{
	char err[CONFIG_ERR_MAX];
	int rc = load(c, text, err);

	if (rc != 0)
		printf("  unexpected error: %s\n", err);
	return rc == 0;
}

/* True when loading text fails with "PATH:LINE: " followed by exactly msg, or
 * (when exact is false) by something containing msg. */
static int fails(const char *text, unsigned line, const char *msg, int exact)
{
	struct config c;
	char err[CONFIG_ERR_MAX], prefix[128];
	int rc = load(&c, text, err), ok;

	snprintf(prefix, sizeof(prefix), "%s:%u: ", tmp_path, line);
	ok = rc == -1 && unit_prefix(err, prefix) &&
	     (exact ? strcmp(err + strlen(prefix), msg) == 0 : strstr(err, msg) != NULL);
	if (!ok)
		printf("  rc %d, err \"%s\"; wanted \"%s%s\"\n", rc, err, prefix, msg);
	config_free(&c);
	return ok;
}

#define FAILS_EXACT(text, line, msg) CHECK(fails(text, line, msg, 1))
#define FAILS_WITH(text, line, msg)  CHECK(fails(text, line, msg, 0))

static struct sockaddr_storage sa_of(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) != 1)
			printf("  bad test address %s\n", ip);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1)
			printf("  bad test address %s\n", ip);
	}
	return ss;
}

static bool client_ok(const struct config *c, const char *ip)
{
	struct sockaddr_storage ss = sa_of(ip);

	return config_relay_client(c, (const struct sockaddr *)&ss);
}

static bool net_match(const char *net, const char *ip)
{
	struct config c;
	char line[256], err[CONFIG_ERR_MAX];
	bool m;

	config_defaults(&c);
	snprintf(line, sizeof(line), "RelayClients=%s", net);
	if (config_parse_line(&c, line, 1, err, sizeof(err)) != 0) {
		printf("  %s\n", err);
		config_free(&c);
		return false;
	}
	m = client_ok(&c, ip);
	config_free(&c);
	return m;
}

#define FP_COLON                                                                                   \
	"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:"                                         \
	"A0:B1:C2:D3:E4:F5:16:27:38:49:5A:6B:7C:8D:9E:FF"
#define FP_BARE "000102030405060708090a0b0c0d0e0fa0b1c2d3e4f5162738495a6b7c8d9eff"

static const uint8_t fp_bytes[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0x16, 0x27, 0x38, 0x49, 0x5a, 0x6b, 0x7c, 0x8d, 0x9e, 0xff};

TEST(defaults)
{
	struct config c;
	const struct sockaddr_in *sin;

	config_defaults(&c);
	CHECK(c.log_level == 9); /* Sendmail's default LogLevel */
	CHECK(c.listen_count == 1);
	CHECK_STR(c.listen[0].text, "127.0.0.1:25");
	CHECK(!c.listen[0].smtps);
	sin = (const struct sockaddr_in *)&c.listen[0].addr;
	CHECK(sin->sin_family == AF_INET);
	CHECK(sin->sin_port == htons(25));
	CHECK(sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
	CHECK(c.listen[0].addrlen == sizeof(struct sockaddr_in));
	CHECK_STR(c.queue_directory, "/var/spool/krelay");
	CHECK(c.hostname == NULL && c.ca_cert_path == NULL && c.server_cert_file == NULL);
	CHECK(c.log_file == NULL && c.path == NULL);
	CHECK(c.workers == 0);
	CHECK(c.max_message_size == 10240000);
	CHECK(c.max_recipients == 1000);
	CHECK(c.max_connections == 1000);
	CHECK(c.tls_min_version == TLS1_2_VERSION);
	CHECK(c.command_timeout_s == 300 && c.data_timeout_s == 300);
	CHECK(c.relay_domains_count == 0 && c.relay_client_certs_count == 0);
	CHECK(c.relay_clients_count == 2);
	CHECK(client_ok(&c, "127.0.0.1") && client_ok(&c, "127.255.1.2"));
	CHECK(client_ok(&c, "::1"));
	CHECK(!client_ok(&c, "128.0.0.1") && !client_ok(&c, "::2"));
	/* every other option's default, as the README's table gives it */
	CHECK(c.ca_cert_file == NULL && c.server_key_file == NULL);
	CHECK(c.client_cert_file == NULL && c.client_key_file == NULL);
	CHECK(c.max_connections_per_client == 50);
	CHECK(c.tls_max_version == TLS1_3_VERSION);
	CHECK(c.cipher_list == NULL && c.cipher_suites == NULL); /* krelay's, OpenSSL's */
	CHECK(c.server_ssl_options.set == 0 && c.server_ssl_options.clear == 0);
	CHECK(c.client_ssl_options.set == 0 && c.client_ssl_options.clear == 0);
	CHECK(c.min_data_rate == 500);
	CHECK(c.smart_host == NULL && c.transport_table == NULL);
	CHECK(c.destination_concurrency == 20);
	CHECK(c.max_messages_per_connection == 1000);
	CHECK(c.retry_min_s == 60 && c.retry_max_s == 3600);
	CHECK(c.queue_lifetime_s == 5 * 86400);
	CHECK(c.tls_policy == TLS_POLICY_MAY);
	CHECK_STR(c.trust_anchor_file, "/usr/share/dns/root.key");
	CHECK(!c.mta_sts && !c.tlsrpt);
	CHECK_STR(c.mta_sts_ca_file, "/etc/ssl/certs/ca-certificates.crt");
	CHECK(c.tls_policy_table == NULL && c.dns_server == NULL);
	CHECK(c.connect_timeout_s == 30);
	CHECK(c.body_path == BODY_PATH_AUTO);
	CHECK(!c.queue_only && !c.interactive); /* DeliveryMode=background */
	CHECK(c.interactive_timeout_s == 30);
	CHECK(c.run_as_user == NULL); /* krelay when started as root */
	for (int i = 0; i < OPT_COUNT; i++)
		CHECK(c.line[i] == 0);
	config_free(&c);
}

TEST(opt_names)
{
	static const char *const names[OPT_COUNT] = {
	    "CACertPath",
	    "CACertFile",
	    "ServerCertFile",
	    "ServerKeyFile",
	    "ClientCertFile",
	    "ClientKeyFile",
	    "Listen",
	    "QueueDirectory",
	    "Hostname",
	    "Workers",
	    "MaxMessageSize",
	    "MaxRecipients",
	    "MaxConnections",
	    "RelayClients",
	    "RelayDomains",
	    "RelayClientCerts",
	    "TLSMinVersion",
	    "LogFile",
	    "CommandTimeout",
	    "DataTimeout",
	    "SmartHost",
	    "TransportTable",
	    "DestinationConcurrency",
	    "MaxMessagesPerConnection",
	    "RetrySchedule",
	    "QueueLifetime",
	    "TLSPolicy",
	    "TLSPolicyTable",
	    "DNSServer",
	    "ConnectTimeout",
	    "BodyPath",
	    "DeliveryMode",
	    "TLSMaxVersion",
	    "CipherList",
	    "CipherSuites",
	    "ServerSSLOptions",
	    "ClientSSLOptions",
	    "InteractiveTimeout",
	    "MinDataRate",
	    "MaxConnectionsPerClient",
	    "LogLevel",
	    "RunAsUser",
	    "RelayClientIssuer",
	    "RelayClientSubject",
	    "SendmailQueue",
	    "SendmailQueueInterval",
	    "DNSSECTrustAnchorFile",
	    "MTASTS",
	    "MTASTSCAFile",
	    "TLSRPT",
	    "ShapingTable",
	    "ThrottleStore",
	    "MetricsListen",
	};

	for (int i = 0; i < OPT_COUNT; i++)
		CHECK_STR(config_opt_name((enum config_opt)i), names[i]);
}

TEST(seed_sendmail_lines)
{
	struct config c;

	CHECK(load_ok(&c, "O CACertPath=/etc/mail/cert\n"
	                  "O CACertFile=/etc/mail/cert/server.crt\n"
	                  "O ServerCertFile=/etc/mail/cert/server.crt\n"
	                  "O ServerKeyFile=/etc/mail/cert/server.key.open\n"
	                  "O ClientKeyFile=/etc/mail/cert/server.crt \n"));
	CHECK_STR(c.ca_cert_path, "/etc/mail/cert");
	CHECK_STR(c.ca_cert_file, "/etc/mail/cert/server.crt");
	CHECK_STR(c.server_cert_file, "/etc/mail/cert/server.crt");
	CHECK_STR(c.server_key_file, "/etc/mail/cert/server.key.open");
	CHECK_STR(c.client_key_file, "/etc/mail/cert/server.crt");
	CHECK(c.client_cert_file == NULL);
	CHECK(c.line[OPT_CA_CERT_PATH] == 1 && c.line[OPT_CLIENT_KEY_FILE] == 5);
	CHECK(c.line[OPT_CLIENT_CERT_FILE] == 0);
	CHECK_STR(c.path, tmp_path);
	config_free(&c);
}

TEST(sendmail_queue)
{
	struct config c;

	CHECK(load_ok(&c, ""));
	CHECK(c.sendmail_queues_count == 0 && c.sendmail_queue_interval_s == 10);
	config_free(&c);
	CHECK(load_ok(&c, "SendmailQueue=/a\nSendmailQueue=/b\nSendmailQueueInterval=5s\n"));
	CHECK(c.sendmail_queues_count == 2 && c.sendmail_queue_interval_s == 5);
	CHECK_STR(c.sendmail_queues[1], "/b");
	config_free(&c);
	CHECK(fails("SendmailQueue=mqueue\n", 1, "not an absolute path", 0));
	CHECK(fails("SendmailQueue=/a\nSendmailQueue=/a\n", 2, "/a is named twice", 0));
	CHECK(fails("SendmailQueueInterval=0s\n", 1, "is not a duration", 0));
	CHECK(fails("SendmailQueueInterval=2d\n", 1, "outside", 0));
}

/* MetricsListen: off by default; one ADDR:PORT, IPv4 or [IPv6]; the last
 * line wins. */
TEST(metrics_listen)
{
	struct config c;

	CHECK(load_ok(&c, ""));
	CHECK(c.metrics_listen.addrlen == 0);
	config_free(&c);
	CHECK(load_ok(&c, "MetricsListen=127.0.0.1:9125\n"));
	CHECK_STR(c.metrics_listen.text, "127.0.0.1:9125");
	CHECK(c.metrics_listen.addr.ss_family == AF_INET);
	CHECK(c.metrics_listen.addrlen == sizeof(struct sockaddr_in));
	CHECK(ntohs(((struct sockaddr_in *)&c.metrics_listen.addr)->sin_port) == 9125);
	CHECK(c.line[OPT_METRICS_LISTEN] == 1);
	config_free(&c);
	CHECK(load_ok(&c, "MetricsListen=127.0.0.1:9125\nMetricsListen=[::1]:9126\n"));
	CHECK_STR(c.metrics_listen.text, "[::1]:9126");
	CHECK(c.metrics_listen.addrlen == sizeof(struct sockaddr_in6));
	config_free(&c);
	CHECK(fails("MetricsListen=127.0.0.1\n", 1, "MetricsListen: '127.0.0.1' has no port", 0));
	CHECK(fails("MetricsListen=::1:9125\n", 1, "must be in brackets", 0));
	CHECK(fails("MetricsListen=localhost:9125\n", 1, "is not an IPv4 address", 0));
	CHECK(fails("MetricsListen=127.0.0.1:0\n", 1, "port must be a number 1..65535", 0));
	CHECK(
	    fails("MetricsListen=127.0.0.1:9125 smtps\n", 1, "one ADDR:PORT, nothing after it", 0));
	CHECK(fails("MetricsListen=\n", 1, "MetricsListen: empty value", 1));
}

TEST(every_option)
{
	struct config c;

	CHECK(load_ok(&c,
	              "CACertPath=/a\nCACertFile=/b\nServerCertFile=/c\nServerKeyFile=/d\n"
	              "ClientCertFile=/e\nClientKeyFile=/f\nListen=10.0.0.1:2525\n"
	              "QueueDirectory=/q\nHostname=mx1.Example.org\nWorkers=8\n"
	              "MaxMessageSize=20m\nMaxRecipients=50\nMaxConnections=2000\n"
	              "RelayClients=10.0.0.0/8\nRelayDomains=Example.ORG\n"
	              "RelayClientCerts=" FP_COLON "\nTLSMinVersion=TLSv1.3\n"
	              "LogFile=relay.log\nCommandTimeout=60\nDataTimeout=600\n"
	              "SmartHost=[127.0.0.1]:2526\nTransportTable=/t\nDestinationConcurrency=5\n"
	              "MaxMessagesPerConnection=7\nRetrySchedule=10s,2m\nQueueLifetime=2d\n"
	              "TLSPolicy=verify\nTLSPolicyTable=/p\nDNSServer=127.0.0.1:5353\n"
	              "ConnectTimeout=1m\nBodyPath=copy\nDeliveryMode=q\nTLSMaxVersion=TLSv1.3\n"
	              "CipherList=ECDHE+AESGCM\nCipherSuites=TLS_AES_128_GCM_SHA256\n"
	              "ServerSSLOptions=+SSL_OP_NO_TICKET\nClientSSLOptions=-SSL_OP_ENABLE_KTLS\n"
	              "InteractiveTimeout=2m\nMinDataRate=1000\nMaxConnectionsPerClient=10\n"
	              "LogLevel=12\n"
	              "RunAsUser=mail:mail\n"
	              "RelayClientIssuer=/C=XX/O=Relay+20Lab/CN=CA\n"
	              "RelayClientSubject=/CN=CA /CN=client.lab.test\n"
	              "SendmailQueue=/var/spool/mqueue\n"
	              "SendmailQueueInterval=1m\n"
	              "DNSSECTrustAnchorFile=/k\n"
	              "MTASTS=yes\n"
	              "MTASTSCAFile=/cas\n"
	              "TLSRPT=yes\n"
	              "ShapingTable=/s\n"
	              "ThrottleStore=redis://127.0.0.1:6379/\n"
	              "MetricsListen=[::1]:9125\n"));
	CHECK(c.log_level == 12);
	CHECK_STR(c.metrics_listen.text, "[::1]:9125");
	CHECK(c.metrics_listen.addr.ss_family == AF_INET6);
	CHECK_STR(c.trust_anchor_file, "/k");
	CHECK(c.mta_sts);
	CHECK_STR(c.mta_sts_ca_file, "/cas");
	CHECK(c.tlsrpt);
	CHECK_STR(c.shaping_table, "/s");
	CHECK(c.has_throttle_store && c.throttle_store.addrlen == sizeof(struct sockaddr_in));
	CHECK_STR(c.throttle_store.text, "127.0.0.1:6379");
	CHECK(c.sendmail_queues_count == 1 && c.sendmail_queue_interval_s == 60);
	CHECK_STR(c.sendmail_queues[0], "/var/spool/mqueue");
	CHECK_STR(c.run_as_user, "mail:mail");
	CHECK(c.relay_client_issuers_count == 1 && c.relay_client_subjects_count == 1);
	CHECK_STR(c.ca_cert_path, "/a");
	CHECK_STR(c.ca_cert_file, "/b");
	CHECK_STR(c.server_cert_file, "/c");
	CHECK_STR(c.server_key_file, "/d");
	CHECK_STR(c.client_cert_file, "/e");
	CHECK_STR(c.client_key_file, "/f");
	CHECK(c.listen_count == 1);
	CHECK_STR(c.listen[0].text, "10.0.0.1:2525");
	CHECK_STR(c.queue_directory, "/q");
	CHECK_STR(c.hostname, "mx1.Example.org");
	CHECK(c.workers == 8);
	CHECK(c.max_message_size == 20ULL << 20);
	CHECK(c.max_recipients == 50);
	CHECK(c.max_connections == 2000);
	CHECK(c.relay_clients_count == 1 && client_ok(&c, "10.9.8.7"));
	CHECK(!client_ok(&c, "127.0.0.1"));
	CHECK(c.relay_domains_count == 1);
	CHECK_STR(c.relay_domains[0], "example.org");
	CHECK(c.relay_client_certs_count == 1 && config_relay_cert(&c, fp_bytes, "", ""));
	CHECK(c.tls_min_version == TLS1_3_VERSION);
	CHECK_STR(c.log_file, "relay.log");
	CHECK(c.command_timeout_s == 60 && c.data_timeout_s == 600);
	CHECK_STR(c.smart_host, "[127.0.0.1]:2526");
	CHECK_STR(c.transport_table, "/t");
	CHECK(c.destination_concurrency == 5 && c.max_messages_per_connection == 7);
	CHECK(c.retry_min_s == 10 && c.retry_max_s == 120);
	CHECK(c.queue_lifetime_s == 2 * 86400);
	CHECK(c.tls_policy == TLS_POLICY_VERIFY);
	CHECK_STR(c.tls_policy_table, "/p");
	CHECK_STR(c.dns_server, "127.0.0.1:5353");
	CHECK(c.connect_timeout_s == 60 && c.body_path == BODY_PATH_COPY);
	CHECK(c.queue_only);
	CHECK(c.tls_max_version == TLS1_3_VERSION);
	CHECK_STR(c.cipher_list, "ECDHE+AESGCM");
	CHECK_STR(c.cipher_suites, "TLS_AES_128_GCM_SHA256");
	CHECK(c.server_ssl_options.set == SSL_OP_NO_TICKET && c.server_ssl_options.clear == 0);
	CHECK(c.client_ssl_options.set == 0 && c.client_ssl_options.clear == SSL_OP_ENABLE_KTLS);
	CHECK(c.interactive_timeout_s == 120 && !c.interactive);
	CHECK(c.max_connections_per_client == 10 && config_client_limit(&c) == 10);
	CHECK(c.min_data_rate == 1000);
	for (int i = 0; i < OPT_COUNT; i++)
		CHECK(c.line[i] == (unsigned)i + 1);
	config_free(&c);
}

/* The per-client limit never exceeds MaxConnections; 0 means none. */
TEST(client_limit)
{
	struct config c;
	char err[256];

	config_defaults(&c);
	CHECK(config_client_limit(&c) == 50 && c.min_data_rate == 500);
	CHECK(config_parse_line(&c, "MaxConnections=20", 1, err, sizeof(err)) == 0);
	CHECK(config_client_limit(&c) == 20);
	CHECK(config_parse_line(&c, "MaxConnectionsPerClient=0", 2, err, sizeof(err)) == 0);
	CHECK(config_client_limit(&c) == 0);
	config_free(&c);
}

TEST(comments_and_blank_lines)
{
	struct config c;

	CHECK(load_ok(&c, "# krelay\n"
	                  "\n"
	                  "   \t\n"
	                  "   # indented comment\n"
	                  "Workers=4  # four\n"
	                  "MaxRecipients = 7\t# tab before\n"
	                  "\tLogFile = /var/log/a#b \n"
	                  "CACertPath=/x #\n"
	                  "O  CACertFile=/y\r\n"
	                  "DataTimeout=9"));
	CHECK(c.workers == 4 && c.line[OPT_WORKERS] == 5);
	CHECK(c.max_recipients == 7);
	CHECK_STR(c.log_file, "/var/log/a#b");
	CHECK_STR(c.ca_cert_path, "/x");
	CHECK_STR(c.ca_cert_file, "/y");
	CHECK(c.data_timeout_s == 9 && c.line[OPT_DATA_TIMEOUT] == 10);
	config_free(&c);
}

TEST(blank_line_is_not_read_past_its_end)
{
	/* a line of blanks as long as a line may be: trimmed to nothing at the
	 * very end of the parser's buffer, where the comment scan used to start
	 * one byte past it (ASan: stack-buffer-overflow) */
	struct config c;
	char line[CONFIG_LINE_MAX + 1], err[256];

	memset(line, ' ', CONFIG_LINE_MAX);
	line[CONFIG_LINE_MAX] = '\0';
	config_defaults(&c);
	CHECK(config_parse_line(&c, line, 1, err, sizeof(err)) == 0);
	CHECK(config_parse_line(&c, "", 2, err, sizeof(err)) == 0);
	config_free(&c);
}

TEST(empty_file)
{
	struct config c;

	CHECK(load_ok(&c, ""));
	CHECK(c.listen_count == 1 && c.relay_clients_count == 2);
	CHECK_STR(c.path, tmp_path);
	config_free(&c);
}

TEST(unknown_option)
{
	FAILS_EXACT("Workers=2\nDaemonPortOptions=Name=MTA\n", 2,
	            "unknown option 'DaemonPortOptions'");
	FAILS_EXACT("OWorkers=2\n", 1, "unknown option 'OWorkers'");
	FAILS_EXACT("=5\n", 1, "no option name before '='");
}

TEST(option_names_are_case_sensitive)
{
	FAILS_EXACT("\n\n\n\n\n\nO ServerCertFIle=/etc/mail/cert/server.crt\n", 7,
	            "unknown option 'ServerCertFIle'");
	FAILS_EXACT("workers=4\n", 1, "unknown option 'workers'");
	FAILS_EXACT("o Workers=4\n", 1, "unknown option 'o Workers'");
}

TEST(missing_equals)
{
	FAILS_EXACT("Workers=1\n#\n\nfoo\n", 4, "line has no '=': 'foo'");
	FAILS_EXACT("Workers 4 # comment\n", 1, "line has no '=': 'Workers 4'");
	FAILS_EXACT("O\n", 1, "line has no '=': 'O'");
}

TEST(empty_value)
{
	FAILS_EXACT("Workers=\n", 1, "Workers: empty value");
	FAILS_EXACT("LogFile=   # nothing\n", 1, "LogFile: empty value");
	FAILS_EXACT("\nRelayClients=\n", 2, "RelayClients: empty value");
	FAILS_EXACT("O Hostname= \n", 1, "Hostname: empty value");
}

TEST(bad_numbers)
{
	FAILS_EXACT("\n\nWorkers=abc\n", 3, "Workers: 'abc' is not a number");
	FAILS_EXACT("Workers=-1\n", 1, "Workers: '-1' is not a number");
	FAILS_EXACT("Workers=+4\n", 1, "Workers: '+4' is not a number");
	FAILS_EXACT("Workers=4x\n", 1, "Workers: '4x' is not a number");
	FAILS_EXACT("Workers=0x10\n", 1, "Workers: '0x10' is not a number");
	FAILS_EXACT("MaxRecipients=1 000\n", 1, "MaxRecipients: '1 000' is not a number");
	FAILS_EXACT("CommandTimeout=5s\n", 1, "CommandTimeout: '5s' is not a number");
}

TEST(numbers_out_of_range)
{
	FAILS_EXACT("Workers=0\n", 1, "Workers: '0' is out of range (1..256)");
	FAILS_EXACT("Workers=257\n", 1, "Workers: '257' is out of range (1..256)");
	FAILS_WITH("Workers=99999999999999999999999999\n", 1, "is out of range");
	FAILS_WITH("MaxRecipients=0\n", 1, "MaxRecipients: '0' is out of range");
	FAILS_WITH("MaxRecipients=100001\n", 1, "out of range (1..100000)");
	FAILS_WITH("MaxConnections=0\n", 1, "MaxConnections: '0' is out of range");
	FAILS_WITH("MaxConnections=1000001\n", 1, "out of range (1..1000000)");
	FAILS_WITH("CommandTimeout=0\n", 1, "CommandTimeout: '0' is out of range");
	FAILS_WITH("CommandTimeout=86401\n", 1, "out of range (1..86400)");
	FAILS_WITH("DataTimeout=0\n", 1, "DataTimeout: '0' is out of range");
	FAILS_WITH("DataTimeout=86401\n", 1, "out of range (1..86400)");
}

TEST(numbers_at_limits)
{
	struct config c;

	CHECK(load_ok(&c, "Workers=256\nMaxRecipients=100000\nMaxConnections=1000000\n"
	                  "CommandTimeout=86400\nDataTimeout=1\n"));
	CHECK(c.workers == 256 && c.max_recipients == 100000 && c.max_connections == 1000000);
	CHECK(c.command_timeout_s == 86400 && c.data_timeout_s == 1);
	config_free(&c);
	CHECK(load_ok(&c, "Workers=1\nMaxRecipients=1\nMaxConnections=1\nCommandTimeout=1\n"
	                  "Workers=007\n"));
	CHECK(c.workers == 7 && c.line[OPT_WORKERS] == 5);
	CHECK(c.max_recipients == 1 && c.max_connections == 1 && c.command_timeout_s == 1);
	config_free(&c);
}

TEST(max_message_size)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} good[] = {
	    {"1024", 1024},         {"1k", 1024},          {"1K", 1024},
	    {"10240000", 10240000}, {"25m", 25ULL << 20},  {"25M", 25ULL << 20},
	    {"2g", 2ULL << 30},     {"1024G", 1ULL << 40}, {"1099511627776", 1ULL << 40},
	};
	struct config c;
	char line[64], err[CONFIG_ERR_MAX];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		config_defaults(&c);
		snprintf(line, sizeof(line), "MaxMessageSize=%s", good[i].text);
		CHECK(config_parse_line(&c, line, 1, err, sizeof(err)) == 0);
		CHECK(c.max_message_size == good[i].bytes);
		config_free(&c);
	}
	FAILS_EXACT("MaxMessageSize=1023\n", 1,
	            "MaxMessageSize: '1023' is out of range (1024..1099511627776 bytes)");
	FAILS_WITH("MaxMessageSize=0k\n", 1, "out of range");
	FAILS_WITH("MaxMessageSize=1025g\n", 1, "out of range");
	FAILS_WITH("MaxMessageSize=1099511627777\n", 1, "out of range");
	FAILS_WITH("MaxMessageSize=99999999999999999999999g\n", 1, "out of range");
	FAILS_WITH("MaxMessageSize=10q\n", 1, "MaxMessageSize: '10q' is not a size");
	FAILS_WITH("MaxMessageSize=k\n", 1, "'k' is not a size");
	FAILS_WITH("MaxMessageSize=10kb\n", 1, "'10kb' is not a size");
	FAILS_WITH("MaxMessageSize=-5m\n", 1, "is not a size");
}

TEST(path_options_replace)
{
	struct config c;

	CHECK(load_ok(&c, "LogFile=/a\nLogFile=/b\nQueueDirectory=/spool/one\n"
	                  "QueueDirectory=/spool/two\nServerKeyFile=/k with space.pem\n"));
	CHECK_STR(c.log_file, "/b");
	CHECK(c.line[OPT_LOG_FILE] == 2);
	CHECK_STR(c.queue_directory, "/spool/two");
	CHECK_STR(c.server_key_file, "/k with space.pem");
	config_free(&c);
}

TEST(queue_directory_must_be_absolute)
{
	FAILS_EXACT("QueueDirectory=spool/krelay\n", 1,
	            "QueueDirectory: 'spool/krelay' is not an absolute path");
	FAILS_WITH("Workers=2\nQueueDirectory=./q\n", 2, "'./q' is not an absolute path");
}

TEST(hostname)
{
	struct config c;
	char longname[300], line[320];

	CHECK(load_ok(&c, "Hostname=Mail-1.example.COM\n"));
	CHECK_STR(c.hostname, "Mail-1.example.COM");
	config_free(&c);
	CHECK(load_ok(&c, "Hostname=localhost\nHostname=a.b\n"));
	CHECK_STR(c.hostname, "a.b");
	config_free(&c);

	FAILS_WITH("Hostname=mail..example.com\n", 1, "Hostname: 'mail..example.com'");
	FAILS_WITH("Hostname=mail..example.com\n", 1, "empty label");
	FAILS_WITH("Hostname=.example.com\n", 1, "empty label");
	FAILS_WITH("Hostname=example.com.\n", 1, "empty label");
	FAILS_WITH("Hostname=mail_1.example.com\n", 1, "'_'");
	FAILS_WITH("Hostname=mail example.com\n", 1, "' '");
	FAILS_WITH("Hostname=-mail.example.com\n", 1, "'-'");
	FAILS_WITH("Hostname=mail-.example.com\n", 1, "'-'");

	/* 4 labels of 63 = 255 characters: too long; 253 is fine. */
	memset(longname, 'a', sizeof(longname));
	for (int i = 63; i < 255; i += 64)
		longname[i] = '.';
	longname[255] = '\0';
	snprintf(line, sizeof(line), "Hostname=%s\n", longname);
	FAILS_WITH(line, 1, "longer than 253");
	longname[253] = '\0';
	snprintf(line, sizeof(line), "Hostname=%s\n", longname);
	CHECK(load_ok(&c, line));
	CHECK(c.hostname != NULL && strlen(c.hostname) == 253);
	config_free(&c);
	memset(longname, 'b', 64);
	longname[64] = '\0';
	snprintf(line, sizeof(line), "Hostname=%s.com\n", longname);
	FAILS_WITH(line, 1, "label longer than 63");
}

TEST(listen_first_replaces_default_then_appends)
{
	struct config c;

	CHECK(load_ok(&c, "Workers=1\nListen=0.0.0.0:25\nListen=[::]:25\nListen=127.0.0.1:587\n"));
	CHECK(c.listen_count == 3);
	CHECK_STR(c.listen[0].text, "0.0.0.0:25");
	CHECK_STR(c.listen[1].text, "[::]:25");
	CHECK_STR(c.listen[2].text, "127.0.0.1:587");
	CHECK(c.line[OPT_LISTEN] == 4);
	config_free(&c);

	/* One line that repeats the default address is not a duplicate of it. */
	CHECK(load_ok(&c, "Listen=127.0.0.1:25\n"));
	CHECK(c.listen_count == 1);
	CHECK_STR(c.listen[0].text, "127.0.0.1:25");
	config_free(&c);
}

TEST(listen_ipv4_sockaddr)
{
	struct config c;
	const struct sockaddr_in *sin;

	CHECK(load_ok(&c, "Listen=192.0.2.10:2525\n"));
	sin = (const struct sockaddr_in *)&c.listen[0].addr;
	CHECK(c.listen[0].addrlen == sizeof(struct sockaddr_in));
	CHECK(sin->sin_family == AF_INET);
	CHECK(sin->sin_port == htons(2525));
	CHECK(ntohl(sin->sin_addr.s_addr) == 0xc000020aU);
	CHECK(!c.listen[0].smtps);
	config_free(&c);
}

TEST(listen_ipv6_sockaddr)
{
	static const uint8_t want[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
	                                 0,    0,    0,    0,    0, 0, 0, 0x25};
	struct config c;
	const struct sockaddr_in6 *sin6;

	CHECK(load_ok(&c, "Listen=[2001:db8::25]:465 smtps\nListen=[::1]:25\n"));
	CHECK(c.listen_count == 2);
	sin6 = (const struct sockaddr_in6 *)&c.listen[0].addr;
	CHECK(c.listen[0].addrlen == sizeof(struct sockaddr_in6));
	CHECK(sin6->sin6_family == AF_INET6);
	CHECK(sin6->sin6_port == htons(465));
	CHECK(memcmp(sin6->sin6_addr.s6_addr, want, 16) == 0);
	CHECK_STR(c.listen[0].text, "[2001:db8::25]:465");
	sin6 = (const struct sockaddr_in6 *)&c.listen[1].addr;
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	CHECK(sin6->sin6_port == htons(25));
	config_free(&c);
}

TEST(listen_smtps_flag)
{
	struct config c;

	CHECK(load_ok(&c, "Listen=0.0.0.0:465 smtps\nListen=0.0.0.0:25\n"
	                  "Listen=[::]:465\tSMTPS  # implicit TLS\nListen=[::]:26 SmtpS\n"));
	CHECK(c.listen_count == 4);
	CHECK(c.listen[0].smtps && !c.listen[1].smtps && c.listen[2].smtps && c.listen[3].smtps);
	CHECK_STR(c.listen[0].text, "0.0.0.0:465");
	CHECK_STR(c.listen[2].text, "[::]:465");
	config_free(&c);
}

TEST(listen_errors)
{
	FAILS_WITH("Listen=127.0.0.1\n", 1, "Listen: '127.0.0.1' has no port");
	FAILS_WITH("Listen=[::1]\n", 1, "'[::1]' has no port");
	FAILS_WITH("Listen=127.0.0.1:\n", 1, "port must be a number 1..65535");
	FAILS_WITH("Listen=127.0.0.1:0\n", 1, "'127.0.0.1:0': port must be a number 1..65535");
	FAILS_WITH("Listen=127.0.0.1:70000\n", 1, "port must be a number 1..65535");
	FAILS_WITH("Listen=127.0.0.1:65536\n", 1, "port must be");
	FAILS_WITH("Listen=127.0.0.1:smtp\n", 1, "port must be");
	FAILS_WITH("Listen=[::g]:25\n", 1, "'::g' is not an IPv6 address");
	FAILS_WITH("Listen=[1:2:3:4:5:6:7:8:9]:25\n", 1, "is not an IPv6 address");
	FAILS_WITH("Listen=[::1:25\n", 1, "no closing ']'");
	FAILS_WITH("Listen=::1:25\n", 1, "must be in brackets");
	FAILS_WITH("Listen=[127.0.0.1]:25\n", 1, "is not an IPv6 address");
	FAILS_WITH("Listen=256.0.0.1:25\n", 1, "'256.0.0.1' is not an IPv4 address");
	FAILS_WITH("Listen=localhost:25\n", 1, "'localhost' is not an IPv4 address");
	FAILS_WITH("Listen=:25\n", 1, "is not an IPv4 address");
	FAILS_WITH("Workers=1\nListen=127.0.0.1:25 tls\n", 2, "Listen: unknown word 'tls'");
	FAILS_WITH("Listen=127.0.0.1:25 smtps extra\n", 1, "too many words");
	FAILS_WITH("Listen=127.0.0.1:25\nListen=127.0.0.1:25 smtps\n", 2, "already listed");
	/* A failed first Listen line must not have dropped the default. */
	{
		struct config c;
		char err[CONFIG_ERR_MAX];

		CHECK(load(&c, "Listen=127.0.0.1:0\n", err) == -1);
		CHECK(c.listen_count == 1 && c.line[OPT_LISTEN] == 0);
		config_free(&c);
	}
}

TEST(listen_too_many)
{
	char text[2048];
	size_t off = 0;
	struct config c;

	for (int i = 0; i < CONFIG_LISTEN_MAX; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "Listen=10.0.0.1:%d\n",
		                        1000 + i);
	CHECK(load_ok(&c, text));
	CHECK(c.listen_count == CONFIG_LISTEN_MAX);
	CHECK_STR(c.listen[CONFIG_LISTEN_MAX - 1].text, "10.0.0.1:1015");
	config_free(&c);
	snprintf(text + off, sizeof(text) - off, "Listen=10.0.0.1:2000\n");
	FAILS_WITH(text, CONFIG_LISTEN_MAX + 1, "Listen: too many listeners (at most 16)");
}

TEST(tls_min_version)
{
	static const struct {
		const char *text;
		int version;
	} good[] = {
	    {"TLSv1.2", TLS1_2_VERSION}, {"tlsv1.2", TLS1_2_VERSION}, {"TLS1.2", TLS1_2_VERSION},
	    {"TLSv1.3", TLS1_3_VERSION}, {"TLSV1.3", TLS1_3_VERSION}, {"tls1.3", TLS1_3_VERSION},
	};
	struct config c;
	char line[64], err[CONFIG_ERR_MAX];

	CHECK(TLS1_2_VERSION == 0x0303 && TLS1_3_VERSION == 0x0304);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		config_defaults(&c);
		snprintf(line, sizeof(line), "TLSMinVersion=%s", good[i].text);
		CHECK(config_parse_line(&c, line, 1, err, sizeof(err)) == 0);
		CHECK(c.tls_min_version == good[i].version);
		config_free(&c);
	}
}

TEST(tls_old_versions_refused)
{
	static const char *const old[] = {"SSLv2",   "SSLv3",   "TLSv1",
	                                  "TLSv1.0", "TLSv1.1", "tlsv1.1"};
	char text[128];

	FAILS_EXACT("\n\n\n\n\n\n\n\nTLSMinVersion=TLSv1.1\n", 9,
	            "TLSMinVersion: 'TLSv1.1' is refused: krelay speaks TLS 1.2 or newer only "
	            "(TLSv1.2, TLSv1.3); SSL and TLS 1.0/1.1 are never used");
	for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
		snprintf(text, sizeof(text), "TLSMinVersion=%s\n", old[i]);
		FAILS_WITH(text, 1, "is refused: krelay speaks TLS 1.2 or newer only");
	}
	FAILS_WITH("TLSMinVersion=SSLv3\n", 1, "TLSMinVersion: 'SSLv3' is refused");
}

TEST(tls_unknown_version)
{
	FAILS_EXACT("TLSMinVersion=TLSv1.4\n", 1,
	            "TLSMinVersion: 'TLSv1.4' is not a TLS version (valid: TLSv1.2, TLSv1.3)");
	FAILS_WITH("TLSMinVersion=1.2\n", 1, "valid: TLSv1.2, TLSv1.3");
	FAILS_WITH("TLSMinVersion=TLSv1.2 \"strict\"\n", 1, "is not a TLS version");
}

TEST(tls_max_version_and_range)
{
	struct config c;
	char err[CONFIG_ERR_MAX];
	int lo, hi;

	config_defaults(&c);
	CHECK(c.tls_max_version == TLS1_3_VERSION);
	CHECK(config_tls_versions(&c, true, &lo, &hi, err, sizeof(err)) == 0);
	CHECK(lo == TLS1_2_VERSION && hi == TLS1_3_VERSION);
	config_free(&c);

	CHECK(load_ok(&c, "TLSMaxVersion=TLSv1.2\n"));
	CHECK(c.tls_max_version == TLS1_2_VERSION && c.tls_min_version == TLS1_2_VERSION);
	CHECK(config_tls_versions(&c, false, &lo, &hi, err, sizeof(err)) == 0);
	CHECK(lo == TLS1_2_VERSION && hi == TLS1_2_VERSION);
	config_free(&c);
	FAILS_WITH("TLSMaxVersion=TLSv1.1\n", 1, "TLSMaxVersion: 'TLSv1.1' is refused");

	/* Sendmail's way of saying the same, per side */
	CHECK(load_ok(&c, "ClientSSLOptions=+SSL_OP_NO_TLSv1_3\n"));
	CHECK(config_tls_versions(&c, false, &lo, &hi, err, sizeof(err)) == 0);
	CHECK(lo == TLS1_2_VERSION && hi == TLS1_2_VERSION);
	CHECK(config_tls_versions(&c, true, &lo, &hi, err, sizeof(err)) == 0);
	CHECK(lo == TLS1_2_VERSION && hi == TLS1_3_VERSION);
	config_free(&c);

	/* nothing left: each option is fine alone, together they exclude all */
	CHECK(load_ok(&c, "TLSMinVersion=TLSv1.3\nServerSSLOptions=+SSL_OP_NO_TLSv1_3\n"));
	CHECK(config_tls_versions(&c, true, &lo, &hi, err, sizeof(err)) == -1);
	CHECK(strstr(err, "no TLS version is left for the server side") != NULL);
	CHECK(strstr(err, ":1)") != NULL && strstr(err, ":2)") != NULL);
	CHECK(config_tls_versions(&c, false, &lo, &hi, err, sizeof(err)) == 0);
	CHECK(lo == TLS1_3_VERSION && hi == TLS1_3_VERSION);
	config_free(&c);
	CHECK(load_ok(&c, "TLSMinVersion=TLSv1.3\nTLSMaxVersion=TLSv1.2\n"));
	CHECK(config_tls_versions(&c, false, &lo, &hi, err, sizeof(err)) == -1);
	config_free(&c);
}

TEST(cipher_list_and_suites)
{
	struct config c;

	config_defaults(&c);
	CHECK(c.cipher_list == NULL && c.cipher_suites == NULL);
	config_free(&c);
	CHECK(load_ok(&c, "O CipherList=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\n"
	                  "CipherSuites=TLS_CHACHA20_POLY1305_SHA256\n"));
	CHECK_STR(c.cipher_list, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
	CHECK_STR(c.cipher_suites, "TLS_CHACHA20_POLY1305_SHA256");
	config_free(&c);
	/* the how-to era's string still parses (OpenSSL drops what it lacks) */
	CHECK(load_ok(&c, "CipherList=HIGH:!aNULL:!MD5\n"));
	config_free(&c);
	FAILS_EXACT("CipherList=NOSUCHCIPHER\n", 1,
	            "CipherList: 'NOSUCHCIPHER' matches no cipher this OpenSSL has (see `openssl "
	            "ciphers -v '...'`)");
	FAILS_WITH("\nCipherSuites=TLS_AES_128_GCM_SHA256:BOGUS\n", 2,
	           "CipherSuites: 'TLS_AES_128_GCM_SHA256:BOGUS' names no TLS 1.3 suite");
	/* a TLS 1.2 name is not a TLS 1.3 suite */
	FAILS_WITH("CipherSuites=ECDHE-RSA-AES128-GCM-SHA256\n", 1, "names no TLS 1.3 suite");
}

TEST(ssl_options_sendmail_syntax)
{
	struct config c;

	/* a line from a Sendmail how-to, unchanged */
	CHECK(load_ok(
	    &c, "O ServerSSLOptions=+SSL_OP_NO_SSLv2 +SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 "
	        "+SSL_OP_NO_TLSv1_1 +SSL_OP_CIPHER_SERVER_PREFERENCE\n"
	        "O ClientSSLOptions=+SSL_OP_NO_SSLv2,+SSL_OP_NO_SSLv3 -SSL_OP_ENABLE_KTLS\n"));
	CHECK(c.server_ssl_options.set == (SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 |
	                                   SSL_OP_NO_TLSv1_1 | SSL_OP_CIPHER_SERVER_PREFERENCE));
	CHECK(c.server_ssl_options.clear == 0);
	CHECK(c.client_ssl_options.set == (SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3));
	CHECK(c.client_ssl_options.clear == SSL_OP_ENABLE_KTLS);
	config_free(&c);
	/* no sign means set; the prefix and case are optional; numbers work; the
	 * last word on a bit wins */
	CHECK(load_ok(&c, "ClientSSLOptions=no_ticket 0x4000 +ENABLE_KTLS -ENABLE_KTLS\n"));
	CHECK(c.client_ssl_options.set == (SSL_OP_NO_TICKET | 0x4000));
	CHECK(c.client_ssl_options.clear == SSL_OP_ENABLE_KTLS);
	config_free(&c);
	FAILS_EXACT(
	    "ServerSSLOptions=+SSL_OP_NO_TLSv1_4\n", 1,
	    "ServerSSLOptions: '+SSL_OP_NO_TLSv1_4' is not an SSL_OP_ name krelay knows, nor "
	    "a number (e.g. +SSL_OP_NO_TLSv1_3, -SSL_OP_ENABLE_KTLS, 0x4000)");
	FAILS_WITH("ClientSSLOptions=0x12z\n", 1, "'0x12z' is not an SSL_OP_ name");
	FAILS_WITH("ClientSSLOptions=-SSL_OP_NO_COMPRESSION\n", 1,
	           "'-SSL_OP_NO_COMPRESSION' is refused: krelay never allows TLS compression or "
	           "renegotiation");
	FAILS_WITH("ServerSSLOptions=-SSL_OP_NO_RENEGOTIATION\n", 1, "is refused");
	/* an error leaves the earlier value */
	config_defaults(&c);
	{
		char err[CONFIG_ERR_MAX];
		CHECK(config_parse_line(&c, "ClientSSLOptions=+NO_TICKET", 1, err, sizeof(err)) ==
		      0);
		CHECK(config_parse_line(&c, "ClientSSLOptions=+NO_TICKET +BOGUS", 2, err,
		                        sizeof(err)) == -1);
		CHECK(c.client_ssl_options.set == SSL_OP_NO_TICKET);
	}
	config_free(&c);
}

TEST(fingerprint_forms_equivalent)
{
	static const char *const forms[] = {
	    FP_COLON,
	    FP_BARE,
	    "sha256 Fingerprint=" FP_COLON,
	    "SHA256 Fingerprint=" FP_COLON,
	    "SHA256:" FP_BARE,
	    "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:"
	    "a0:b1:c2:d3:e4:f5:16:27:38:49:5a:6b:7c:8d:9e:ff",
	};
	struct config c;
	char line[256], err[CONFIG_ERR_MAX];
	uint8_t other[32];

	memcpy(other, fp_bytes, 32);
	other[31] ^= 1;
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		config_defaults(&c);
		snprintf(line, sizeof(line), "RelayClientCerts=%s", forms[i]);
		CHECK(config_parse_line(&c, line, 1, err, sizeof(err)) == 0);
		CHECK(c.relay_client_certs_count == 1);
		CHECK(memcmp(c.relay_client_certs[0], fp_bytes, 32) == 0);
		CHECK(config_relay_cert(&c, fp_bytes, "", ""));
		CHECK(!config_relay_cert(&c, other, "", ""));
		config_free(&c);
	}
}

TEST(fingerprint_list_replaces)
{
	struct config c;
	uint8_t zero[32] = {0};

	CHECK(load_ok(&c, "RelayClientCerts=" FP_BARE "\n"
	                  "RelayClientCerts= " FP_COLON " , " FP_BARE ",SHA256:" FP_BARE "\n"));
	CHECK(c.relay_client_certs_count == 3);
	CHECK(config_relay_cert(&c, fp_bytes, "", ""));
	CHECK(!config_relay_cert(&c, zero, "", ""));
	config_free(&c);
	config_defaults(&c);
	CHECK(!config_relay_cert(&c, fp_bytes, "", ""));
	config_free(&c);
}

TEST(fingerprint_errors)
{
	FAILS_WITH("RelayClientCerts=AB:CD\n", 1,
	           "RelayClientCerts: 'AB:CD' is not a SHA-256 fingerprint: 2 bytes, expected 32");
	FAILS_WITH("RelayClientCerts=" FP_BARE "00\n", 1, "33 bytes, expected 32");
	FAILS_WITH("RelayClientCerts=" FP_BARE ",ZZ" FP_BARE "\n", 1,
	           "'ZZ" FP_BARE "' is not a SHA-256 fingerprint");
	FAILS_WITH("RelayClientCerts=" FP_COLON ":\n", 1, "is not a SHA-256 fingerprint");
	FAILS_WITH("RelayClientCerts=0" FP_BARE "\n", 1, "is not a SHA-256 fingerprint");
	FAILS_WITH("RelayClientCerts=" FP_BARE ",\n", 1, "RelayClientCerts: empty item");
	FAILS_WITH("RelayClientCerts=sha1 Fingerprint=" FP_COLON "\n", 1,
	           "is not a SHA-256 fingerprint");
	/* The earlier list survives a bad line. */
	{
		struct config c;
		char err[CONFIG_ERR_MAX];

		CHECK(load(&c, "RelayClientCerts=" FP_BARE "\nRelayClientCerts=" FP_BARE ",12\n",
		           err) == -1);
		CHECK(c.relay_client_certs_count == 1 && config_relay_cert(&c, fp_bytes, "", ""));
		config_free(&c);
	}
}

TEST(relay_clients_replace_default)
{
	struct config c;

	CHECK(load_ok(&c, "RelayClients=192.0.2.0/24 , 2001:db8::/32,[fe80::]/10,198.51.100.7\n"));
	CHECK(c.relay_clients_count == 4);
	CHECK(!client_ok(&c, "127.0.0.1") && !client_ok(&c, "::1"));
	CHECK(client_ok(&c, "192.0.2.200") && !client_ok(&c, "192.0.3.1"));
	CHECK(client_ok(&c, "2001:db8:ffff::1") && !client_ok(&c, "2001:db9::1"));
	CHECK(client_ok(&c, "fe80::1") && client_ok(&c, "febf::1") && !client_ok(&c, "fec0::1"));
	CHECK(client_ok(&c, "198.51.100.7") && !client_ok(&c, "198.51.100.8"));
	CHECK(c.relay_clients[3].prefix == 32 && c.relay_clients[3].family == AF_INET);
	CHECK(c.relay_clients[1].prefix == 32 && c.relay_clients[1].family == AF_INET6);
	config_free(&c);

	CHECK(load_ok(&c, "RelayClients=10.0.0.0/8\nRelayClients=127.0.0.1/32\n"));
	CHECK(c.relay_clients_count == 1);
	CHECK(client_ok(&c, "127.0.0.1") && !client_ok(&c, "127.0.0.2"));
	CHECK(!client_ok(&c, "10.0.0.1"));
	config_free(&c);
}

TEST(relay_clients_errors)
{
	FAILS_WITH("RelayClients=10.0.0.0/33\n", 1,
	           "RelayClients: '10.0.0.0/33': prefix length must be 0..32");
	FAILS_WITH("RelayClients=::/129\n", 1, "prefix length must be 0..128");
	FAILS_WITH("RelayClients=10.0.0.0/\n", 1, "prefix length");
	FAILS_WITH("RelayClients=10.0.0.0/-1\n", 1, "prefix length");
	FAILS_WITH("RelayClients=10.0.0.0/8x\n", 1, "prefix length");
	FAILS_WITH("RelayClients=10.0.0/8\n", 1, "'10.0.0/8' is not an IPv4 address");
	FAILS_WITH("RelayClients=example.com\n", 1, "is not an IPv4 address");
	FAILS_WITH("RelayClients=fe80::zz/10\n", 1, "is not an IPv6 address");
	FAILS_WITH("RelayClients=[::1/128]\n", 1, "is not an address");
	FAILS_WITH("RelayClients=[127.0.0.1]\n", 1, "is not an IPv6 address");
	FAILS_WITH("RelayClients=10.0.0.0/8,,::1\n", 1, "RelayClients: empty item");
	FAILS_WITH("RelayClients=10.0.0.0/8,\n", 1, "empty item");
	FAILS_WITH("RelayClients=,\n", 1, "empty item");
	/* A bad line leaves the list as it was. */
	{
		struct config c;
		char err[CONFIG_ERR_MAX];

		CHECK(load(&c, "RelayClients=10.0.0.0/8,bad\n", err) == -1);
		CHECK(c.relay_clients_count == 2 && client_ok(&c, "127.0.0.1"));
		config_free(&c);
	}
}

TEST(relay_clients_too_many)
{
	char text[2048] = "RelayClients=";
	struct config c;

	for (int i = 0; i < CONFIG_LIST_MAX; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s10.0.%d.0/24",
		         i ? "," : "", i);
	strcat(text, "\n");
	CHECK(load_ok(&c, text));
	CHECK(c.relay_clients_count == CONFIG_LIST_MAX);
	CHECK(client_ok(&c, "10.0.63.9") && !client_ok(&c, "10.0.64.9"));
	config_free(&c);
	strcpy(text + strlen(text) - 1, ",10.0.64.0/24\n");
	FAILS_WITH(text, 1, "too many networks (at most 64)");
}

TEST(cidr_ipv4)
{
	CHECK(net_match("192.168.1.0/24", "192.168.1.1"));
	CHECK(net_match("192.168.1.0/24", "192.168.1.255"));
	CHECK(!net_match("192.168.1.0/24", "192.168.2.1"));
	CHECK(net_match("172.16.0.0/12", "172.31.255.255"));
	CHECK(!net_match("172.16.0.0/12", "172.32.0.0"));
	CHECK(net_match("10.1.2.3", "10.1.2.3"));
	CHECK(!net_match("10.1.2.3", "10.1.2.4"));
	CHECK(net_match("10.1.2.2/31", "10.1.2.3"));
	CHECK(!net_match("10.1.2.2/31", "10.1.2.4"));
	CHECK(!net_match("10.0.0.0/8", "::ffff:11.0.0.1"));
	/* Families differ: an IPv4 network never matches a native IPv6 peer. */
	CHECK(!net_match("0.0.0.0/0", "::1"));
	CHECK(!net_match("::/0", "127.0.0.1"));
}

TEST(cidr_ipv6)
{
	CHECK(net_match("2001:db8::/32", "2001:db8::1"));
	CHECK(net_match("2001:db8::/32", "2001:db8:ffff:ffff::1"));
	CHECK(!net_match("2001:db8::/32", "2001:db9::1"));
	CHECK(net_match("[2001:db8:1::]/48", "2001:db8:1:2::3"));
	CHECK(!net_match("[2001:db8:1::]/48", "2001:db8:2::3"));
	CHECK(net_match("fe80::/10", "fe80::1"));
	CHECK(net_match("fe80::/10", "febf:ffff::1"));
	CHECK(!net_match("fe80::/10", "fec0::1"));
	CHECK(net_match("::1", "::1"));
	CHECK(net_match("[::1]/128", "::1"));
	CHECK(!net_match("::1", "::2"));
	CHECK(net_match("2001:db8::/127", "2001:db8::1"));
	CHECK(!net_match("2001:db8::/127", "2001:db8::2"));
}

TEST(cidr_ipv4_mapped)
{
	CHECK(net_match("10.0.0.0/8", "::ffff:10.1.2.3"));
	CHECK(!net_match("10.0.0.0/8", "::ffff:11.1.2.3"));
	CHECK(net_match("127.0.0.1", "::ffff:127.0.0.1"));
	CHECK(net_match("0.0.0.0/0", "::ffff:8.8.8.8"));
	/* Not mapped: an IPv4-compatible or NAT64 address is not an IPv4 peer. */
	CHECK(!net_match("0.0.0.0/0", "::10.1.2.3"));
	CHECK(!net_match("0.0.0.0/0", "64:ff9b::10.1.2.3"));
}

TEST(cidr_prefix_zero)
{
	CHECK(net_match("0.0.0.0/0", "1.2.3.4"));
	CHECK(net_match("0.0.0.0/0", "255.255.255.255"));
	CHECK(net_match("::/0", "2001:db8::1"));
	CHECK(net_match("::/0", "::"));
	CHECK(net_match("1.2.3.4/0", "200.1.1.1"));
}

TEST(cidr_host_bits_masked)
{
	struct config c;
	char err[CONFIG_ERR_MAX];

	config_defaults(&c);
	CHECK(config_parse_line(&c, "RelayClients=10.1.2.3/8, 2001:db8::ffff/32, 192.168.1.77/25",
	                        1, err, sizeof(err)) == 0);
	CHECK(c.relay_clients[0].addr[0] == 10 && c.relay_clients[0].addr[1] == 0);
	CHECK(c.relay_clients[0].addr[3] == 0 && c.relay_clients[0].prefix == 8);
	CHECK(c.relay_clients[1].addr[15] == 0 && c.relay_clients[1].addr[3] == 0xb8);
	CHECK(c.relay_clients[2].addr[3] == 0);
	CHECK(client_ok(&c, "10.200.0.1"));
	CHECK(client_ok(&c, "192.168.1.5") && !client_ok(&c, "192.168.1.200"));
	config_free(&c);
	CHECK(net_match("10.1.2.3/8", "10.9.9.9"));
}

TEST(cidr_other_families)
{
	struct config c;
	struct sockaddr sa;

	config_defaults(&c);
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	CHECK(!config_relay_client(&c, &sa));
	CHECK(!config_cidr_match(&c.relay_clients[0], NULL));
	config_free(&c);
}

TEST(relay_domains)
{
	struct config c;

	CHECK(load_ok(&c, "RelayDomains=Example.COM, mail.example.org ,example.net.\n"));
	CHECK(c.relay_domains_count == 3);
	CHECK_STR(c.relay_domains[0], "example.com");
	CHECK_STR(c.relay_domains[1], "mail.example.org");
	CHECK_STR(c.relay_domains[2], "example.net");
	CHECK(config_relay_domain(&c, "example.com"));
	CHECK(config_relay_domain(&c, "EXAMPLE.com"));
	CHECK(config_relay_domain(&c, "example.com."));
	CHECK(config_relay_domain(&c, "Mail.Example.Org."));
	CHECK(config_relay_domain(&c, "example.net"));
	CHECK(!config_relay_domain(&c, "sub.example.com"));
	CHECK(!config_relay_domain(&c, "example.org"));
	CHECK(!config_relay_domain(&c, "example.co"));
	CHECK(!config_relay_domain(&c, "example.comm"));
	CHECK(!config_relay_domain(&c, "example.com.."));
	CHECK(!config_relay_domain(&c, ""));
	CHECK(!config_relay_domain(&c, "."));
	CHECK(!config_relay_domain(&c, NULL));
	config_free(&c);

	config_defaults(&c);
	CHECK(!config_relay_domain(&c, "example.com"));
	config_free(&c);
}

TEST(relay_domains_replace_and_errors)
{
	struct config c;
	char err[CONFIG_ERR_MAX];

	CHECK(load_ok(&c, "RelayDomains=a.example\nRelayDomains=b.example\n"));
	CHECK(c.relay_domains_count == 1);
	CHECK(!config_relay_domain(&c, "a.example") && config_relay_domain(&c, "b.example"));
	config_free(&c);

	FAILS_WITH("RelayDomains=good.example,bad..example\n", 1,
	           "RelayDomains: 'bad..example' is not a DNS name");
	FAILS_WITH("RelayDomains=a.example,,b.example\n", 1, "empty item");
	FAILS_WITH("RelayDomains=@example.com\n", 1, "'@'");
	FAILS_WITH("RelayDomains=.\n", 1, "empty label");
	CHECK(load(&c, "RelayDomains=a.example\nRelayDomains=b.example,bad_\n", err) == -1);
	CHECK(c.relay_domains_count == 1 && config_relay_domain(&c, "a.example"));
	config_free(&c);
}

TEST(unreadable_file)
{
	struct config c;
	char err[CONFIG_ERR_MAX], want[256], dir[] = "/tmp/test_config_dir.XXXXXX";

	config_defaults(&c);
	CHECK(config_load(&c, "/nonexistent/krelay.conf", err, sizeof(err)) == -1);
	snprintf(want, sizeof(want), "/nonexistent/krelay.conf: cannot read: %s", strerror(ENOENT));
	CHECK_STR(err, want);
	CHECK(c.path == NULL);

	CHECK(mkdtemp(dir) != NULL);
	CHECK(config_load(&c, dir, err, sizeof(err)) == -1);
	snprintf(want, sizeof(want), "%s: cannot read: %s", dir, strerror(EISDIR));
	CHECK_STR(err, want);
	rmdir(dir);
	config_free(&c);
}

TEST(long_lines)
{
	char text[4200], prefix[] = "LogFile=/";
	struct config c;

	/* Exactly 4096 characters (plus newline) is accepted. */
	memset(text, 'x', sizeof(text));
	memcpy(text, prefix, strlen(prefix));
	text[4096] = '\n';
	text[4097] = '\0';
	CHECK(load_ok(&c, text));
	CHECK(c.log_file != NULL && strlen(c.log_file) == 4096 - 8);
	config_free(&c);

	text[4096] = 'x';
	text[4097] = '\n';
	text[4098] = '\0';
	FAILS_EXACT(text, 1, "line is longer than 4096 characters");
}

TEST(nul_byte)
{
	struct config c;
	char err[CONFIG_ERR_MAX], want[128];
	int rc;

	config_defaults(&c);
	CHECK(write_file("Workers=2\nLogFile=/a") == 0);
	{
		FILE *f = fopen(tmp_path, "a");

		CHECK(f != NULL);
		if (f != NULL) {
			fwrite("\0b\n", 1, 3, f);
			fclose(f);
		}
	}
	rc = config_load(&c, tmp_path, err, sizeof(err));
	unlink(tmp_path);
	CHECK(rc == -1);
	snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", tmp_path);
	CHECK_STR(err, want);
	config_free(&c);
}

TEST(parse_line_without_path)
{
	struct config c;
	char err[CONFIG_ERR_MAX];

	config_defaults(&c);
	CHECK(config_parse_line(&c, "Workers=abc", 12, err, sizeof(err)) == -1);
	CHECK_STR(err, "12: Workers: 'abc' is not a number");
	CHECK(config_parse_line(&c, "bogus", 3, err, sizeof(err)) == -1);
	CHECK_STR(err, "3: line has no '=': 'bogus'");
	CHECK(config_parse_line(&c, "  # only a comment", 4, err, sizeof(err)) == 0);
	CHECK(config_parse_line(&c, "", 5, err, sizeof(err)) == 0);
	CHECK(config_parse_line(&c, "O Workers=3", 6, err, sizeof(err)) == 0);
	CHECK(c.workers == 3 && c.line[OPT_WORKERS] == 6);
	/* First Listen replaces the default here too. */
	CHECK(config_parse_line(&c, "Listen=[::1]:25", 7, err, sizeof(err)) == 0);
	CHECK(config_parse_line(&c, "Listen=127.0.0.1:26", 8, err, sizeof(err)) == 0);
	CHECK(c.listen_count == 2);
	CHECK_STR(c.listen[0].text, "[::1]:25");

	/* With a path set, messages carry it. */
	c.path = strdup("/etc/krelay.conf");
	CHECK(config_parse_line(&c, "ServerCertFIle=/x", 7, err, sizeof(err)) == -1);
	CHECK_STR(err, "/etc/krelay.conf:7: unknown option 'ServerCertFIle'");
	/* A short buffer truncates rather than overflows. */
	CHECK(config_parse_line(&c, "Workers=abc", 3, err, 8) == -1);
	CHECK_STR(err, "/etc/kr");
	config_free(&c);
}

TEST(where)
{
	struct config c;
	char buf[256], want[256];

	CHECK(load_ok(&c, "\nWorkers=2\n\nLogFile=/l\n"));
	config_where(&c, OPT_WORKERS, buf, sizeof(buf));
	snprintf(want, sizeof(want), "%s:2", tmp_path);
	CHECK_STR(buf, want);
	config_where(&c, OPT_LOG_FILE, buf, sizeof(buf));
	snprintf(want, sizeof(want), "%s:4", tmp_path);
	CHECK_STR(buf, want);
	config_where(&c, OPT_LISTEN, buf, sizeof(buf));
	CHECK_STR(buf, "built-in default");
	config_free(&c);

	config_defaults(&c);
	config_where(&c, OPT_QUEUE_DIRECTORY, buf, sizeof(buf));
	CHECK_STR(buf, "built-in default");
	CHECK(config_parse_line(&c, "QueueDirectory=/q", 9, buf, sizeof(buf)) == 0);
	config_where(&c, OPT_QUEUE_DIRECTORY, buf, sizeof(buf));
	CHECK_STR(buf, "line 9");
	config_free(&c);
}

TEST(free_zeroes)
{
	struct config c, zero;

	memset(&zero, 0, sizeof(zero));
	CHECK(load_ok(&c, "Hostname=h\nRelayDomains=a,b\nLogFile=/l\nCACertPath=/c\n"));
	config_free(&c);
	CHECK(memcmp(&c, &zero, sizeof(c)) == 0);
	config_free(&c); /* freeing twice after zeroing is harmless */
}

TEST(load_twice)
{
	struct config c;
	char err[CONFIG_ERR_MAX], first[64];

	CHECK(load_ok(&c, "Listen=10.0.0.1:25\nWorkers=2\n"));
	strcpy(first, tmp_path);
	CHECK(write_file("Listen=10.0.0.2:25\n") == 0);
	CHECK(config_load(&c, tmp_path, err, sizeof(err)) == 0);
	unlink(tmp_path);
	/* A second file adds to what the first one set. */
	CHECK(c.listen_count == 2 && c.workers == 2);
	CHECK_STR(c.path, tmp_path);
	CHECK(strcmp(first, tmp_path) != 0);
	config_free(&c);
}

TEST(outbound_values)
{
	struct config c;

	CHECK(load_ok(&c, "RetrySchedule=1m\n"));
	CHECK(c.retry_min_s == 60 && c.retry_max_s == 3600);
	config_free(&c);
	FAILS_WITH("RetrySchedule=1h,1m\n", 1, "RetrySchedule: MAX is shorter than MIN");
	FAILS_WITH("RetrySchedule=soon\n", 1, "RetrySchedule: expected MIN[,MAX]");
	FAILS_WITH("QueueLifetime=5x\n", 1, "QueueLifetime: '5x' is not a duration");
	FAILS_WITH("QueueLifetime=0\n", 1, "QueueLifetime: '0' is not a duration");
	FAILS_WITH("TLSPolicy=maybe\n", 1, "TLSPolicy: 'maybe' is not a TLS policy");
	FAILS_WITH("BodyPath=zerocopy\n", 1, "BodyPath: 'zerocopy' is not a body path");
	FAILS_WITH("DestinationConcurrency=0\n", 1, "DestinationConcurrency: '0' is out");
	CHECK(load_ok(&c, "TLSPolicy=NONE\n"));
	CHECK(c.tls_policy == TLS_POLICY_NONE);
	CHECK_STR(config_tls_policy_name(TLS_POLICY_ENCRYPT), "encrypt");
	config_free(&c);
}

TEST(delivery_modes)
{
	struct config c;

	CHECK(load_ok(&c, "Workers=1\n"));
	CHECK(!c.queue_only && !c.interactive && c.interactive_timeout_s == 30);
	config_free(&c);
	CHECK(load_ok(&c, "DeliveryMode=interactive\nInteractiveTimeout=45s\n"));
	CHECK(c.interactive && !c.queue_only && c.interactive_timeout_s == 45);
	config_free(&c);
	/* Sendmail's one-letter spelling; the last line wins */
	CHECK(load_ok(&c, "DeliveryMode=q\nDeliveryMode=i\n"));
	CHECK(c.interactive && !c.queue_only);
	config_free(&c);
	CHECK(load_ok(&c, "DeliveryMode=i\nDeliveryMode=background\n"));
	CHECK(!c.interactive && !c.queue_only);
	config_free(&c);
	FAILS_WITH("DeliveryMode=deferred\n", 1,
	           "DeliveryMode: 'deferred' is not a delivery mode (background, interactive, "
	           "queueonly)");
	FAILS_WITH("InteractiveTimeout=never\n", 1,
	           "InteractiveTimeout: 'never' is not a duration");
}

TEST(log_level)
{
	struct config c;

	CHECK(load_ok(&c, "LogLevel=14\n"));
	CHECK(c.log_level == 14 && c.line[OPT_LOG_LEVEL] == 1);
	config_free(&c);
	CHECK(load_ok(&c, "O LogLevel=0\n"));
	CHECK(c.log_level == 0);
	config_free(&c);
	FAILS_WITH("LogLevel=100\n", 1, "LogLevel: '100' is out of range (0..99)");
	FAILS_WITH("LogLevel=verbose\n", 1, "LogLevel: 'verbose' is not a number");
}

TEST(relay_client_names)
{
	struct config c;

	CHECK(load_ok(&c, "RelayClientIssuer=/C=XX/O=Relay+20Lab/CN=Relay+20Lab+20Test+20CA\n"
	                  "RelayClientIssuer=/CN=Second+20CA\n"
	                  "RelayClientSubject=/CN=Second+20CA\t /C=XX/CN=client.lab.test\n"));
	CHECK(c.relay_client_issuers_count == 2 && c.relay_client_subjects_count == 1);
	CHECK_STR(c.relay_client_subjects[0].issuer, "/CN=Second+20CA");
	CHECK_STR(c.relay_client_subjects[0].subject, "/C=XX/CN=client.lab.test");
	uint8_t none[32] = {0};
	/* an issuer listed: any subject; case does not matter (as Sendmail's map) */
	CHECK(
	    config_relay_cert(&c, none, "/c=xx/o=relay+20lab/cn=relay+20lab+20test+20ca", "/CN=x"));
	/* issuer and subject listed together */
	CHECK(config_relay_cert(&c, none, "/C=XX/CN=other", "/C=XX/CN=client.lab.test") == false);
	c.relay_client_issuers_count = 1; /* (drop the second issuer: subject rule alone) */
	free(c.relay_client_issuers[1]);
	CHECK(config_relay_cert(&c, none, "/CN=Second+20CA", "/C=XX/CN=client.lab.test"));
	CHECK(!config_relay_cert(&c, none, "/CN=Second+20CA", "/C=XX/CN=other.lab.test"));
	config_free(&c);
	FAILS_WITH("RelayClientIssuer=CN=x\n", 1,
	           "RelayClientIssuer: issuer 'CN=x' is not a name as /C=../O=../CN=.. (+20 for a "
	           "space)");
	FAILS_WITH(
	    "RelayClientIssuer=/O=Relay Lab\n", 1,
	    "RelayClientIssuer: issuer '/O=Relay Lab' has a space or a non-ASCII byte: write "
	    "it +HH (+20 for a space), as Sendmail's access map does");
	FAILS_WITH("RelayClientSubject=/CN=a\n", 1,
	           "RelayClientSubject: '/CN=a' is not 'ISSUER SUBJECT' (two names)");
}

TEST(run_as_user)
{
	struct config c;

	CHECK(load_ok(&c, "RunAsUser=krelay\n"));
	CHECK(strcmp(c.run_as_user, "krelay") == 0 && c.line[OPT_RUN_AS_USER] == 1);
	config_free(&c);
	CHECK(load_ok(&c, "O RunAsUser=mail:ssl-cert\n"));
	CHECK(strcmp(c.run_as_user, "mail:ssl-cert") == 0);
	config_free(&c);
	CHECK(load_ok(&c, "RunAsUser=8:12\n"));
	CHECK(strcmp(c.run_as_user, "8:12") == 0);
	config_free(&c);
	FAILS_WITH("RunAsUser=:mail\n", 1, "RunAsUser: ':mail' names no user (user or user:group)");
	FAILS_WITH("RunAsUser=mail:\n", 1, "RunAsUser: 'mail:' is not user or user:group");
	FAILS_WITH("RunAsUser=a:b:c\n", 1, "RunAsUser: 'a:b:c' is not user or user:group");
	FAILS_WITH("RunAsUser=ma/il\n", 1,
	           "RunAsUser: 'ma/il' is not a user name (user or user:group)");
}

int main(void)
{
	RUN(defaults);
	RUN(opt_names);
	RUN(run_as_user);
	RUN(relay_client_names);
	RUN(delivery_modes);
	RUN(seed_sendmail_lines);
	RUN(sendmail_queue);
	RUN(metrics_listen);
	RUN(every_option);
	RUN(outbound_values);
	RUN(client_limit);
	RUN(comments_and_blank_lines);
	RUN(blank_line_is_not_read_past_its_end);
	RUN(empty_file);
	RUN(unknown_option);
	RUN(option_names_are_case_sensitive);
	RUN(missing_equals);
	RUN(empty_value);
	RUN(bad_numbers);
	RUN(numbers_out_of_range);
	RUN(numbers_at_limits);
	RUN(max_message_size);
	RUN(path_options_replace);
	RUN(queue_directory_must_be_absolute);
	RUN(hostname);
	RUN(listen_first_replaces_default_then_appends);
	RUN(listen_ipv4_sockaddr);
	RUN(listen_ipv6_sockaddr);
	RUN(listen_smtps_flag);
	RUN(listen_errors);
	RUN(listen_too_many);
	RUN(tls_min_version);
	RUN(tls_old_versions_refused);
	RUN(tls_unknown_version);
	RUN(fingerprint_forms_equivalent);
	RUN(fingerprint_list_replaces);
	RUN(fingerprint_errors);
	RUN(relay_clients_replace_default);
	RUN(relay_clients_errors);
	RUN(relay_clients_too_many);
	RUN(cidr_ipv4);
	RUN(cidr_ipv6);
	RUN(cidr_ipv4_mapped);
	RUN(cidr_prefix_zero);
	RUN(cidr_host_bits_masked);
	RUN(cidr_other_families);
	RUN(relay_domains);
	RUN(relay_domains_replace_and_errors);
	RUN(unreadable_file);
	RUN(long_lines);
	RUN(nul_byte);
	RUN(parse_line_without_path);
	RUN(where);
	RUN(free_zeroes);
	RUN(load_twice);
	RUN(tls_max_version_and_range);
	RUN(cipher_list_and_suites);
	RUN(ssl_options_sendmail_syntax);
	RUN(log_level);
	UNIT_END("test_config");
}
