"""TLS version and cipher options (Sendmail's CipherList, ServerSSLOptions,
ClientSSLOptions; krelay's TLSMaxVersion and CipherSuites), seen from peers
nobody here wrote (Python's ssl, openssl s_client) and from krelay's own
delivery log when it relays to a krelay peer that pins a suite."""
import re
import smtplib
import ssl
import subprocess

import pytest

from conftest import KRELAY
from helpers import deliveries, wait_for


def starttls_cipher(port, ca, **ctx_opts):
    """(version, cipher name) that Python's ssl negotiates over STARTTLS."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    for k, v in ctx_opts.items():
        setattr(ctx, k, v)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.starttls(context=ctx)
        return s.sock.version(), s.sock.cipher()[0]


def s_client(port, ca, *args):
    return subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                           f"127.0.0.1:{port}", "-CAfile", str(ca), *args],
                          input="QUIT\r\n", capture_output=True, text=True, timeout=20)


def refused(out):
    """s_client's handshake failed: no cipher agreed, and it says so."""
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Cipher is (NONE)" in out.stdout, out.stdout[-2000:]
    assert "alert" in out.stderr, out.stderr[-2000:]


def test_server_pins_tls13_suite(relay_factory, certs):
    relay = relay_factory("CipherSuites=TLS_CHACHA20_POLY1305_SHA256\n")
    assert starttls_cipher(relay.port, certs.ca) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")
    relay.wait_log(r"smtp tls version=TLSv1\.3 cipher=TLS_CHACHA20_POLY1305_SHA256 ")
    # a client that offers only another suite gets no handshake, and the
    # relay says why
    out = s_client(relay.port, certs.ca, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256")
    refused(out)
    relay.wait_log(r'smtp tls error="TLS handshake: .*no shared cipher"')


def test_server_sendmail_options_cap_at_tls12_with_cipher_list(relay_factory, certs):
    # the lines an admin brings from sendmail.cf, unchanged
    relay = relay_factory(
        "O CipherList=ECDHE-ECDSA-AES256-GCM-SHA384\n"
        "O ServerSSLOptions=+SSL_OP_NO_SSLv2 +SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 "
        "+SSL_OP_NO_TLSv1_1 +SSL_OP_NO_TLSv1_3 +SSL_OP_CIPHER_SERVER_PREFERENCE\n")
    assert starttls_cipher(relay.port, certs.ca) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
    refused(s_client(relay.port, certs.ca, "-tls1_3"))  # no TLS 1.3 left
    # TLS 1.2 with a cipher outside CipherList: refused
    refused(s_client(relay.port, certs.ca, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"))
    relay.wait_log(r'smtp tls error="TLS handshake: .*no shared cipher"')


def test_tls_max_version(relay_factory, certs):
    relay = relay_factory("TLSMaxVersion=TLSv1.2\n")
    assert starttls_cipher(relay.port, certs.ca)[0] == "TLSv1.2"


def relay_to_pinned_peer(relay_factory, certs, peer_conf, relay_conf):
    """Relays one message to a krelay peer with peer_conf; returns the
    delivery line of the relay."""
    peer = relay_factory(peer_conf)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=encrypt\n"
                          f"RetrySchedule=1h\n{relay_conf}")
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as s:
        s.sendmail("s@example.org", ["r@example.com"], b"Subject: pinned\r\n\r\nbody\r\n")
    return wait_for(lambda: deliveries(relay), 20, "a delivery line")[0], relay, peer


@pytest.mark.parametrize("peer_conf,relay_conf,want", [
    # the peer decides: TLS 1.3 with the one suite it allows
    ("CipherSuites=TLS_AES_256_GCM_SHA384\n", "",
     r"TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256/256 bits\)"),
    # the relay decides: no TLS 1.3 on the client side, a TLS 1.2 cipher list
    ("", "ClientSSLOptions=+SSL_OP_NO_TLSv1_3\nCipherList=ECDHE-ECDSA-CHACHA20-POLY1305\n",
     r"TLSv1\.2 with cipher ECDHE-ECDSA-CHACHA20-POLY1305 \(256/256 bits\)"),
    ("TLSMaxVersion=TLSv1.2\nCipherList=ECDHE-ECDSA-AES128-GCM-SHA256\n", "",
     r"TLSv1\.2 with cipher ECDHE-ECDSA-AES128-GCM-SHA256 \(128/128 bits\)"),
])
def test_outbound_suite_follows_options(relay_factory, certs, peer_conf, relay_conf, want):
    d, relay, peer = relay_to_pinned_peer(relay_factory, certs, peer_conf, relay_conf)
    assert d["status"] == "sent", d
    assert re.fullmatch(want, d["tls"]), d


def test_client_option_turns_ktls_off_and_says_so(relay_factory, certs):
    d, relay, _ = relay_to_pinned_peer(relay_factory, certs, "",
                                       "ClientSSLOptions=-SSL_OP_ENABLE_KTLS\n")
    assert d["status"] == "sent" and d["ktls_tx"] == "off", d
    assert d["ktls_why"] == "SSL_OP_ENABLE_KTLS cleared by the configuration", d
    assert d["body_path"] == "ssl_write", d


def test_no_common_version_defers_with_reason(relay_factory, certs):
    d, relay, _ = relay_to_pinned_peer(relay_factory, certs, "TLSMinVersion=TLSv1.3\n",
                                       "ClientSSLOptions=+SSL_OP_NO_TLSv1_3\n")
    assert d["status"] == "deferred" and d["dsn"].startswith("4."), d
    assert "TLS" in d["reply"] and "version" in d["reply"].lower(), d  # says why
    assert relay.queued(), "the message must stay queued"


def test_options_that_leave_no_version_are_a_start_error(relay_factory, certs):
    relay = relay_factory("TLSMinVersion=TLSv1.3\nServerSSLOptions=+SSL_OP_NO_TLSv1_3\n",
                          start=False)
    for args in (["check"], []):
        out = subprocess.run([KRELAY, *args, "-C", str(relay.conf)], capture_output=True,
                             text=True, timeout=20)
        assert out.returncode != 0, (args, out)
        assert "no TLS version is left for the server side" in out.stdout + out.stderr, out


def test_check_names_cipher_lists_beyond_aead(relay_factory):
    """A CipherList set by hand goes to OpenSSL as it is (Sendmail
    configurations say HIGH); `krelay check` names the TLS 1.2 suites it
    allows that are not AEAD with forward secrecy, and exits 0 (a warning).
    The default list, and an AEAD-only one, draw no such line."""
    for conf, warned in [("", False), ("CipherList=ECDHE+AESGCM\n", False),
                         ("CipherList=HIGH\n", True), ("CipherList=AES128-GCM-SHA256\n", True)]:
        relay = relay_factory(conf, start=False)
        out = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                             text=True, timeout=20)
        assert out.returncode == 0, (conf, out)
        line = [x for x in out.stdout.splitlines() if "CipherList allows" in x]
        assert bool(line) == warned, (conf, out.stdout)
        if warned:
            assert line[0].startswith("warn   ") and "not AEAD with forward secrecy" in line[0]
            assert ("AES128-GCM-SHA256" in line[0]) == ("AES128" in conf), line
