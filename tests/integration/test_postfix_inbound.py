"""Postfix as krelay's upstream peer: a private Postfix 3.7 instance
(postfix_peer.py) relays mail into krelay's inbound server over STARTTLS
with a client certificate, pipelined and in lock-step, and krelay must store
it byte-exact under its own Received header.  Postfix's SMTP client never
uses BDAT (CHUNKING is server-side only in Postfix), so this is always DATA
with dot-stuffing; krelay's BDAT path is covered by test_smtp.py.  Plus a
self-test of the Postfix sink that the outbound tests will deliver into."""
import re
import smtplib
import ssl
import time

import pytest

from postfix_peer import postfix_relay_factory, postfix_sink  # noqa: F401 (fixtures)

QID_RE = r"[0-9A-F]{16}"
DATE = "Sat, 28 Nov 2026 12:00:00 +0000"


def message(n, body, extra_headers=""):
    """Complete content in wire form (CRLF), with its own Date and Message-Id
    so Postfix adds nothing but its Received header."""
    head = (f"From: Sender <sender@example.org>\r\nTo: rcpt@example.com\r\n"
            f"Subject: postfix peer test {n}\r\nDate: {DATE}\r\n"
            f"Message-Id: <pf-{n}-{time.time_ns()}@example.org>\r\n{extra_headers}\r\n")
    return head.encode() + body


def big_body(size):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_=+()[]{}<>!\r\n"
    return (line * (size // len(line) + 1))[:size - (size % len(line))]


def split_received(wire):
    """Splits leading Received headers (with their folded lines) off wire.
    Returns ([header, ...], rest)."""
    headers = []
    pos = 0
    while wire.startswith(b"Received:", pos):
        end = wire.index(b"\r\n", pos) + 2
        while wire[end:end + 1] in (b" ", b"\t"):
            end = wire.index(b"\r\n", end) + 2
        headers.append(wire[pos:end])
        pos = end
    return headers, wire[pos:]


def submit(pf_port, sender, rcpts, content, mail_options=()):
    with smtplib.SMTP("127.0.0.1", pf_port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        refused = s.sendmail(sender, rcpts, content, mail_options=list(mail_options))
        assert not refused


def spooled(relay):
    """Queue IDs of the messages in krelay's spool (queue/ID; not the
    queue/ID.env delivery-state files the outbound side writes next to them)."""
    return [name for name in relay.queued() if re.fullmatch(QID_RE, name)]


def wait_queued(relay, n, pf, timeout=30):
    deadline = time.time() + timeout
    while len(spooled(relay)) < n:
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited {relay.proc.returncode} while waiting\n"
                                 f"{relay.logs()[-3000:]}")
        if time.time() > deadline:
            raise AssertionError(f"krelay queued {len(spooled(relay))} of {n}\n"
                                 f"postfix queue:\n{pf.mailq()}\n{pf.log()[-4000:]}\n"
                                 f"krelay log:\n{relay.logs()[-3000:]}")
        time.sleep(0.1)
    time.sleep(0.2)
    assert len(spooled(relay)) == n, spooled(relay)


def pf_sent(pf, krelay_port):
    """{krelay queue id: [recipient, ...]} from Postfix's status=sent lines."""
    sent = {}
    for m in re.finditer(
            r": to=<([^>]*)>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:(\d+), .*?status=sent "
            rf"\(250 2\.0\.0 Ok: queued as ({QID_RE})\)", pf.log()):
        assert int(m.group(2)) == krelay_port
        sent.setdefault(m.group(3), []).append(m.group(1))
    return sent


def check_krelay_tls_log(relay, certs):
    sessions = re.findall(r"smtp tls version=(TLSv1\.[23]) cipher=(\S+) ktls_tx=(on|off) "
                          r"ktls_rx=(on|off).* client_cert=(\S+) fingerprint=([0-9a-fA-F:]+) "
                          r'subject="([^"]*)"', relay.logs())
    assert sessions, relay.logs()[-3000:]
    want_fp = certs.fingerprint(certs.client_crt).replace(":", "").lower()
    for version, cipher, ktls_tx, ktls_rx, cc, fp, subject in sessions:
        assert cc == "verified"
        assert fp.replace(":", "").lower() == want_fp
        assert subject == "relay.test client"
    return sessions


def test_postfix_relays_into_krelay(relay, certs, postfix_relay_factory):
    pf = postfix_relay_factory(relay.port, debug_peer=True)
    assert pf.postconf("smtp_tls_security_level") == "encrypt"

    dot_body = (b"first line\r\n.leading dot\r\n..two dots\r\n.\r\n"
                b"a line with only a dot above\r\n. dot space\r\n")
    utf8_body = ("Gr\u00fc\u00dfe aus K\u00f6ln, \u0436\u0443\u0440\u043d\u0430\u043b, "
                 "\u65e5\u672c\u8a9e\r\n\xe9t\xe9\r\n").encode("utf-8") + b"\xff\xfe raw 8-bit\r\n"
    cases = [
        # (sender, recipients, content, MAIL options)
        ("sender@example.org", ["one@example.com", "two@example.net"],
         message(0, b"short body\r\n"), []),
        ("sender@example.org", ["dots@example.com"], message(1, dot_body), []),
        ("sender@example.org", ["utf8@example.com"],
         message(2, utf8_body, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Content-Transfer-Encoding: 8bit\r\n"), ["BODY=8BITMIME"]),
        ("sender@example.org", ["big@example.com"], message(3, big_body(1024 * 1024)), []),
        ("", ["bounce@example.com"], message(4, big_body(64 * 1024 + 17)), []),
        ("j\u00fcrgen@example.org", ["\u00e5sa@example.com"],
         message(5, "UTF-8 addresses \u00fc\r\n".encode()), ["SMTPUTF8", "BODY=8BITMIME"]),
    ]
    for sender, rcpts, content, opts in cases:
        submit(pf.port, sender, rcpts, content, opts)
    pf.flush()
    wait_queued(relay, len(cases), pf)
    pf.wait_queue_empty(timeout=20)

    sent = pf_sent(pf, relay.port)
    assert sorted(sent) == spooled(relay), (sent, spooled(relay))

    by_msgid = {}
    for qid in spooled(relay):
        wire, env = relay.message(qid)
        m = re.search(rb"^Message-Id: <(pf-\d+)-", wire, re.M)
        assert m, wire[:2000]
        by_msgid[m.group(1).decode()] = (qid, wire, env)
    assert sorted(by_msgid) == [f"pf-{i}" for i in range(len(cases))]

    for i, (sender, rcpts, content, opts) in enumerate(cases):
        qid, wire, env = by_msgid[f"pf-{i}"]
        received, rest = split_received(wire)
        assert len(received) == 2, received
        ours, theirs = received
        proto = b"UTF8SMTP" if "SMTPUTF8" in opts else b"ESMTP"
        # krelay's own Received header on top, in Postfix's form.
        assert re.fullmatch(
            rb"Received: from postfix\.test \(\S+ \[127\.0\.0\.1\]\)\r\n"
            rb"\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \(\d+/\d+ bits\)\)\r\n"
            rb'\t\(Client CN "relay\.test client", verified OK\)\r\n'
            # RFC 6531 3.7.3: UTF8SMTPS for an SMTPUTF8 transaction
            rb"\tby relay\.test \(krelay\) with " + proto + b"S id " + qid.encode()
            # one recipient: "\r\n\tfor <rcpt>; DATE"; more: "; DATE" on the id line
            + (rb"\r\n\tfor <[^>]+>; " if len(rcpts) == 1 else rb"; ")
            + rb"[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n",
            ours), ours
        if len(rcpts) == 1:
            assert b"for <" + rcpts[0].encode() + b">;" in ours
        # Postfix's Received header below it.
        assert re.match(rb"Received: from client\.test \(localhost \[127\.0\.0\.1\]\)\r\n"
                        rb"\tby postfix\.test \(Postfix\) with " + proto + rb" id [0-9A-F]+",
                        theirs), theirs
        # Then the content exactly as submitted.
        assert rest == content, (i, len(rest), len(content))
        assert env["size"] == str(len(wire))
        assert env["sender"] == sender
        assert sorted(env["rcpt"]) == sorted(("P", r) for r in rcpts)
        assert sorted(sent[qid]) == sorted(rcpts)
        assert env["client"] == "127.0.0.1"
        assert env["helo"] == "postfix.test"
        assert re.fullmatch(r"TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)", env["tls"]), env
        assert env["clientcert"].startswith("verified "), env
        assert env["dotlines"] == ("1" if i == 1 else "0"), (i, env)
        if i in (2, 5):
            assert env["8bit"] == "1" and env["body"] == "8BITMIME", env
        assert env["smtputf8"] == ("1" if i == 5 else "0"), (i, env)

    check_krelay_tls_log(relay, certs)
    for qid, (sender, rcpts, content, opts) in zip(
            [by_msgid[f"pf-{i}"][0] for i in range(len(cases))], cases):
        relay.wait_log(rf"smtp queued id={qid} from=<{re.escape(sender)}> "
                       rf"size={len(relay.message(qid)[0])} nrcpt={len(rcpts)}")

    log = pf.log()
    assert re.search(r"Trusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                     rf"{relay.port}: TLSv1\.[23] with cipher", log), log[-4000:]
    # krelay offered PIPELINING and CHUNKING; Postfix pipelined MAIL, RCPT
    # and DATA.  Postfix's SMTP client has no BDAT at all (3.7: CHUNKING is
    # server-side only; /usr/lib/postfix/sbin/smtp contains no "BDAT"), so
    # its mail always arrives with DATA, dot-stuffed.
    assert re.search(r"< 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: 250-CHUNKING", log), log[-4000:]
    assert re.search(r"Using ESMTP PIPELINING", log), log[-4000:]
    txns = pipelined_transactions(log)
    assert len(txns) == len(cases), log[-6000:]
    assert all(txns), ("MAIL/RCPT/DATA not pipelined", txns, log[-6000:])
    assert not re.search(r"> 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: BDAT", log)


def pipelined_transactions(log):
    """From a debug_peer_list log: for each transaction, whether the client
    sent MAIL, RCPT... and DATA before it read the reply to MAIL."""
    by_pid = {}
    for m in re.finditer(r"/smtp\[(\d+)\]: ([<>]) 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: (\S+)",
                         log):
        by_pid.setdefault(m.group(1), []).append((m.group(2), m.group(3)))
    result = []
    for events in by_pid.values():
        for i, (d, verb) in enumerate(events):
            if d == ">" and verb == "MAIL":
                rest = events[i + 1:]
                first_reply = next(j for j, (dd, _) in enumerate(rest) if dd == "<")
                result.append((">", "DATA") in rest[:first_reply])
    return result


@pytest.mark.parametrize("tls", ["TLSv1.2", "TLSv1.3"])
def test_postfix_without_pipelining_verifies_krelay(relay, certs, postfix_relay_factory, tls):
    """PIPELINING hidden from Postfix: lock-step MAIL, RCPT, DATA, with a
    body full of dot lines (dot-stuffed by Postfix, un-stuffed by krelay).
    TLS level verify (the CA plus the name relay.test) proves krelay's
    server certificate passes Postfix's strict check; Postfix is held to
    one TLS version to cover both."""
    only = f">={tls}, <={tls}"
    pf = postfix_relay_factory(relay.port, tls_level="verify", debug_peer=True,
                               main={"smtp_discard_ehlo_keywords": "pipelining",
                                     "smtp_tls_protocols": only,
                                     "smtp_tls_mandatory_protocols": only})
    assert "relay.test" in pf.postconf("smtp_tls_policy_maps")
    dot_body = b".\r\n..\r\n.x\r\nplain\r\n" * 3000
    contents = [message(10, dot_body), message(11, b"no dots here\r\n")]
    for c in contents:
        submit(pf.port, "s@example.org", ["r@example.com", "r2@example.com"], c)
    pf.flush()
    wait_queued(relay, 2, pf)
    got = {}
    for qid in spooled(relay):
        wire, env = relay.message(qid)
        received, rest = split_received(wire)
        assert len(received) == 2
        got[rest] = env
        assert sorted(env["rcpt"]) == [("P", "r2@example.com"), ("P", "r@example.com")]
        assert env["tls"].startswith(f"{tls} with cipher "), env
        assert received[0].startswith(b"Received: from postfix.test (")
        assert f"\t(using {tls} with cipher ".encode() in received[0], received[0]
    assert sorted(got) == sorted(contents)
    assert got[contents[0]]["dotlines"] == "1"
    assert got[contents[1]]["dotlines"] == "0"
    assert {s[0] for s in check_krelay_tls_log(relay, certs)} == {tls}
    log = pf.wait_log(r"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                      rf"{relay.port}: {re.escape(tls)} with cipher").string
    assert "Using ESMTP PIPELINING" not in log
    txns = pipelined_transactions(log)
    assert txns == [False, False], log[-6000:]
    assert len(re.findall(r"> 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: DATA\b", log)) == 2


def test_postfix_sink_delivers_byte_exact(postfix_sink, certs):
    """Self-test of the sink the outbound tests will relay into: smtplib
    over STARTTLS with a client certificate, once with DATA and once with
    BDAT (the sink's smtpd offers CHUNKING, as krelay's client will see);
    each delivered file is Postfix's Received header (with the TLS and
    client-certificate details) and then the content, LF line ends."""
    pf = postfix_sink
    ctx = ssl.create_default_context(cafile=str(certs.ca))  # checks the IP SAN 127.0.0.1
    ctx.load_cert_chain(str(certs.client_crt), str(certs.client_key))
    sent = {
        "data": ("a@example.org", ["b@example.com"],
                 message(20, b"body\r\n.dot line\r\n..two\r\n.\r\n" + "8-bit \u00e9\r\n".encode()
                         + big_body(200 * 1024))),
        "bdat": ("", ["c@example.net"], message(21, b".\r\n..\r\nbdat body \xe9\r\n")),
    }
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo()
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert not s.has_extn("starttls")
        for ext in ("pipelining", "chunking", "8bitmime", "size", "smtputf8"):
            assert s.has_extn(ext), ext
        sender, rcpts, content = sent["data"]
        assert not s.sendmail(sender, rcpts, content, mail_options=["BODY=8BITMIME"])
        sender, rcpts, content = sent["bdat"]
        assert s.docmd(f"MAIL FROM:<{sender}> BODY=8BITMIME")[0] == 250
        assert s.docmd(f"RCPT TO:<{rcpts[0]}>")[0] == 250
        s.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
        code, msg = s.getreply()
        assert code == 250, msg
    delivered = pf.wait_messages(2, timeout=20)
    # both delivered and out of Postfix's queue: nothing more can arrive
    pf.wait_queue_empty()
    assert pf.log().count("status=sent (delivered via fsink service)") == 2, pf._tail()
    assert len(pf.messages()) == 2
    by_rcpt = {pf.envelope(name)[1][0]: (name, data) for name, data in delivered}
    for kind, (sender, rcpts, content) in sent.items():
        name, data = by_rcpt[rcpts[0]]
        assert pf.envelope(name) == (sender, rcpts)
        want = content.replace(b"\r\n", b"\n")
        assert data.endswith(want)
        head = data[:-len(want)]
        assert re.fullmatch(
            rb"Received: from client\.test \(localhost \[127\.0\.0\.1\]\)\n"
            rb"\t\(using TLSv1\.[23] with cipher .*\)\n"
            rb'\t\(Client CN "relay\.test client", Issuer "[^"]+" \(verified OK\)\)\n'
            rb"\tby postfix\.test \(Postfix\) with ESMTPS id [0-9A-F]+\n"
            rb"\tfor <" + re.escape(rcpts[0].encode()) + rb">; [^\n]+\n", head, re.S), head
    pf.wait_log(r"Trusted TLS connection established from localhost\[127\.0\.0\.1\]")
