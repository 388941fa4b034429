/* test_sm_import: Sendmail configuration import (relay/sm_import.c). */
#include "sm_import.h"
#include "unit.h"

static struct smi s;

static const char *conf_of(void (*fn)(struct smi *, const char *, const char *), const char *text)
{
	smi_free(&s);
	smi_init(&s);
	fn(&s, text, "in");
	smi_finish(&s);
	return s.conf.p ? s.conf.p : "";
}

#define HAS(text)   CHECK(strstr(s.conf.p ? s.conf.p : "", text) != NULL)
#define HASNT(text) CHECK(strstr(s.conf.p ? s.conf.p : "", text) == NULL)

TEST(seed_cf_lines)
{
	conf_of(smi_config, "O CACertPath=/etc/mail/cert\n"
	                    "O CACertFile=/etc/mail/cert/server.crt\n"
	                    "O ServerCertFile=/etc/mail/cert/server.crt\n"
	                    "O ServerKeyFile=/etc/mail/cert/server.key.open\n"
	                    "O ClientKeyFile=/etc/mail/cert/server.crt \n");
	HAS("# in:1: O CACertPath=/etc/mail/cert\nCACertPath=/etc/mail/cert\n");
	HAS("\nCACertFile=/etc/mail/cert/server.crt\n");
	HAS("\nServerCertFile=/etc/mail/cert/server.crt\n");
	HAS("\nServerKeyFile=/etc/mail/cert/server.key.open\n");
	HAS("# in:5: O ClientKeyFile=/etc/mail/cert/server.crt\nClientKeyFile=/etc/mail/cert/"
	    "server.crt\n");
	CHECK(s.imported == 5 && s.skipped == 0);
}

TEST(seed_mc_lines)
{
	conf_of(smi_config, "dnl #\n"
	                    "define(`confCACERT_PATH', `/etc/mail/cert')dnl\n"
	                    "define(`confCACERT', `/etc/mail/cert/server.crt')dnl\n"
	                    "define(`confSERVER_CERT', `/etc/mail/cert/server.crt')dnl\n"
	                    "define(`confSERVER_KEY', `/etc/mail/cert/server.key.open')dnl\n"
	                    "define(`confCLIENT_KEY', `/etc/mail/cert/server.crt')dnl\n");
	HAS("# in:2: define(`confCACERT_PATH', `/etc/mail/cert')\nCACertPath=/etc/mail/cert\n");
	HAS("\nServerKeyFile=/etc/mail/cert/server.key.open\n");
	HAS("# in:6: define(`confCLIENT_KEY', `/etc/mail/cert/server.crt')\nClientKeyFile=");
	CHECK(s.imported == 5 && s.skipped == 0);
}

TEST(mc_daemons_defines_local_config)
{
	conf_of(smi_config,
	        "divert(-1)dnl\n"
	        "# a comment\n"
	        "divert(0)dnl\n"
	        "DAEMON_OPTIONS(`Port=smtp, Addr=192.0.2.1, Name=MTA')dnl\n"
	        "DAEMON_OPTIONS(`Port=465, Name=TLSMTA, M=s')dnl\n"
	        "DAEMON_OPTIONS(`Family=inet6, Port=2525, Addr=::1, M=S')dnl\n"
	        "DAEMON_OPTIONS(`Port=submission, M=Ea')dnl\n"
	        "define(`SMART_HOST', `relay:[mail.example.org]')dnl\n"
	        "define(`confSERVER_SSL_OPTIONS', `+SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1')\n"
	        "define(`confPRIVACY_FLAGS',dnl\n"
	        "`needmailhelo,authwarnings')dnl\n"
	        "define(`confSERVER_CERT', `/c/rsa.crt,/c/ec.crt')dnl\n"
	        "define(`confMAX_DAEMON_CHILDREN', `0')dnl\n"
	        "RELAY_DOMAIN(`example.org example.net')dnl\n"
	        "FEATURE(`mailertable', `hash -o /etc/mail/mailertable.db')dnl\n"
	        "FEATURE(`access_db')dnl\n"
	        "FEATURE(`greet_pause', `1000')dnl\n"
	        "LOCAL_CONFIG\n"
	        "O CipherSuites=TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n"
	        "Kfoo hash /etc/mail/foo\n"
	        "MAILER(`smtp')dnl\n");
	HAS("# in:4: DAEMON_OPTIONS(`Port=smtp, Addr=192.0.2.1, Name=MTA')\nListen=192.0.2.1:25\n");
	HAS("\nListen=0.0.0.0:465 smtps\n");
	HAS("(M=S, no STARTTLS on this port, is not imported");
	HAS("\nListen=[::1]:2525\n");
	HAS("# in:7: not imported: DAEMON_OPTIONS(`Port=submission, M=Ea') (M=a requires AUTH");
	HAS("\nSmartHost=[mail.example.org]\n");
	HAS("\nServerSSLOptions=+SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1\n");
	/* a define over two lines is one statement, named by its first line */
	HAS("# in:10: not imported: define(`confPRIVACY_FLAGS', `needmailhelo,authwarnings') (no "
	    "krelay equivalent)");
	HAS("the second ServerCertFile after the comma, /c/ec.crt, is not imported");
	HAS("\nServerCertFile=/c/rsa.crt\n");
	HAS("# in:13: not imported: define(`confMAX_DAEMON_CHILDREN', `0') (0 is Sendmail's");
	HAS("\nRelayDomains=example.org,example.net\n");
	CHECK(strcmp(s.mailertable, "/etc/mail/mailertable") == 0);
	CHECK(s.access_db);
	HAS("# in:17: not imported: FEATURE(`greet_pause', `1000')");
	/* LOCAL_CONFIG: sendmail.cf lines, numbered as in the file */
	HAS("# in:19: O CipherSuites=TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n"
	    "CipherSuites=TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\n");
	HAS("# in:20-20: 1 line not imported (rules, mailers");
	HAS("# in:21: MAILER(`smtp') (m4 and mailer set-up");
}

TEST(cf_blocks_and_options)
{
	conf_of(smi_config, "# comment\n"
	                    "Cwlocalhost\n"
	                    "CO @ % !\n"
	                    "\n"
	                    "DSesmtp:[smart.example.org]:2525\n"
	                    "Djmx.example.org\n"
	                    "O DaemonPortOptions=Port=smtp,Addr=127.0.0.1, Name=MTA\n"
	                    "O QueueDirectory=/var/spool/mqueue\n"
	                    "O AliasWait=10\n"
	                    "S0\n"
	                    "R$+\t$#local $: $1\n"
	                    "\t$: continued\n"
	                    "O CRLFile=/etc/mail/crl.pem\n");
	HAS("# in:2-3: 2 lines not imported (rules, mailers");
	HAS("\nSmartHost=[smart.example.org]:2525\n");
	HAS("\nHostname=mx.example.org\n");
	HAS("\nListen=127.0.0.1:25\n");
	HAS("# in:8: not imported: O QueueDirectory=/var/spool/mqueue (krelay keeps its own queue");
	HAS("# in:9: not imported: O AliasWait=10 (no krelay equivalent)");
	HAS("# in:10-12: 3 lines not imported (rules");
	HAS("# in:13: not imported: O CRLFile=/etc/mail/crl.pem (krelay does not check CRLs");
}

TEST(access_map)
{
	conf_of(smi_access, "# the access map\n"
	                    "Connect:127.0.0.1\tRELAY\n"
	                    "Connect:10.1.2 RELAY\n"
	                    "Connect:192.168 RELAY\n"
	                    "Connect:IPv6:2001:db8:1 RELAY\n"
	                    "Connect:mail.example.org RELAY\n"
	                    "Connect:spam.example REJECT\n"
	                    "To:example.org RELAY\n"
	                    "TLS_Srv:mx.example.com VERIFY:128\n"
	                    "TLS_Srv:secure.example.net ENCR:256\n"
	                    "TLS_Srv:127.0.0.1 VERIFY:128+CN:wrong.lab.test\n"
	                    "TLS_Rcpt:partner.example VERIFY\n"
	                    "Try_TLS:broken.example NO\n"
	                    "TLS_Srv: VERIFY\n"
	                    "CertSubject:/C=XX/O=Relay+20Lab/CN=client RELAY\n"
	                    "TLS_Clt:10.0.0.1 VERIFY\n");
	HAS("\nRelayClients=127.0.0.0/8,::1/128,127.0.0.1/32,10.1.2.0/24,192.168.0.0/16,"
	    "2001:db8:1::/48\n");
	HAS("# in:6: not imported: Connect:mail.example.org RELAY (RelayClients takes addresses");
	HAS("# in:7: not imported: Connect:spam.example REJECT (no krelay equivalent)");
	HAS("\nRelayDomains=example.org\n");
	CHECK(strstr(s.tls_policy.p, "\nmx.example.com verify\n") != NULL);
	CHECK(strstr(s.tls_policy.p, "\nsecure.example.net encrypt\n") != NULL);
	CHECK(strstr(s.tls_policy.p, "\n127.0.0.1 verify\n") != NULL);
	HAS("the extension +CN:wrong.lab.test is not imported");
	CHECK(strstr(s.tls_policy.p, "\npartner.example verify\n") != NULL);
	CHECK(strstr(s.tls_policy.p, "\nbroken.example none\n") != NULL);
	HAS("# in:14: TLS_Srv: VERIFY\nTLSPolicy=verify\n");
	/* a subject without a CertIssuer SUBJECT entry: Sendmail ignores it too */
	HAS("# in:15: CertSubject:/C=XX/O=Relay+20Lab/CN=client RELAY (see RelayClientSubject");
	HAS("# not imported: CertSubject RELAY entries without a CertIssuer SUBJECT entry");
	HAS("# in:16: not imported: TLS_Clt:10.0.0.1 VERIFY (krelay has no per-client TLS");
}

TEST(mailertable_and_relay_domains)
{
	conf_of(smi_mailertable, "example.com\tesmtp:[mx.example.com]\n"
	                         ".example.net relay:smart.example.net:2525\n"
	                         "local.test local:user\n"
	                         "bad.test error:5.7.1:550 no\n");
	CHECK(strstr(s.transport.p, "\nexample.com [mx.example.com]\n") != NULL);
	CHECK(strstr(s.transport.p, "\n.example.net smart.example.net:2525\n") != NULL);
	HAS("# in:3: not imported: local.test local:user (only relay:");
	HAS("# in:4: not imported: bad.test error:5.7.1:550 no");
	conf_of(smi_relay_domains, "# relay-domains\nexample.org\n\nexample.com\n");
	HAS("\nRelayDomains=example.org,example.com\n");
}

TEST(cert_names)
{
	conf_of(smi_access, "CertIssuer:/C=XX/O=Lab/CN=Lab+20CA\tSUBJECT\n"
	                    "CertIssuer:/CN=Other+20CA RELAY\n"
	                    "CertSubject:/C=XX/O=Lab/CN=client.lab.test RELAY\n"
	                    "CertSubject:/C=XX/O=Lab/CN=relay+5C+2Bclient@lab.test RELAY\n"
	                    "CertSubject:/CN=x REJECT\n");
	HAS("# in:2: CertIssuer:/CN=Other+20CA RELAY\nRelayClientIssuer=/CN=Other+20CA\n");
	HAS("\nRelayClientSubject=/C=XX/O=Lab/CN=Lab+20CA /C=XX/O=Lab/CN=client.lab.test\n"
	    "RelayClientSubject=/C=XX/O=Lab/CN=Lab+20CA "
	    "/C=XX/O=Lab/CN=relay+5C+2Bclient@lab.test\n");
	HAS("# in:5: not imported: CertSubject:/CN=x REJECT");
}

int main(void)
{
	RUN(seed_cf_lines);
	RUN(seed_mc_lines);
	RUN(mc_daemons_defines_local_config);
	RUN(cf_blocks_and_options);
	RUN(access_map);
	RUN(cert_names);
	RUN(mailertable_and_relay_domains);
	smi_free(&s);
	UNIT_END("test_sm_import");
}
