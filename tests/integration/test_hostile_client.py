"""Hostile clients, on the receiving side: what an attacker who can connect
tries, each found once by testing as one.

- A client certificate whose subject holds CR LF (and a whole second SMTP
  transaction) must not reach krelay's Received header or its log raw.
- A HELO that is no domain must not pose as trace data; a quoted local part
  must not forge key=value fields in the log.
- BDAT + RSET once the spool reuses pooled files, and a refused message
  (bare LF, size, long line), must leave the session answering: before, the
  spool's abort event ran inside the command that caused it, and the
  session either crashed (xprt_consume assertion) or never answered again
  (CLOSE-WAIT, its slot held until restart).
"""
import datetime
import re
import smtplib
import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import wait_for
from test_relay import (BIG, content_of, make_body, peer_messages, split_received, submit_bdat,
                        wait_deliveries, wait_peer, wait_spool_empty)

SMUGGLED = ("evil\r\n.\r\nMAIL FROM:<a@evil.test>\r\nRCPT TO:<victim@elsewhere.test>\r\n"
            "DATA\r\nSubject: smuggled\r\n")


def make_cert(tmp_path, cn, ca_dir=None):
    """A client certificate with subject CN=cn (any bytes the DER allows),
    self-signed, or signed by the CA in ca_dir."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer, signer = name, key
    if ca_dir is not None:
        ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        issuer = ca.subject
        signer = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(signer, hashes.SHA256()))
    tag = "ca" if ca_dir else "self"
    crt, keyf = tmp_path / f"evil-{tag}.crt", tmp_path / f"evil-{tag}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return crt, keyf


def starttls_submit(relay, certs, crt, key, content, rcpt="r@example.com"):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(str(crt), str(key))
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.mail("s@example.org")
        code, msg = s.rcpt(rcpt)
        assert code == 250, msg
        code, msg = s.data(content)
        assert code == 250, msg
        return re.search(r"queued as ([0-9A-F]{16})", msg.decode()).group(1)


def one_header(received):
    """A Received header is one header: every line after the first is a
    fold (starts with a tab), and no line is a lone "."."""
    lines = received.split(b"\r\n")
    assert lines[-1] == b"", received
    assert lines[0].startswith(b"Received: from "), received
    for line in lines[1:-1]:
        assert line.startswith(b"\t"), (line, received)
    assert b"\n" not in received.replace(b"\r\n", b""), received
    assert b"\r" not in received.replace(b"\r\n", b""), received


@pytest.mark.parametrize("signed", [False, True], ids=["self-signed", "ca-signed"])
def test_certificate_subject_cannot_add_header_lines(relay_factory, certs, tmp_path, signed):
    relay = relay_factory()
    crt, key = make_cert(tmp_path, SMUGGLED, certs.dir if signed else None)
    content = content_of(f"cn-{signed}")
    qid = starttls_submit(relay, certs, crt, key, content)
    body, _env = relay.message(qid)
    received, rest = split_received(body, b"\r\n")
    assert len(received) == 1 and rest == content, body[:600]
    one_header(received[0])
    assert b'(Client CN "evil\\x0D\\x0A.\\x0D\\x0AMAIL FROM:<a@evil.test>\\x0D\\x0ARCPT' \
        in received[0], received[0]
    assert b"\r\n.\r\n" not in body
    tls_line = relay.wait_log(r"smtp tls version=.*client_cert=(verified|unverified)[^\n]*")
    if signed:
        # the log line holds the subject escaped, on one line
        assert 'subject="evil\\x0D\\x0A.\\x0D\\x0AMAIL FROM:\\x3Ca@evil.test\\x3E' \
            in tls_line.group(0), tls_line.group(0)


def test_smuggled_subject_relayed_over_data_is_one_message(relay_factory, certs, tmp_path):
    """The attack end to end: the next hop gets one message, to the one
    recipient, with the subject as text inside one header."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n{BIG}")
    crt, key = make_cert(tmp_path, SMUGGLED)
    content = content_of("smuggle-e2e", make_body(300, dots=True))
    starttls_submit(relay, certs, crt, key, content)
    wait_deliveries(relay, 1, status="sent")
    got = wait_peer(peer, 1)
    assert list(got) == ["smuggle-e2e@example.org"], list(got)
    (_qid, wire, env), = got["smuggle-e2e@example.org"]
    assert [r for _, r in env["rcpt"]] == ["r@example.com"], env
    received, rest = split_received(wire, b"\r\n")
    assert rest == content
    for r in received:
        one_header(r)
    # the session that carried it ended having carried that one message
    # (a smuggled second one would count there): its end is the barrier
    def ended():
        found = re.findall(r"smtp disconnect client=127\.0\.0\.1 commands=(\d+) messages=(\d+)",
                           peer.logs())
        return [int(msgs) for cmds, msgs in found if int(cmds) > 0]
    assert wait_for(ended, 15, "the relay's session at the peer to end") == [1]
    assert len(peer_messages(peer)) == 1


def raw_session(port, lines_and_expect, helo="client.test", timeout=10):
    """Sends each chunk and reads one reply per expected code; returns the
    replies.  A chunk whose expectation is None gets no read."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        f = c.makefile("rb")

        def reply():
            text = b""
            while True:
                line = f.readline()
                assert line, f"connection closed; so far {out} {text!r}"
                text += line
                if line[3:4] != b"-":
                    return text

        assert reply().startswith(b"220")
        c.sendall(b"EHLO %s\r\n" % helo.encode())
        assert reply().startswith(b"250")
        for chunk, expect in lines_and_expect:
            c.sendall(chunk)
            if expect is None:
                continue
            r = reply()
            out.append(r)
            assert r.startswith(expect.encode()), (chunk[:80], r, out)
        # the session is still there, and ends properly
        c.sendall(b"QUIT\r\n")
        assert reply().startswith(b"221")
        c.settimeout(5)
        assert f.read() == b""
    return out


def warm_pool(relay, peer, tag):
    """One message relayed, so that each worker's pool may hold its file."""
    submit_bdat(relay.port, "s@example.org", ["r@example.com"], content_of(tag, b"x\r\n"))
    wait_deliveries(relay, 1, status="sent")
    wait_spool_empty(relay)
    pool = relay.queue / "pool"
    wait_for(lambda: any(pool.iterdir()), 10, "a file in pool/")


@pytest.fixture
def pooled(relay_factory):
    """A one-worker relay whose next message is written over a pooled file."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\nWorkers=1\n"
                          "MaxMessageSize=2000\n")
    warm_pool(relay, peer, "warm")
    return relay


TX = [(b"MAIL FROM:<s@example.org>\r\n", "250"), (b"RCPT TO:<r@example.com>\r\n", "250")]


def test_bdat_then_rset_over_a_pooled_file(pooled):
    raw_session(pooled.port, TX + [(b"BDAT 10\r\n0123456789", "250"), (b"RSET\r\n", "250"),
                                   (b"NOOP\r\n", "250")] + TX +
                [(b"BDAT 3 LAST\r\nabc", "250 2.0.0 Ok: queued as")])


def test_bdat_rset_pipelined_in_one_write(pooled):
    raw_session(pooled.port, [(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\n"
                               b"BDAT 10\r\n0123456789RSET\r\nNOOP\r\n", "250")] +
                [(b"", "250")] * 4)


REFUSALS = {
    "bare-lf": (b"a bare\nline feed\r\n.\r\n", "550 5.5.2"),
    "size": (b"x" * 70 + b"\r\n") * 40 + b".\r\n",
    "long-line": (b"y" * 1200 + b"\r\n.\r\n", "550 5.6.0"),
}
REFUSALS["size"] = (REFUSALS["size"], "552 5.3.4")


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_message_leaves_the_session_answering(pooled, case):
    content, code = REFUSALS[case]
    raw_session(pooled.port, TX + [(b"DATA\r\n", "354"), (content, code),
                                   (b"NOOP\r\n", "250")] + TX +
                [(b"DATA\r\n", "354"), (b"ok\r\n.\r\n", "250 2.0.0 Ok: queued as")])


def test_refused_sessions_free_their_slots(relay_factory):
    """MaxConnections refused sessions whose clients left do not lock out
    the next client (they used to sit in CLOSE-WAIT until restart)."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\nWorkers=1\n"
                          "MaxConnections=3\n")
    warm_pool(relay, peer, "warm-slots")
    for i in range(6):
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as c:
            f = c.makefile("rb")
            assert f.readline().startswith(b"220")
            c.sendall(b"EHLO c.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\n"
                      b"DATA\r\n")
            while not f.readline().startswith(b"354"):
                pass
            c.sendall(b"bare\nLF\r\n.\r\n")
            assert f.readline().startswith(b"550 5.5.2")
            c.sendall(b"NOOP\r\n")  # what comes after the refusal, then gone
    wait_for(lambda: relay.logs().count("smtp disconnect") >= 7, 10, "the sessions to end")
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as s:
        assert s.noop()[0] == 250


def test_helo_that_is_no_domain_is_not_trace_data(relay_factory):
    relay = relay_factory()
    helo = "x (fake) by mx.google.com with ESMTPS id 1\xe9"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.command_encoding = "utf-8"
        code, msg = s.ehlo(helo)
        assert code == 250, msg
        s.mail("s@example.org")
        s.rcpt("r@example.com")
        code, msg = s.data(content_of("helo"))
        assert code == 250, msg
    qid = re.search(r"queued as ([0-9A-F]{16})", msg.decode()).group(1)
    body, env = relay.message(qid)
    received, _ = split_received(body, b"\r\n")
    one_header(received[0])
    first = received[0].split(b"\r\n")[0]
    assert first == (b'Received: from unknown (unknown [127.0.0.1] HELO "x \\x28fake\\x29 by '
                     b'mx.google.com with ESMTPS id 1\\xC3\\xA9")'), first


@pytest.mark.parametrize("helo", ["client.test", "[127.0.0.1]", "[IPv6:::1]"])
def test_valid_helo_is_the_name(relay_factory, helo):
    relay = relay_factory()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.ehlo(helo)
        s.mail("s@example.org")
        s.rcpt("r@example.com")
        code, msg = s.data(content_of("helo-ok"))
    qid = re.search(r"queued as ([0-9A-F]{16})", msg.decode()).group(1)
    body, _ = relay.message(qid)
    assert body.startswith(b"Received: from %s (unknown [127.0.0.1])\r\n" % helo.encode())


LOG_FIELD = re.compile(r'(\w+)=(<[^<>]*>|"[^"]*"|\S+)')


def fields(line):
    """A log line's key=value pairs, in order (values in <> or "" whole)."""
    return LOG_FIELD.findall(line.split(": ", 1)[1])


def test_quoted_local_part_cannot_forge_log_fields(relay_factory):
    relay = relay_factory()
    forged = '"x> status=sent to=<ceo@bank.example> relay=evil"@client.test'
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.ehlo("client.test")
        code, msg = s.mail(f"<{forged}>")
        assert code == 250, msg
        code, msg = s.rcpt(f"<{forged}>")
        assert code == 250, msg
        code, msg = s.data(content_of("forged"))
        assert code == 250, msg
    relay.wait_log(r"smtp queued id=")
    escaped = "<\\x22x\\x3E\\x20status=sent\\x20to=\\x3Cceo@bank.example\\x3E\\x20relay=evil\\x22" \
              "@client.test>"
    lines = [l for l in relay.logs().splitlines() if " smtp from " in l or " smtp to " in l
             or " smtp queued " in l]
    assert len(lines) == 3, lines
    for line in lines:
        f = fields(line)
        keys = [k for k, _ in f]
        assert len(keys) == len(set(keys)), line  # no key twice: nothing forged
        assert "relay" not in keys, line
        addr = dict(f).get("from") or dict(f).get("to")
        assert addr == escaped, line
    to_line = [l for l in lines if " smtp to " in l][0]
    assert dict(fields(to_line))["status"] == "accepted"


def test_queue_list_shows_forged_addresses_escaped(relay_factory):
    """`krelay queue list` reads as what is queued: one message, one sender,
    one recipient line, whatever the quoted local part holds."""
    from test_queue_routing import queue_list
    relay = relay_factory()
    forged = '"x> size=1 attempts=0\\r\\n    to=<ceo@bank.example> delivered"@client.test'
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail(f"<{forged}>")[0] == 250
        assert s.rcpt("<r@example.com>")[0] == 250
        code, msg = s.data(content_of("forged-list"))
        assert code == 250, msg
    qid = re.search(r"queued as ([0-9A-F]{16})", msg.decode()).group(1)
    msgs, count = queue_list(relay)
    assert count == 1 and list(msgs) == [qid], msgs
    assert msgs[qid]["rcpts"] == [("r@example.com", "pending")], msgs[qid]


def test_bdat_before_helo_reads_its_chunk(relay):
    """RFC 3030: a refused BDAT's chunk is read and dropped, never taken for
    commands (here, one that would open a transaction)."""
    chunk = b"MAIL FROM:<a@evil.test>\r\n"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as c:
        f = c.makefile("rb")
        assert f.readline().startswith(b"220")
        c.sendall(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\nQUIT\r\n")
        assert f.readline().startswith(b"503 5.5.1 Error: send HELO/EHLO first")
        assert f.readline().startswith(b"250 2.0.0 Ok")
        assert f.readline().startswith(b"221")
