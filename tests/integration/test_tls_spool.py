"""TLS, certificates, configuration and command line, and durability.

Every test drives the real krelay binary with clients nobody here wrote
(Python's ssl/smtplib, openssl s_client) and checks exact replies, log lines
and spool contents."""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from conftest import KRELAY, MKCERTS, free_port

AEAD = re.compile(r"GCM|CHACHA20")
TLS_LINE = re.compile(r"smtp tls version=(\S+) cipher=(\S+) (.*)")


# ---- helpers ---------------------------------------------------------------

def client_ctx(ca, version=None, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    if version is not None:
        ctx.minimum_version = version
        ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def old_tls_ctx(version):
    """A client that offers only an old protocol version (and any cipher)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def hexfp(certs, crt):
    """The fingerprint as krelay logs it: lowercase hex, no colons."""
    return certs.fingerprint(crt).replace(":", "").lower()


def qid_of(msg):
    m = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9A-F]{16})", msg.decode())
    assert m, msg
    return m.group(1)


def tls_lines(relay):
    return [ln for ln in relay.logs().splitlines() if "smtp tls version=" in ln]


def krelay(*args, timeout=30):
    """Runs the krelay binary; a run that does not exit is a failure, and so
    is a sanitizer report."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    try:
        out = subprocess.run([KRELAY, *map(str, args)], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"krelay {args} did not exit within {timeout}s (it started?): "
                             f"{e.stderr!r}")
    assert "Sanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr
    return out


def write_conf(path: Path, lines):
    # last, so the line numbers the tests expect stay: the test relays stay
    # root (pytest's files are root's alone; test_runas.py runs as krelay)
    path.write_text("\n".join(lines + ["RunAsUser=root"]) + "\n")
    return path


def base_lines(tmp_path):
    return [f"Listen=127.0.0.1:{free_port()}", f"QueueDirectory={tmp_path / 'q'}",
            "Hostname=relay.test"]


def recv_reply(sock, timeout=10):
    """Reads one complete (possibly multi-line) SMTP reply, byte by byte so
    nothing after it is consumed."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        ch = sock.recv(1)
        if not ch:
            raise AssertionError(f"connection closed after {buf!r}")
        buf += ch
        if buf.endswith(b"\r\n"):
            last = buf[:-2].rsplit(b"\r\n", 1)[-1]
            if re.match(rb"\d{3} ", last):
                return buf


def recv_tls_reply(sock, timeout=10):
    sock.settimeout(timeout)
    buf = b""
    while not (buf.endswith(b"\r\n") and re.match(rb"\d{3} ", buf[:-2].rsplit(b"\r\n", 1)[-1])):
        data = sock.recv(4096)
        if not data:
            raise AssertionError(f"connection closed after {buf!r}")
        buf += data
    return buf


def wait_for(cond, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def body_after_received(wire: bytes) -> bytes:
    """The message as the client sent it: everything after krelay's folded
    Received: header."""
    assert wire.startswith(b"Received: ")
    pos = 0
    while True:
        nl = wire.index(b"\r\n", pos) + 2
        if wire[nl:nl + 1] not in (b" ", b"\t"):
            return wire[nl:]
        pos = nl


def starttls_session(relay, ctx, helo="client.test"):
    s = smtplib.SMTP("127.0.0.1", relay.port, local_hostname=helo, timeout=15)
    s.ehlo()
    assert s.has_extn("starttls")
    s.starttls(context=ctx)
    s.ehlo()
    return s


# ---- 1. TLS versions ------------------------------------------------------

@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls12_and_tls13_accepted_with_aead_cipher(relay, certs, version, name):
    with starttls_session(relay, client_ctx(certs.ca, version)) as s:
        assert s.sock.version() == name
        assert s.noop()[0] == 250
    m = relay.wait_log(r"smtp tls version=(\S+) cipher=(\S+) ")
    assert m.group(1) == name
    assert AEAD.search(m.group(2)), m.group(2)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls10_and_tls11_refused_and_relay_stays_up(relay, certs, version):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
            s.starttls(context=old_tls_ctx(version))
    # the server refused it (a handshake error, not a client that never tried)
    relay.wait_log(r"smtp tls error=\"[^\"]*(version|protocol)[^\"]*\"")
    assert not tls_lines(relay)
    # and the relay keeps serving
    with starttls_session(relay, client_ctx(certs.ca)) as s:
        assert s.noop()[0] == 250
    relay.wait_log(r"smtp tls version=TLSv1\.3 ")


def test_tls_min_version_13_refuses_tls12_client(relay_factory, certs):
    relay = relay_factory(conf="TLSMinVersion=TLSv1.3")
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
            s.starttls(context=client_ctx(certs.ca, ssl.TLSVersion.TLSv1_2))
    relay.wait_log(r"smtp tls error=")
    assert not tls_lines(relay)
    with starttls_session(relay, client_ctx(certs.ca, ssl.TLSVersion.TLSv1_3)) as s:
        assert s.noop()[0] == 250
    relay.wait_log(r"smtp tls version=TLSv1\.3 ")
    # the implicit TLS listener obeys it too
    with pytest.raises((ssl.SSLError, ConnectionError)):
        smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, timeout=15,
                         context=client_ctx(certs.ca, ssl.TLSVersion.TLSv1_2)).close()
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, timeout=15,
                          context=client_ctx(certs.ca, ssl.TLSVersion.TLSv1_3)) as s:
        assert s.noop()[0] == 250
    assert [TLS_LINE.search(ln).group(1) for ln in tls_lines(relay)] == ["TLSv1.3", "TLSv1.3"]


# ---- 2. openssl s_client end to end -----------------------------------------

@pytest.mark.parametrize("flag,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_s_client_starttls_end_to_end(relay, certs, flag, name):
    script = (b"EHLO client.test\r\n"
              b"MAIL FROM:<a@example.org>\r\n"
              b"RCPT TO:<b@example.com>\r\n"
              b"DATA\r\n"
              b"Subject: s_client\r\n\r\nRelayed through s_client.\r\n.\r\n"
              b"QUIT\r\n")
    out = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-name", "client.test",
                          "-connect", f"127.0.0.1:{relay.port}", flag, "-CAfile", str(certs.ca),
                          "-verify_return_error", "-verify_hostname", "relay.test", "-ign_eof"],
                         input=script, capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text + out.stderr.decode(errors="replace")
    assert f"Protocol  : {name}" in text or f"Protocol: {name}" in text, text
    assert "250-relay.test\r\n" in text or "250-relay.test\n" in text
    assert "354 End data with <CR><LF>.<CR><LF>" in text
    m = re.search(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{16})", text)
    assert m, text
    assert "221 2.0.0 Bye" in text
    assert out.returncode == 0
    qid = m.group(1)
    assert relay.queued() == [qid]
    wire, env = relay.message(qid)
    assert wire.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n")
    assert f"(using {name} with cipher ".encode() in wire
    assert wire.endswith(b"\r\n\r\nRelayed through s_client.\r\n")
    assert env["sender"] == "a@example.org"
    assert env["rcpt"] == [("P", "b@example.com")]
    relay.wait_log(rf"smtp tls version={name} ")


# ---- 3. kTLS honesty --------------------------------------------------------

def test_ktls_state_reported_honestly(relay, certs):
    out = krelay("check")
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"^ktls       (available|unavailable)(.*)$", out.stdout, re.M)
    assert m, out.stdout
    available = m.group(1) == "available"
    # one STARTTLS session (TLS 1.2) and one implicit TLS session (TLS 1.3)
    with starttls_session(relay, client_ctx(certs.ca, ssl.TLSVersion.TLSv1_2)) as s:
        assert s.noop()[0] == 250
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, context=client_ctx(certs.ca),
                          timeout=15) as s:
        assert s.noop()[0] == 250
    wait_for(lambda: len(tls_lines(relay)) == 2, what="two tls log lines")
    start = relay.wait_log(r"starting .* ktls=(available|unavailable)")
    assert start.group(1) == m.group(1)
    for line in tls_lines(relay):
        tx = re.search(r" ktls_tx=(on|off) ", line)
        rx = re.search(r" ktls_rx=(on|off) ", line)
        assert tx and rx, line
        tx_why = re.search(r" ktls_tx_why=\"([^\"]+)\"", line)
        rx_why = re.search(r" ktls_rx_why=\"([^\"]+)\"", line)
        if not available:
            assert tx.group(1) == "off", line
            assert rx.group(1) == "off", line
            assert tx_why and "tls module" in tx_why.group(1), line
            assert rx_why and "tls module" in rx_why.group(1), line
        else:
            # off must come with a reason, on must not
            assert bool(tx_why) == (tx.group(1) == "off"), line
            assert bool(rx_why) == (rx.group(1) == "off"), line


# ---- 4. STARTTLS command injection (CVE-2011-0411) --------------------------

@pytest.mark.parametrize("injected,with_ehlo", [(b"RSET\r\n", False),
                                               (b"MAIL FROM:<a@b.example>\r\n", False),
                                               (b"RSET\r\n", True)])
def test_starttls_injection_is_discarded(relay, certs, injected, with_ehlo):
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    try:
        assert recv_reply(sock).startswith(b"220 relay.test ESMTP")
        if with_ehlo:  # EHLO, STARTTLS and the injection in one segment
            sock.sendall(b"EHLO client.test\r\nSTARTTLS\r\n" + injected)
            assert b"250-STARTTLS\r\n" in recv_reply(sock)
        else:
            sock.sendall(b"EHLO client.test\r\n")
            assert b"250-STARTTLS\r\n" in recv_reply(sock)
            sock.sendall(b"STARTTLS\r\n" + injected)
        assert recv_reply(sock) == b"220 2.0.0 Ready to start TLS\r\n"
        tls = client_ctx(certs.ca).wrap_socket(sock)
        sock = tls
        tls.sendall(b"EHLO client.test\r\n")
        ehlo = recv_tls_reply(tls)
        # the first reply after the handshake answers EHLO, not the injected command
        assert ehlo.startswith(b"250-relay.test\r\n"), ehlo
        assert b"STARTTLS" not in ehlo
        tls.sendall(b"RCPT TO:<b@example.com>\r\n")
        assert recv_tls_reply(tls) == b"503 5.5.1 Error: need MAIL command\r\n"
        tls.sendall(b"QUIT\r\n")
        assert recv_tls_reply(tls) == b"221 2.0.0 Bye\r\n"
    finally:
        sock.close()
    relay.wait_log(rf"smtp starttls discarded={len(injected)} ")


def test_starttls_twice_is_refused(relay, certs):
    with starttls_session(relay, client_ctx(certs.ca)) as s:
        assert not s.has_extn("starttls")
        assert s.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already active")
        assert s.noop()[0] == 250


def test_starttls_inside_transaction_is_refused(relay, certs):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("STARTTLS") == (503, b"5.5.1 Error: STARTTLS inside a mail transaction")
        assert s.docmd("RSET")[0] == 250
        # after RSET it is allowed again
        s.starttls(context=client_ctx(certs.ca))
        assert s.docmd("EHLO client.test")[0] == 250


def test_state_is_reset_after_starttls(relay, certs):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        s.starttls(context=client_ctx(certs.ca))
        # RFC 3207 4.2: the EHLO before TLS is forgotten
        assert s.docmd("MAIL FROM:<a@example.org>") == (
            503, b"5.5.1 Error: send HELO/EHLO first")
        assert s.docmd("EHLO client.test")[0] == 250
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250


# ---- 5. client certificates -------------------------------------------------

def send_one(s, subject):
    assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
    assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
    code, msg = s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    assert code == 250, msg
    return qid_of(msg)


def test_client_certificates_are_logged_and_recorded(relay, certs):
    good_fp = hexfp(certs, certs.client_crt)
    rogue_fp = hexfp(certs, certs.rogue / "client.crt")

    with starttls_session(relay, client_ctx(certs.ca, cert=certs.client_crt,
                                            key=certs.client_key)) as s:
        good_qid = send_one(s, "good")
    relay.wait_log(rf"client_cert=verified fingerprint={good_fp} subject=\"relay\.test client\"")

    with starttls_session(relay, client_ctx(certs.ca, cert=certs.rogue / "client.crt",
                                            key=certs.rogue / "client.key")) as s:
        rogue_qid = send_one(s, "rogue")
    relay.wait_log(rf"client_cert=unverified fingerprint={rogue_fp} verify_error=\"[^\"]+\"")

    with starttls_session(relay, client_ctx(certs.ca)) as s:
        none_qid = send_one(s, "none")
    relay.wait_log(r"client_cert=none")

    lines = tls_lines(relay)
    assert len(lines) == 3
    assert re.search(f"client_cert=verified fingerprint={good_fp} "
                     r'subject="relay\.test client" cert_issuer=/CN=krelay\+20test\+20CA\S* '
                     r"cert_subject=/CN=relay\.test\+20client$", lines[0]), lines[0]
    assert f"client_cert=unverified fingerprint={rogue_fp} " in lines[1]
    assert lines[2].endswith("client_cert=none")

    wire, env = relay.message(good_qid)
    assert b"\t(Client CN \"relay.test client\", verified OK)\r\n" in wire.split(b"\r\n\r\n")[0]
    assert env["clientcert"] == f"verified {good_fp}"
    wire, env = relay.message(rogue_qid)
    assert b"\t(Client CN \"rogue.test client\", not verified)\r\n" in wire
    assert b"verified OK" not in wire
    assert env["clientcert"] == f"unverified {rogue_fp}"
    wire, env = relay.message(none_qid)
    assert b"\t(Client did not present a certificate)\r\n" in wire
    assert env["clientcert"] == "none"


# ---- 6. relay permission by certificate -------------------------------------

def rcpt_reply(relay, ctx, rcpt="x@anywhere.org"):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        if ctx is not None:
            s.starttls(context=ctx)
            s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        return s.docmd(f"RCPT TO:<{rcpt}>")


DENIED = (550, b"5.7.1 Error: relay access denied")


def test_relay_permission_by_verified_listed_certificate(relay_factory, certs):
    good = dict(cert=certs.client_crt, key=certs.client_key)
    rogue = dict(cert=certs.rogue / "client.crt", key=certs.rogue / "client.key")
    relay = relay_factory(conf="RelayClients=10.9.9.9/32\n"
                               f"RelayClientCerts={certs.fingerprint(certs.client_crt)}")
    assert rcpt_reply(relay, client_ctx(certs.ca, **good)) == (250, b"2.1.5 Ok")
    assert rcpt_reply(relay, client_ctx(certs.ca, ssl.TLSVersion.TLSv1_2, **good)) == (
        250, b"2.1.5 Ok")
    assert rcpt_reply(relay, client_ctx(certs.ca)) == DENIED
    assert rcpt_reply(relay, None) == DENIED
    assert rcpt_reply(relay, client_ctx(certs.ca, **rogue)) == DENIED
    # implicit TLS with the good certificate
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, timeout=15,
                          context=client_ctx(certs.ca, **good)) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<x@anywhere.org>") == (250, b"2.1.5 Ok")

    # the rogue certificate listed too: still refused, it is not verified
    both = relay_factory(conf="RelayClients=10.9.9.9/32\nRelayClientCerts="
                              f"{certs.fingerprint(certs.client_crt)},"
                              f"{certs.fingerprint(certs.rogue / 'client.crt')}")
    assert rcpt_reply(both, client_ctx(certs.ca, **rogue)) == DENIED
    assert rcpt_reply(both, client_ctx(certs.ca, **good)) == (250, b"2.1.5 Ok")

    # lowercase without colons is the same fingerprint
    lower = relay_factory(conf="RelayClients=10.9.9.9/32\n"
                               f"RelayClientCerts={hexfp(certs, certs.client_crt)}")
    assert rcpt_reply(lower, client_ctx(certs.ca, **good)) == (250, b"2.1.5 Ok")
    assert rcpt_reply(lower, client_ctx(certs.ca)) == DENIED


# ---- 7. configuration errors ------------------------------------------------

def assert_refused(conf: Path, lineno, *needles):
    """`krelay check -C` and `krelay -C` both refuse conf, naming conf:lineno."""
    chk = krelay("check", "-C", conf)
    assert chk.returncode != 0, chk.stdout
    assert f"{conf}:{lineno}:" in chk.stdout, chk.stdout
    for n in needles:
        assert n in chk.stdout, chk.stdout
    run = krelay("-C", conf)
    assert run.returncode != 0, run.stderr
    assert "not starting" in run.stderr, run.stderr
    assert f"{conf}:{lineno}:" in run.stderr, run.stderr
    for n in needles:
        assert n in run.stderr, run.stderr
    return chk, run


def test_unknown_option_is_refused_with_file_and_line(tmp_path):
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + ["# comment", "NoSuchOption=1"])
    assert_refused(conf, 5, "unknown option 'NoSuchOption'")


def test_tls_min_version_11_is_refused(tmp_path):
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + ["TLSMinVersion=TLSv1.1"])
    assert_refused(conf, 4, "'TLSv1.1'", "TLS 1.2")


def test_missing_server_cert_file_is_named(tmp_path, certs):
    missing = tmp_path / "nope" / "server.crt"
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + [
        f"ServerCertFile={missing}", f"ServerKeyFile={certs.server_key}"])
    assert_refused(conf, 4, f"ServerCertFile {missing}: No such file or directory")


# ---- 8. the seed how-to's set-up ---------------------------------------------

def seed_lines(ca_path, ca_file, cert, key, client_key):
    return [f"O CACertPath={ca_path}", f"O CACertFile={ca_file}",
            f"O ServerCertFile={cert}", f"O ServerKeyFile={key}",
            f"O ClientKeyFile={client_key}"]


def test_seed_1024_bit_setup_is_refused_with_explanation(tmp_path, certs):
    sd = certs.seed
    conf = write_conf(tmp_path / "seed.conf", base_lines(tmp_path) + seed_lines(
        sd, sd / "server.crt", sd / "server.crt", sd / "server.key.open", sd / "server.crt"))
    chk = krelay("check", "-C", conf)
    assert chk.returncode == 1, chk.stdout
    for caps in ("kernel ", "io_uring ", "openssl ", "ktls "):
        assert re.search(rf"^{caps}", chk.stdout, re.M), chk.stdout
    errs = [ln for ln in chk.stdout.splitlines() if ln.startswith("error")]
    assert errs, chk.stdout
    msg = "\n".join(errs)
    assert f"{conf}:7:" in msg  # the O ServerKeyFile line
    assert "1024 bits is too weak" in msg
    assert "OpenSSL's default security level refuses keys under 2048 bits" in msg
    assert "Sendmail" in msg and "silently stops offering STARTTLS" in msg
    assert "scripts/mkcerts.sh" in msg
    assert "configuration: 1 error" in chk.stdout

    port = int(re.search(r"Listen=127\.0\.0\.1:(\d+)", conf.read_text()).group(1))
    run = krelay("-C", conf)
    assert run.returncode != 0
    assert "not starting" in run.stderr and "1024 bits is too weak" in run.stderr, run.stderr
    assert "scripts/mkcerts.sh" in run.stderr
    with pytest.raises(OSError):  # never started in plaintext
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_seed_lines_with_mkcerts_rsa_keys_work(tmp_path, relay_factory):
    d = tmp_path / "rsa"
    subprocess.run([MKCERTS, str(d), "--rsa", "--name", "relay.test"], check=True,
                   capture_output=True, timeout=60)
    shutil.copy(d / "server.key", d / "server.key.open")
    lines = seed_lines(d, d / "server.crt", d / "server.crt", d / "server.key.open",
                       d / "server.crt")
    conf = write_conf(tmp_path / "rsa.conf", base_lines(tmp_path) + lines)
    chk = krelay("check", "-C", conf)
    assert chk.returncode == 0, chk.stdout
    for caps in ("kernel ", "io_uring ", "openssl ", "ktls "):
        assert re.search(rf"^{caps}", chk.stdout, re.M), chk.stdout
    assert "configuration: 0 errors" in chk.stdout
    warn = [ln for ln in chk.stdout.splitlines()
            if ln.startswith("warn") and "RunAsUser" not in ln]
    assert len(warn) == 1, chk.stdout
    assert f"{conf}:8:" in warn[0]
    assert "ClientKeyFile without ClientCertFile: no client certificate will be presented" \
        in warn[0]
    assert "RSA 3072 bits" in chk.stdout

    relay = relay_factory(conf="\n".join(lines), tls=False, smtps=False)
    relay.wait_log(r"starting .* starttls=offered")
    with starttls_session(relay, client_ctx(d / "ca.crt")) as s:
        assert s.noop()[0] == 250
    relay.wait_log(r"smtp tls version=TLSv1\.3 cipher=\S+")


# ---- 9. certificate and key problems ----------------------------------------

def test_expired_certificate_is_reported(tmp_path):
    key, csr, crt = tmp_path / "old.key", tmp_path / "old.csr", tmp_path / "old.crt"
    subprocess.run(["openssl", "genpkey", "-quiet", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=relay.test",
                    "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-signkey", str(key),
                    "-days", "-1", "-out", str(crt)], check=True, capture_output=True)
    end = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-checkend", "0"],
                         capture_output=True, text=True)
    assert end.returncode == 1, "test set-up: certificate should already have expired"
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + [
        f"ServerCertFile={crt}", f"ServerKeyFile={key}"])
    assert_refused(conf, 4, f"ServerCertFile {crt}: certificate has expired")


def test_key_not_matching_certificate_is_reported(tmp_path, certs):
    other = certs.rogue / "server.key"
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + [
        f"ServerCertFile={certs.server_crt}", f"ServerKeyFile={other}"])
    assert_refused(conf, 5, f"ServerKeyFile {other} does not match ServerCertFile "
                            f"{certs.server_crt}")


def test_encrypted_key_is_reported(tmp_path, certs):
    key = tmp_path / "enc.key"
    subprocess.run(["openssl", "genpkey", "-quiet", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:x", "-out", str(key)],
                   check=True, capture_output=True)
    assert "ENCRYPTED" in key.read_text()
    conf = write_conf(tmp_path / "k.conf", base_lines(tmp_path) + [
        f"ServerCertFile={certs.server_crt}", f"ServerKeyFile={key}"])
    assert_refused(conf, 5, f"ServerKeyFile {key}: key is protected by a pass phrase")


# ---- 10. durability ---------------------------------------------------------

def test_acknowledged_message_survives_kill9(relay_factory):
    relay = relay_factory(tls=False)
    body = (b"From: a@example.org\r\nSubject: durable\r\n\r\n"
            + b"".join(b"line %05d of the durable message\r\n" % i for i in range(2000))
            + b".leading dot\r\n..two dots\r\nlast line\r\n")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=15) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        code, msg = s.data(body)
        assert code == 250, msg
        qid = qid_of(msg)
        relay.kill9()
    assert relay.queued() == [qid]
    wire, env = relay.message(qid)
    # smtplib dot-stuffs, krelay unstuffs: the spool holds what was meant
    assert body_after_received(wire) == body
    assert env["dotlines"] == "1"
    assert env["sender"] == "a@example.org"
    assert env["rcpt"] == [("P", "b@example.com")]
    assert env["size"] == str(len(wire))
    # The relay may have been writing a delivery-state file (ID.env) for its
    # first, deferred attempt when it was killed; never a message body.
    assert all(p.name == f"{qid}.env" for p in (relay.queue / "tmp").iterdir())

    relay.start()
    relay.wait_log(r"starting .* queued=1 removed_tmp=[01] ")
    assert relay.queued() == [qid]
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        assert s.noop()[0] == 250


def test_interrupted_data_leaves_tmp_file_removed_at_start(relay_factory):
    relay = relay_factory(tls=False)
    tmpdir = relay.queue / "tmp"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: partial\r\n\r\n" + b"x" * 500 + b"\r\n")
        wait_for(lambda: any(tmpdir.iterdir()), what="a file in tmp/")
        relay.kill9()
    left = list(tmpdir.iterdir())
    assert len(left) == 1
    assert relay.queued() == []
    relay.start()
    relay.wait_log(r"starting .* queued=0 removed_tmp=1 ")
    assert list(tmpdir.iterdir()) == []
    assert relay.queued() == []


# ---- 11. a write error (EFBIG) ---------------------------------------------
# (the file-size limit makes a write fail; a file system that really fills
# up, ENOSPC, is test_disk_full.py)

def test_file_size_limit_gives_452_and_leaves_nothing(relay_factory):
    relay = relay_factory(tls=False, prelude=["prlimit", "--fsize=65536"])
    big = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"y" * 92 + b"\r\n"
                                             for i in range(2048))
    assert len(big) > 200 * 1024
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        code, msg = s.data(big)
        assert (code, msg) == (452, b"4.3.1 Insufficient system storage")
        assert relay.queued() == []
        wait_for(lambda: list((relay.queue / "tmp").iterdir()) == [], what="tmp/ empty")
        # the session goes on, and a small message fits
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        code, msg = s.data(b"Subject: small\r\n\r\nsmall\r\n")
        assert code == 250, msg
        qid = qid_of(msg)
    assert relay.queued() == [qid]
    assert relay.message(qid)[0].endswith(b"\r\n\r\nsmall\r\n")
    relay.wait_log(r"smtp spool error id=\S+ error=\"File too large\"")


# ---- 12. graceful stop ------------------------------------------------------

def test_sigterm_tells_idle_client_421_and_exits_0(relay_factory):
    relay = relay_factory(tls=False)
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        assert s.noop()[0] == 250
        relay.proc.send_signal(signal.SIGTERM)
        code, msg = s.getreply()
        assert (code, msg) == (421, b"4.3.2 relay.test Service shutting down")
        assert relay.proc.wait(30) == 0
    relay.wait_log(r"krelay stopped messages=0 ")


def test_sigterm_during_data_does_not_queue(relay_factory):
    relay = relay_factory(tls=False)
    tmpdir = relay.queue / "tmp"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: interrupted\r\n\r\n" + b"z" * 1000 + b"\r\n")
        wait_for(lambda: any(tmpdir.iterdir()), what="a file in tmp/")
        time.sleep(0.2)  # let the relay read what was sent
        relay.proc.send_signal(signal.SIGTERM)
        code, msg = s.getreply()
        assert code == 421, msg
        assert msg.startswith(b"4.3.2 ")
        assert relay.proc.wait(30) == 0
    assert relay.queued() == []
    assert list(tmpdir.iterdir()) == []
    relay.wait_log(r"krelay stopped messages=0 ")
    assert "smtp queued" not in relay.logs()


# ---- 13. SIGHUP reload ------------------------------------------------------

def peer_der(relay, ca):
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.ehlo()
        s.starttls(context=client_ctx(ca))
        return s.sock.getpeercert(binary_form=True)


def der_of(crt):
    return ssl.PEM_cert_to_DER_cert(Path(crt).read_text())


def test_sighup_reloads_certificate_and_config(relay_factory, certs, tmp_path):
    relay = relay_factory(conf="RelayClients=10.9.9.9/32")
    assert peer_der(relay, certs.ca) == der_of(certs.server_crt)
    assert rcpt_reply(relay, None, "x@reloaded.test") == DENIED

    new = tmp_path / "newcerts"
    subprocess.run([MKCERTS, str(new), "--name", "relay.test"], check=True, capture_output=True,
                   timeout=60)
    old_conf = relay.conf.read_text()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as held:
        held.ehlo()
        text = (old_conf.replace(str(certs.ca), str(new / "ca.crt"))
                .replace(str(certs.server_crt), str(new / "server.crt"))
                .replace(str(certs.server_key), str(new / "server.key"))
                + "RelayDomains=reloaded.test\n")
        assert text.count(str(new)) == 3
        relay.conf.write_text(text)
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log(r"reload ok config=\S+ starttls=offered")
        # the session that was already there keeps working
        assert held.noop()[0] == 250
        assert held.docmd("MAIL FROM:<a@example.org>")[0] == 250
    assert peer_der(relay, new / "ca.crt") == der_of(new / "server.crt")
    assert rcpt_reply(relay, None, "x@reloaded.test") == (250, b"2.1.5 Ok")

    # a broken file on SIGHUP: the running configuration stays
    relay.conf.write_text(text + "NoSuchOption=1\n")
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(r"reload failed, keeping the running configuration: \S+:\d+: "
                   r"unknown option 'NoSuchOption'")
    assert relay.proc.poll() is None
    assert peer_der(relay, new / "ca.crt") == der_of(new / "server.crt")
    assert rcpt_reply(relay, None, "x@reloaded.test") == (250, b"2.1.5 Ok")


# ---- 14. IPv6 ---------------------------------------------------------------

def ipv6_loopback_port():
    if not socket.has_ipv6:
        return None
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_ipv6_listener(relay_factory):
    port6 = ipv6_loopback_port()
    if port6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    relay = relay_factory(conf=f"Listen=[::1]:{port6}", tls=False)
    relay.wait_log(rf"listening on \[::1\]:{port6}")
    with smtplib.SMTP("::1", port6, local_hostname="client6.test", timeout=15) as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        code, msg = s.data(b"Subject: v6\r\n\r\nover IPv6\r\n")
        assert code == 250, msg
        qid = qid_of(msg)
    relay.wait_log(rf"smtp connect client=::1 port=\d+ listener=\[::1\]:{port6} ")
    wire, env = relay.message(qid)
    assert wire.startswith(b"Received: from client6.test (unknown [::1])\r\n")
    assert env["client"] == "::1"


def test_sighup_reopens_a_rotated_log_file(relay_factory):
    relay = relay_factory(tls=False)
    relay.wait_log(r"listening on ")
    rotated = relay.log.with_name("krelay.log.1")
    relay.log.rename(rotated)
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(r"reload ok ")
    assert "reload ok" not in rotated.read_text()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        assert s.noop()[0] == 250
    relay.wait_log(r"smtp connect client=127\.0\.0\.1 ")


def sized_body(n):
    """A message of exactly n bytes in CRLF lines of 2..80 bytes."""
    head = b"Subject: sized\r\n\r\n"
    rest = n - len(head)
    sizes = [80] * (rest // 80)
    if rest % 80 == 1:
        sizes[-1:] = [40, 41]
    elif rest % 80:
        sizes.append(rest % 80)
    body = head + b"".join(b"b" * (k - 2) + b"\r\n" for k in sizes)
    assert len(body) == n
    return body


def test_file_size_limit_at_the_envelope_boundary(relay_factory):
    """Messages whose body fits under the limit but whose envelope and trailer
    cross it: each is either queued whole (and parses) or refused with 452
    leaving nothing behind; never a truncated file in queue/."""
    relay = relay_factory(tls=False, prelude=["prlimit", "--fsize=65536"])
    outcomes = {}
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="c.test", timeout=30) as s:
        s.ehlo()
        for n in range(64800, 65536, 60):
            assert s.docmd("MAIL FROM:<a@example.org>")[0] == 250
            assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
            body = sized_body(n)
            code, msg = s.data(body)
            assert code in (250, 452), (n, code, msg)
            if code == 452:
                assert msg == b"4.3.1 Insufficient system storage"
                outcomes[n] = None
            else:
                qid = qid_of(msg)
                wire, env = relay.message(qid)
                assert body_after_received(wire) == body
                assert (relay.queue / "queue" / qid).stat().st_size <= 65536
                outcomes[n] = qid
            wait_for(lambda: list((relay.queue / "tmp").iterdir()) == [], what="tmp/ empty")
    assert relay.queued() == sorted(q for q in outcomes.values() if q)
    assert any(q is None for q in outcomes.values()), outcomes
    assert any(q is not None for q in outcomes.values()), outcomes
