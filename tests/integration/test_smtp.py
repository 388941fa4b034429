"""The SMTP protocol side of krelay, tested from the wire.

Clients nobody here wrote talk to the real binary: Python's smtplib, swaks,
and a raw socket for byte-exact (and hostile) input.  Every test checks the
exact reply codes and enhanced status codes (RFC 5321, RFC 3463, RFC 2034)
and what did or did not land in the spool.
"""
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections import namedtuple
from datetime import datetime, timezone

import pytest

Reply = namedtuple("Reply", "code lines")  # lines: text after "NNN-"/"NNN "

QID_RE = r"[0-9A-F]{16}"


class Smtp:
    """A byte-exact SMTP client on a raw socket.  reply() reads lines up to
    the one with a space (or nothing) after the code, as RFC 5321 4.2.1 says."""

    def __init__(self, port, timeout=10.0, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        if greet:
            r = self.reply()
            assert r.code == 220 and r.lines[-1] == "relay.test ESMTP krelay", r

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unterminated input {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self):
        lines, codes = [], []
        while True:
            raw = self.line()
            assert re.fullmatch(rb"[2-5][0-9][0-9]([ -].*)?", raw, re.S), f"bad reply line {raw!r}"
            code = int(raw[:3])
            assert not codes or code == codes[0], f"code changed inside a reply: {raw!r}"
            codes.append(code)
            lines.append(raw[4:].decode("utf-8", "replace"))
            if len(raw) == 3 or raw[3:4] == b" ":
                return Reply(code, lines)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line, code, enh=None):
        r = self.cmd(line)
        check(r, code, enh)
        return r

    def ehlo(self, name="client.test"):
        r = self.expect(f"EHLO {name}", 250)
        return r

    def closed(self, timeout=5.0):
        """True once the server has closed; fails if it sends more bytes."""
        self.sock.settimeout(timeout)
        try:
            extra = self.buf + self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        assert extra == b"", f"unexpected bytes before close: {extra!r}"
        return True


def check(r, code, enh=None):
    assert r.code == code, f"expected {code} {enh or ''}, got {r}"
    if enh is not None:
        assert r.lines[-1].split(" ", 1)[0] == enh, f"expected {code} {enh}, got {r}"


def qid_of(r):
    check(r, 250, "2.0.0")
    m = re.fullmatch(rf"2\.0\.0 Ok: queued as ({QID_RE})", r.lines[-1])
    assert m, r
    return m.group(1)


def split_received(wire):
    """Splits a spooled message into krelay's Received header and the rest."""
    assert wire.startswith(b"Received: from "), wire[:200]
    i = 0
    while True:
        j = wire.index(b"\r\n", i)
        if wire[j + 2:j + 3] not in (b" ", b"\t"):
            return wire[:j + 2], wire[j + 2:]
        i = j + 2


def start_tx(c, sender="a@example.org", rcpts=("b@example.com",), mail_params=""):
    c.ehlo()
    c.expect(f"MAIL FROM:<{sender}>{mail_params}", 250, "2.1.0")
    for rc in rcpts:
        c.expect(f"RCPT TO:<{rc}>", 250, "2.1.5")


def send_data(c, content):
    """DATA, content (already dot-stuffed, with its terminator), final reply."""
    check(c.cmd("DATA"), 354)
    c.send(content)
    return c.reply()


def tmp_files(relay):
    tmp = relay.queue / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_sessions_closed(relay, timeout=5.0):
    """Every logged connect has its disconnect (the fixture's readiness probe,
    which is always there, included), so the relay's connection count is back
    to zero.  The disconnect line is written just before the count drops, so
    allow a moment after it."""
    def done():
        log = relay.logs()
        n = log.count(" smtp connect ")
        return n > 0 and n == log.count(" smtp disconnect ")
    wait_until(done, timeout, "all sessions to end")
    time.sleep(0.1)


def assert_nothing_queued(relay):
    assert relay.queued() == []
    wait_until(lambda: tmp_files(relay) == [], 5, "tmp/ to be empty")


# ---- 1. commands and the EHLO reply ---------------------------------------


def test_ehlo_advertises_extensions(relay):
    """RFC 5321 4.1.1.1 / 2920 / 1870 / 6152 / 2034 / 3030 / 3207 / 6531:
    the EHLO reply lists the extensions krelay implements."""
    with Smtp(relay.port) as c:
        r = c.ehlo()
        assert r.lines == ["relay.test", "PIPELINING", "SIZE 10240000", "8BITMIME",
                           "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS", "SMTPUTF8"]
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "chunking", "starttls",
                    "smtputf8"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == "10240000"


def test_helo_gets_plain_250_and_no_extensions(relay):
    """RFC 5321 4.1.1.1: HELO is answered by one plain 250 line; the message
    is then received "with SMTP" (RFC 5321 4.4)."""
    with Smtp(relay.port) as c:
        r = c.cmd("HELO client.test")
        assert r == Reply(250, ["relay.test"])
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: helo\r\n\r\nhi\r\n.\r\n"))
    wire, env = relay.message(qid)
    hdr, rest = split_received(wire)
    assert f"with SMTP id {qid}".encode() in hdr
    assert rest == b"Subject: helo\r\n\r\nhi\r\n"
    assert env["helo"] == "client.test"


def test_simple_commands(relay):
    """RFC 5321 4.1.1.9-4.1.1.10, 3.5.3, 4.1.1.8: NOOP, RSET, VRFY (252),
    HELP (214), EXPN (502), AUTH without AUTH advertised (503), unknown
    command (500 5.5.2), QUIT (221 then close)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        assert c.cmd("NOOP") == Reply(250, ["2.0.0 Ok"])
        assert c.cmd("noop") == Reply(250, ["2.0.0 Ok"])  # verbs are case-insensitive
        assert c.cmd("RSET") == Reply(250, ["2.0.0 Ok"])
        c.expect("VRFY postmaster", 252, "2.0.0")
        c.expect("HELP", 214, "2.0.0")
        c.expect("XYZZY plugh", 500, "5.5.2")
        c.expect("EXPN staff", 502, "5.5.1")
        c.expect("AUTH PLAIN AGFiAGM=", 503, "5.5.1")
        c.expect("NOOP", 250, "2.0.0")
        assert c.cmd("QUIT") == Reply(221, ["2.0.0 Bye"])
        assert c.closed()


def test_smtplib_docmd_replies(relay):
    """The same replies seen through smtplib, a client nobody here wrote."""
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        assert s.helo()[0] == 250
        assert s.noop() == (250, b"2.0.0 Ok")
        assert s.rset() == (250, b"2.0.0 Ok")
        assert s.verify("x@example.com")[0] == 252
        assert s.docmd("HELP")[0] == 214
        code, msg = s.docmd("FROB")
        assert (code, msg[:5]) == (500, b"5.5.2")
        assert s.expn("list")[0] == 502
        code, msg = s.docmd("AUTH", "LOGIN")
        assert (code, msg[:5]) == (503, b"5.5.1")


def test_nothing_after_quit_runs(relay):
    """RFC 5321 4.1.1.10: after QUIT's 221 the server closes; commands
    pipelined behind QUIT get no reply."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.send(b"QUIT\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\n")
        assert c.reply() == Reply(221, ["2.0.0 Bye"])
        assert c.closed()
    assert "from=<a@example.org>" not in relay.logs()


def test_half_closed_client_gets_all_replies(relay):
    """RFC 5321 4.1.1.10 / RFC 2920: a client may send its last commands and
    QUIT and then shut down its side; every reply, the message's 250
    included, still comes back."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: half\r\n\r\nclose\r\n.\r\nNOOP\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        qid = qid_of(c.reply())
        check(c.reply(), 250, "2.0.0")
        check(c.reply(), 221, "2.0.0")
        assert c.closed()
    assert relay.queued() == [qid]


def test_helo_ehlo_need_an_argument(relay):
    """RFC 5321 4.1.1.1: HELO/EHLO take a domain or address literal;
    without one the reply is 501 5.5.4 and the client is not greeted."""
    with Smtp(relay.port) as c:
        c.expect("EHLO", 501, "5.5.4")
        c.expect("HELO ", 501, "5.5.4")
        c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
        c.ehlo("[127.0.0.1]")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


# ---- 2. command sequence ---------------------------------------------------


def test_command_sequence_errors(relay):
    """RFC 5321 3.3 / 4.1.4 / 4.3.2: MAIL/RCPT/DATA out of order get 503
    5.5.1 (DATA with no valid recipient: 554), and the session recovers."""
    with Smtp(relay.port) as c:
        c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")  # before EHLO
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        c.ehlo()
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")  # no MAIL
        c.expect("DATA", 503, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        r = c.cmd("DATA")  # no RCPT
        assert r.code in (503, 554) and r.lines[-1].startswith("5.5.1 "), r
        c.expect("MAIL FROM:<other@example.org>", 503, "5.5.1")  # nested
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: seq\r\n\r\nok\r\n.\r\n"))
    assert relay.queued() == [qid]
    assert relay.message(qid)[1]["sender"] == "a@example.org"


def test_rset_and_ehlo_abort_the_transaction(relay):
    """RFC 5321 4.1.1.5 and 4.1.4: RSET, and EHLO in a transaction, clear the
    sender and recipients."""
    with Smtp(relay.port) as c:
        start_tx(c)
        c.expect("RSET", 250, "2.0.0")
        c.expect("DATA", 503, "5.5.1")
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
        start_tx(c)
        c.ehlo()  # a second EHLO inside the transaction resets it
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    assert relay.queued() == []


def test_null_sender_and_mail_syntax(relay):
    """RFC 5321 4.5.5: MAIL FROM:<> (bounces) is accepted; 4.1.2 syntax
    errors get 501 5.5.4 / 501 5.1.7 / 5.1.3; unknown parameters 555 5.5.4."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:a@example.org", 501, "5.5.4")
        c.expect("MAIL FROM:<a@@example.org>", 501, "5.1.7")
        c.expect("MAIL FROM:<" + "l" * 65 + "@example.org>", 501, "5.1.7")
        c.expect("MAIL FROM:<a@example.org> FROB=1", 555, "5.5.4")
        c.expect("MAIL FROM:<a@example.org> BODY=9BIT", 501, "5.5.4")
        c.expect("MAIL FROM:<>", 250, "2.1.0")
        c.expect("RCPT TO:<>", 501, "5.1.3")
        c.expect("RCPT TO:<b@example.com> NOTIFY=NEVER", 555, "5.5.4")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: bounce\r\n\r\nx\r\n.\r\n"))
    assert relay.message(qid)[1]["sender"] == ""


# ---- 3. pipelining ---------------------------------------------------------


def test_pipelined_command_group_in_one_write(relay):
    """RFC 2920 3.1: EHLO, MAIL, three RCPTs and DATA sent in one write are
    answered in order, then the content follows."""
    with Smtp(relay.port) as c:
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"
               b"RCPT TO:<r1@example.com>\r\nRCPT TO:<r2@example.com>\r\n"
               b"RCPT TO:<r3@example.com>\r\nDATA\r\n")
        r = c.reply()
        assert r.code == 250 and "PIPELINING" in r.lines
        check(c.reply(), 250, "2.1.0")
        for _ in range(3):
            check(c.reply(), 250, "2.1.5")
        check(c.reply(), 354)
        c.send(b"Subject: piped\r\n\r\nbody\r\n.\r\n")
        qid = qid_of(c.reply())
        c.expect("QUIT", 221, "2.0.0")
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == b"Subject: piped\r\n\r\nbody\r\n"
    assert env["rcpt"] == [("P", "r1@example.com"), ("P", "r2@example.com"),
                           ("P", "r3@example.com")]


def test_pipelined_content_then_next_transaction(relay):
    """RFC 2920 3.1: content and its terminator may start a group; the next
    RSET/MAIL/RCPT/DATA in the same write must be answered only after the
    first message's 250."""
    with Smtp(relay.port) as c:
        start_tx(c, rcpts=["one@example.com"])
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: first\r\n\r\n1\r\n.\r\nRSET\r\nMAIL FROM:<a2@example.org>\r\n"
               b"RCPT TO:<two@example.com>\r\nDATA\r\n")
        q1 = qid_of(c.reply())
        check(c.reply(), 250, "2.0.0")
        check(c.reply(), 250, "2.1.0")
        check(c.reply(), 250, "2.1.5")
        check(c.reply(), 354)
        c.send(b"Subject: second\r\n\r\n2\r\n.\r\nQUIT\r\n")
        q2 = qid_of(c.reply())
        check(c.reply(), 221, "2.0.0")
        assert c.closed()
    assert q1 != q2 and relay.queued() == sorted([q1, q2])
    w1, e1 = relay.message(q1)
    w2, e2 = relay.message(q2)
    assert split_received(w1)[1] == b"Subject: first\r\n\r\n1\r\n"
    assert split_received(w2)[1] == b"Subject: second\r\n\r\n2\r\n"
    assert (e1["sender"], e1["rcpt"]) == ("a@example.org", [("P", "one@example.com")])
    assert (e2["sender"], e2["rcpt"]) == ("a2@example.org", [("P", "two@example.com")])


def test_swaks_pipelined_delivery(relay):
    """RFC 2920 end to end with swaks --pipeline."""
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{relay.port}", "--pipeline", "--helo", "swaks.test",
         "--from", "y@example.org", "--to", "x@example.com,z@example.com",
         "--header", "Subject: swaks pipelined", "--body", "swaks body line\n.dotted\n"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<** " not in out.stdout, out.stdout  # no error replies
    qids = relay.queued()
    assert len(qids) == 1
    wire, env = relay.message(qids[0])
    hdr, rest = split_received(wire)
    assert hdr.startswith(b"Received: from swaks.test (unknown [127.0.0.1])\r\n")
    assert b"Subject: swaks pipelined\r\n" in rest
    assert b"\r\n\r\nswaks body line\r\n.dotted\r\n" in rest  # swaks stuffed the dot
    assert env["sender"] == "y@example.org"
    assert env["rcpt"] == [("P", "x@example.com"), ("P", "z@example.com")]
    assert env["dotlines"] == "1"


def test_swaks_starttls_pipelined(relay):
    """RFC 3207 + 2920 with swaks: STARTTLS, then a pipelined transaction."""
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{relay.port}", "-tls", "--pipeline",
         "--from", "y@example.org", "--to", "x@example.com", "--body", "over tls"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    qids = relay.queued()
    assert len(qids) == 1
    wire, _ = relay.message(qids[0])
    assert b"with ESMTPS id " + qids[0].encode() in split_received(wire)[0]


def test_starttls_discards_pipelined_plaintext(relay, certs):
    """RFC 3207 4.2 / CVE-2011-0411: commands pipelined behind STARTTLS in
    the clear must not run inside the TLS session, and the client must say
    EHLO again after the handshake."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    with Smtp(relay.port) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\nNOOP\r\n")
        check(c.reply(), 220, "2.0.0")
        assert c.buf == b""
        c.sock = ctx.wrap_socket(c.sock, server_hostname="relay.test")
        c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")  # state was reset
        r = c.ehlo()
        assert "STARTTLS" not in r.lines
        c.expect("STARTTLS", 554, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")  # no injected MAIL pending
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: tls\r\n\r\nx\r\n.\r\n"))
    assert relay.message(qid)[1]["sender"] == "a@example.org"
    log = relay.logs()
    assert "injected@example.org" not in log
    assert re.search(r"smtp starttls discarded=\d+ ", log)


def test_starttls_refused_inside_transaction(relay):
    """RFC 3207 4: STARTTLS inside a mail transaction is refused (503)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("STARTTLS", 503, "5.5.1")
        c.expect("RSET", 250, "2.0.0")


def test_several_messages_in_one_session(relay):
    """RFC 5321 3.3: one session, several transactions (smtplib sendmail)."""
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        for i in range(5):
            errs = s.sendmail(f"s{i}@example.org", [f"r{i}@example.com"],
                              f"Subject: n{i}\r\n\r\nmessage {i}\r\n")
            assert errs == {}
            if i == 2:
                assert s.rset() == (250, b"2.0.0 Ok")
    qids = relay.queued()
    assert len(qids) == 5
    seen = {}
    for q in qids:
        wire, env = relay.message(q)
        seen[env["sender"]] = (split_received(wire)[1], env["rcpt"])
    for i in range(5):
        assert seen[f"s{i}@example.org"] == (f"Subject: n{i}\r\n\r\nmessage {i}\r\n".encode(),
                                              [("P", f"r{i}@example.com")])


def test_pipelined_flood_of_commands_without_reading(relay):
    """RFC 2920 3.1 (server must not deadlock or drop replies): 20000
    pipelined NOOPs, about 280 KB of replies, all answered in order while the
    client writes before it reads."""
    n = 20000
    with Smtp(relay.port, timeout=30) as c:
        c.ehlo()
        sender = threading.Thread(target=c.send, args=(b"NOOP\r\n" * n + b"QUIT\r\n",))
        sender.start()
        try:
            for _ in range(n):
                r = c.reply()
                assert r == Reply(250, ["2.0.0 Ok"])
            check(c.reply(), 221, "2.0.0")
        finally:
            sender.join(30)
        assert c.closed()


# ---- 4. BDAT / CHUNKING ----------------------------------------------------


def bdat(c, data, last=False):
    c.send(b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data)
    return c.reply()


def test_bdat_chunks_stored_byte_exact(relay):
    """RFC 3030 2/4.1: BDAT chunks then BDAT LAST; the content is stored
    exactly (no dot handling), after krelay's Received header."""
    parts = [b"Subject: chunks\r\n\r\n", b"first part, .not stuffed\r\n.\r\n", b"..two dots\r\n"]
    with Smtp(relay.port) as c:
        start_tx(c)
        for p in parts[:-1]:
            check(bdat(c, p), 250, "2.0.0")
        qid = qid_of(bdat(c, parts[-1], last=True))
        c.expect("NOOP", 250, "2.0.0")
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == b"".join(parts)
    assert env["dotlines"] == "1"
    assert env["size"] == str(len(wire))


def test_bdat_zero_last_ends_message(relay):
    """RFC 3030 2: "BDAT 0 LAST" ends a chunked message; alone it sends an
    empty one."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(bdat(c, b"Subject: z\r\n\r\nzero-last\r\n"), 250, "2.0.0")
        q1 = qid_of(bdat(c, b"", last=True))
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        q2 = qid_of(bdat(c, b"", last=True))
    assert split_received(relay.message(q1)[0])[1] == b"Subject: z\r\n\r\nzero-last\r\n"
    assert split_received(relay.message(q2)[0])[1] == b""


def test_bdat_pipelined_with_commands(relay):
    """RFC 3030 4.2 + RFC 2920: MAIL, RCPT, BDAT commands and their chunk
    bytes in one write; replies come back in order."""
    a, b = b"Subject: piped bdat\r\n", b"\r\nhello\r\nQUIT\r\n"
    with Smtp(relay.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
               b"BDAT %d\r\n%sBDAT %d LAST\r\n%sNOOP\r\nQUIT\r\n" % (len(a), a, len(b), b))
        check(c.reply(), 250, "2.1.0")
        check(c.reply(), 250, "2.1.5")
        check(c.reply(), 250, "2.0.0")
        qid = qid_of(c.reply())
        check(c.reply(), 250, "2.0.0")
        check(c.reply(), 221, "2.0.0")
        assert c.closed()
    assert split_received(relay.message(qid)[0])[1] == a + b


def test_bdat_without_mail_consumes_chunk(relay):
    """RFC 3030 2: a BDAT that is refused still has its chunk read; the chunk
    (here "QUIT" and a MAIL FROM) must never run as commands."""
    evil = b"MAIL FROM:<evil@x.example>\r\nQUIT\r\n"
    with Smtp(relay.port) as c:
        c.ehlo()
        check(bdat(c, evil), 503, "5.5.1")
        c.expect("NOOP", 250, "2.0.0")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        check(bdat(c, evil, last=True), 554, "5.5.1")  # no recipients yet
        c.expect("RSET", 250, "2.0.0")  # RFC 3030 2: the client resets after a refusal
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(bdat(c, b"Subject: after\r\n\r\nfine\r\n", last=True))
    assert relay.queued() == [qid]
    assert "evil@x.example" not in relay.logs()


def test_bdat_binary_looking_crlf_clean_content(relay):
    """RFC 3030 / RFC 6152: every octet but CR and LF, in CRLF lines, goes
    through BDAT untouched; the envelope notes 8bit."""
    octets = bytes(b for b in range(256) if b not in (10, 13))
    content = b"Subject: bin\r\n\r\n" + b"".join(
        octets[i:i + 60] + b"\r\n" for i in range(0, len(octets), 60)) + b".\r\n"
    with Smtp(relay.port) as c:
        start_tx(c, mail_params=" BODY=8BITMIME")
        check(bdat(c, content[:100]), 250, "2.0.0")
        qid = qid_of(bdat(c, content[100:], last=True))
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == content
    assert env["8bit"] == "1" and env["body"] == "8BITMIME"


def test_bdat_after_rcpt_rules(relay):
    """RFC 3030 3: no RCPT and no DATA once BDAT has begun (503), and bare LF
    in BDAT content is refused like in DATA (550 5.5.2)."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(bdat(c, b"Subject: x\r\n"), 250, "2.0.0")
        c.expect("RCPT TO:<c@example.com>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        check(bdat(c, b"\r\nbare\nlf\r\n", last=True), 550, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")
    assert_nothing_queued(relay)


def test_bdat_syntax_errors(relay):
    """RFC 3030 2: "BDAT" SP chunk-size [SP "LAST"]; anything else is 501."""
    with Smtp(relay.port) as c:
        start_tx(c)
        c.expect("BDAT", 501, "5.5.4")
        c.expect("BDAT x", 501, "5.5.4")
        c.expect("BDAT -1", 501, "5.5.4")
        c.expect("BDAT 5 FIRST", 501, "5.5.4")
        c.expect("BDAT 5 LAST x", 501, "5.5.4")
        qid = qid_of(bdat(c, b"Subject: ok\r\n\r\n", last=True))
    assert relay.queued() == [qid]


def test_bdat_large_chunk_in_pieces(relay):
    """RFC 3030: one 512 KiB chunk arriving in many small writes is stored
    exactly and the next command is read right after its last byte."""
    line = b"abcdefghijklmnopqrstuvwxyz0123456789" * 2 + b"\r\n"
    content = b"Subject: big chunk\r\n\r\n" + line * (512 * 1024 // len(line))
    with Smtp(relay.port, timeout=30) as c:
        start_tx(c)
        c.send(b"BDAT %d LAST\r\n" % len(content))
        for i in range(0, len(content), 50000):
            c.send(content[i:i + 50000])
            time.sleep(0.01)
        c.send(b"NOOP\r\n")
        qid = qid_of(c.reply())
        check(c.reply(), 250, "2.0.0")
    assert split_received(relay.message(qid)[0])[1] == content


def test_rset_during_bdat_drops_message(relay):
    """RFC 3030 / RFC 5321 4.1.1.5: RSET between chunks abandons the
    message; nothing is queued and its tmp/ file goes."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(bdat(c, b"Subject: dropped\r\n\r\n"), 250, "2.0.0")
        c.expect("RSET", 250, "2.0.0")
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(bdat(c, b"Subject: kept\r\n\r\n", last=True))
    assert relay.queued() == [qid]
    assert split_received(relay.message(qid)[0])[1] == b"Subject: kept\r\n\r\n"
    wait_until(lambda: tmp_files(relay) == [], 5, "tmp/ to be empty")


def test_client_disconnect_mid_bdat_queues_nothing(relay):
    """RFC 3030: a chunked message without its LAST chunk is never queued."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(bdat(c, b"Subject: cut\r\n\r\n"), 250, "2.0.0")
        c.send(b"BDAT 100 LAST\r\nonly part")
        time.sleep(0.2)
    relay.wait_log(r'smtp disconnect .*reason="lost connection')
    assert_nothing_queued(relay)


# ---- 5. DATA ---------------------------------------------------------------


def test_data_dot_unstuffing(relay):
    """RFC 5321 4.5.2: a leading dot is removed; "..x" is stored as ".x",
    ".." as ".", and the envelope records dotlines=1."""
    with Smtp(relay.port) as c:
        start_tx(c)
        qid = qid_of(send_data(c, b"Subject: dots\r\n\r\n..x\r\n..\r\n...\r\nx.\r\n.\r\n"))
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == b"Subject: dots\r\n\r\n.x\r\n.\r\n..\r\nx.\r\n"
    assert env["dotlines"] == "1"


def test_data_without_dot_lines(relay):
    """Without leading dots the envelope says dotlines=0, 8bit=0."""
    with Smtp(relay.port) as c:
        start_tx(c)
        qid = qid_of(send_data(c, b"Subject: plain\r\n\r\nno dots. here.\r\n.\r\n"))
    env = relay.message(qid)[1]
    assert (env["dotlines"], env["8bit"], env["body"]) == ("0", "0", "-")


def test_data_empty_body(relay):
    """RFC 5321 4.1.1.4: DATA then at once <CRLF>.<CRLF> is an empty
    message (the CRLF is the one after DATA); it is queued."""
    with Smtp(relay.port) as c:
        start_tx(c)
        qid = qid_of(send_data(c, b".\r\n"))
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == b""
    assert env["size"] == str(len(wire))


def test_data_terminator_split_across_writes(relay):
    """RFC 5321 4.1.1.4: the end of data is found whatever the TCP
    segmentation: "\\r\\n", ".", "\\r", "\\n" arrive one by one."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(c.cmd("DATA"), 354)
        for piece in (b"Subject: split\r\n\r\nbody", b"\r", b"\n", b".", b".x", b"\r\n", b".",
                      b"\r", b"\n"):
            c.send(piece)
            time.sleep(0.05)
        qid = qid_of(c.reply())
    assert split_received(relay.message(qid)[0])[1] == b"Subject: split\r\n\r\nbody\r\n.x\r\n"


def test_data_8bitmime(relay):
    """RFC 6152: BODY=8BITMIME with 8-bit content is stored unchanged and
    the envelope records body=8BITMIME, 8bit=1."""
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße, ünïcödé ✓\r\n".encode()
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        s.ehlo()
        errs = s.sendmail("a@example.org", ["b@example.com"], body, mail_options=["BODY=8BITMIME"])
        assert errs == {}
    (qid,) = relay.queued()
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == body
    assert (env["body"], env["8bit"]) == ("8BITMIME", "1")


def test_smtputf8_addresses_accepted_with_smtputf8(relay):
    """RFC 6531 3.3-3.4: UTF-8 local parts are accepted when MAIL FROM
    carries SMTPUTF8; the Received header says UTF8SMTP (RFC 6531 4.3)."""
    sender, rcpt = "jöran@example.org", "δοκιμή@example.com"
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect(f"MAIL FROM:<{sender}> SMTPUTF8", 250, "2.1.0")
        c.expect(f"RCPT TO:<{rcpt}>", 250, "2.1.5")
        c.expect("RCPT TO:<ascii@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, "Subject: ütf\r\n\r\nhej\r\n.\r\n".encode()))
    wire, env = relay.message(qid)
    assert f"with UTF8SMTP id {qid}".encode() in split_received(wire)[0]
    assert env["sender"] == sender and env["smtputf8"] == "1"
    assert env["rcpt"] == [("P", rcpt), ("P", "ascii@example.com")]


def test_utf8_addresses_rejected_without_smtputf8(relay):
    """RFC 6531 3.4 / 3.6: without SMTPUTF8 on MAIL FROM a UTF-8 address is
    refused with 553 5.6.7 (at MAIL for the sender, at RCPT for a recipient)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<jöran@example.org>", 553, "5.6.7")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<δοκιμή@example.com>", 553, "5.6.7")
        c.expect("DATA", 554, "5.5.1")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: a\r\n\r\nx\r\n.\r\n"))
    assert relay.message(qid)[1]["rcpt"] == [("P", "b@example.com")]
    relay.wait_log(r"smtp to id=\S+ to=<δοκιμή@example\.com> status=rejected "
                   r"reply=\"553 5\.6\.7 ")


def test_invalid_utf8_address_refused(relay):
    """RFC 6531 3.3 / RFC 3629: malformed UTF-8 is no address even with
    SMTPUTF8 (501 5.1.7)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect(b"MAIL FROM:<j\xc3\x28ran@example.org> SMTPUTF8", 501, "5.1.7")
        c.expect(b"MAIL FROM:<\xc0\xafx@example.org> SMTPUTF8", 501, "5.1.7")
        c.expect("NOOP", 250, "2.0.0")


# ---- 6. hostile input ------------------------------------------------------


def test_command_line_length_limit(relay):
    """RFC 5321 4.5.3.1.4: a command line is at most 1000 octets with CRLF;
    longer gets 500 5.5.2 and the session goes on; nothing of it runs."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("NOOP " + "x" * 993, 250, "2.0.0")  # 998 + CRLF: the limit
        c.expect("NOOP " + "x" * 994, 500, "5.5.2")
        c.expect("NOOP " + "x" * 5000, 500, "5.5.2")
        # An over-long line whose tail looks like a command, sent in pieces:
        # all of it is discarded, none of it runs.
        c.send(b"NOOP " + b"A" * 1500)
        time.sleep(0.1)
        c.send(b"B" * 1500)
        time.sleep(0.1)
        c.send(b"QUIT\r\n")
        check(c.reply(), 500, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")
        c.send(b"X" * 1200 + b"\r\nMAIL FROM:<a@example.org>\r\n")
        check(c.reply(), 500, "5.5.2")
        check(c.reply(), 250, "2.1.0")
        c.expect("QUIT", 221, "2.0.0")


def test_bare_lf_command_refused(relay):
    """RFC 5321 2.3.8 / 4.1.1: only CRLF ends a command; a bare-LF line gets
    500 5.5.2 and is not executed."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.org>\n")
        check(c.reply(), 500, "5.5.2")
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")  # the MAIL never ran
        c.send(b"NOOP\nNOOP\r\n")
        check(c.reply(), 500, "5.5.2")
        check(c.reply(), 250, "2.0.0")
        c.expect("NOOP", 250, "2.0.0")


SMUGGLING_ENDS = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\r.\r", id="CR.CR"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
]


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_data_smuggling_is_not_end_of_data(relay, fake_end):
    """SMTP smuggling (CVE-2023-51764/51765/51766, RFC 5321 4.1.1.4): only
    <CRLF>.<CRLF> ends DATA.  A fake end with bare CR/LF followed by a
    second transaction is content; the whole message is refused with
    550 5.5.2 at the real end and the smuggled MAIL FROM never runs."""
    smuggled = (b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    with Smtp(relay.port) as c:
        start_tx(c)
        r = send_data(c, b"Subject: x\r\n\r\nhello" + fake_end + smuggled + b".\r\n")
        check(r, 550, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")  # nothing else was answered in between
        c.expect("QUIT", 221, "2.0.0")
        assert c.closed()
    assert_nothing_queued(relay)
    log = relay.logs()
    assert "evil@x.example" not in log and "victim@example.com" not in log
    assert re.search(r"smtp reject id=\S+ size=\d+ reply=\"550 5\.5\.2 ", log)


def test_data_line_too_long(relay):
    """RFC 5321 4.5.3.1.6: a text line is at most 998 octets before CRLF.
    998 is fine; 999 gets 550 5.6.0 at the end and nothing is queued."""
    with Smtp(relay.port) as c:
        start_tx(c)
        ok = b"Subject: long\r\n\r\n" + b"y" * 998 + b"\r\n"
        qid = qid_of(send_data(c, ok + b".\r\n"))
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        check(send_data(c, b"Subject: long\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n"), 550, "5.6.0")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        check(send_data(c, b"Subject: long\r\n\r\n" + b"z" * 100000 + b"\r\n.\r\n"), 550, "5.6.0")
        c.expect("NOOP", 250, "2.0.0")
    assert relay.queued() == [qid]
    assert split_received(relay.message(qid)[0])[1] == ok
    wait_until(lambda: tmp_files(relay) == [], 5, "tmp/ to be empty")


def test_too_many_errors_closes_session(relay):
    """Like Postfix's smtpd_hard_error_limit: the 20th error gets its reply
    and then 421 4.7.0, and the connection is closed (RFC 5321 3.8)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.send(b"".join(b"JUNK%d\r\n" % i for i in range(20)))
        for _ in range(20):
            check(c.reply(), 500, "5.5.2")
        r = c.reply()
        check(r, 421, "4.7.0")
        assert r.lines[-1] == "4.7.0 relay.test Error: too many errors"
        assert c.closed()
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="too many errors"')


@pytest.mark.parametrize("case", ["refused recipients", "out of sequence", "mixed"])
def test_refusals_count_toward_the_error_limit(relay, case):
    """Refused recipients and commands out of sequence count as errors too:
    a session cannot probe relaying or addresses without limit.  A 452 for
    too many recipients does not count (the client sends the rest later)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        if case == "refused recipients":
            c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
            cmds = [b"RCPT TO:<Postmaster>\r\n"] * 20  # 550 5.1.1: no local delivery
            want = [(550, "5.1.1")] * 20
        elif case == "out of sequence":
            cmds = [b"RCPT TO:<b%d@example.com>\r\n" % i for i in range(10)] + \
                   [b"DATA\r\n"] * 10  # 503 5.5.1: need MAIL
            want = [(503, "5.5.1")] * 20
        else:
            cmds = [b"AUTH PLAIN x\r\n", b"RCPT TO:<b@example.com>\r\n"] * 5 + \
                   [b"MAIL FROM:<a@example.org>\r\n"] + \
                   [b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<postmaster>\r\n"] * 5
            want = [(503, "5.5.1")] * 10 + [(250, "2.1.0")] + [(503, "5.5.1"), (550, "5.1.1")] * 5
        c.send(b"".join(cmds))
        for code, enh in want:
            check(c.reply(), code, enh)
        r = c.reply()
        check(r, 421, "4.7.0")
        assert c.closed()
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="too many errors"')


def test_too_many_recipients_is_not_an_error(relay_factory):
    """452 4.5.3 past MaxRecipients is not counted: a client that sends 30
    recipients over the limit keeps its session and its message."""
    relay = relay_factory("MaxRecipients=2\n")
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.send(b"".join(b"RCPT TO:<b%d@example.com>\r\n" % i for i in range(32)))
        for i in range(32):
            check(c.reply(), 250 if i < 2 else 452, "2.1.5" if i < 2 else "4.5.3")
        c.expect("NOOP", 250, "2.0.0")


def test_control_characters_in_commands(relay):
    """RFC 5321 4.1.1 / 2.4: commands are printable US-ASCII; NUL and other
    controls get 500 5.5.2 and do not run."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect(b"NOOP\x00", 500, "5.5.2")
        c.expect(b"NO\x00OP", 500, "5.5.2")
        c.expect(b"MAIL FROM:<a\x01@example.org>", 500, "5.5.2")
        c.expect(b"MAIL FROM:<a@example.org>\x7f", 500, "5.5.2")
        c.expect(b"EHLO a\tb", 500, "5.5.2")
        c.expect(b"NOOP\rMAIL FROM:<a@example.org>", 500, "5.5.2")  # a CR splits nothing
        c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")  # no MAIL ran
        c.expect("NOOP", 250, "2.0.0")


def test_client_disconnect_mid_data_queues_nothing(relay):
    """RFC 5321 4.1.1.4 / 6.1: without the end of data the message is not
    accepted; a lost connection leaves nothing in queue/ or tmp/."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: cut\r\n\r\npartial body\r\n")
        time.sleep(0.2)
    relay.wait_log(r'smtp disconnect .*reason="lost connection in message content"')
    assert_nothing_queued(relay)


# ---- 7. size ---------------------------------------------------------------


def test_mail_size_parameter_over_limit(relay):
    """RFC 1870 6.1: MAIL FROM with SIZE= over the limit gets 552 5.3.4 (RFC
    3463); at the limit it is fine."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org> SIZE=10240001", 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org> SIZE=1x", 501, "5.5.4")
        c.expect("MAIL FROM:<a@example.org> SIZE=10240000", 250, "2.1.0")


def test_size_parameter_of_twenty_digits(relay):
    """RFC 1870 4/6.1: size-value is 1*20DIGIT, so SIZE=99999999999999999999
    is well-formed; it exceeds the limit, so the reply is 552 5.3.4, not a
    syntax error."""
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org> SIZE=99999999999999999999", 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org> SIZE=00000000000000000001", 250, "2.1.0")


def test_message_over_max_size(relay_factory):
    """RFC 1870 6.3 / RFC 5321 4.5.3.1.10: content over MaxMessageSize gets
    552 5.3.4 after the final dot (and after BDAT LAST); nothing is queued
    and the session goes on."""
    relay = relay_factory(conf="MaxMessageSize=2048", tls=False)
    big = b"Subject: big\r\n\r\n" + b"x" * 70 * 2 + b"\r\n" + (b"y" * 70 + b"\r\n") * 60
    with Smtp(relay.port) as c:
        r = c.ehlo()
        assert "SIZE 2048" in r.lines and "STARTTLS" not in r.lines
        c.expect("MAIL FROM:<a@example.org> SIZE=2049", 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        check(send_data(c, big + b".\r\n"), 552, "5.3.4")
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        check(bdat(c, big[:1000]), 250, "2.0.0")
        check(bdat(c, big[1000:], last=True), 552, "5.3.4")
        assert_nothing_queued(relay)
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
        qid = qid_of(send_data(c, b"Subject: small\r\n\r\nfits\r\n.\r\n"))
    assert relay.queued() == [qid]


def test_large_message_stored_exactly(relay):
    """A 2 MB message crosses many reads and spool writes and is stored byte
    for byte (exercises the spool's back-pressure path)."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = b"Subject: large\r\n\r\n" + line * (2 * 1024 * 1024 // len(line))
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert s.sendmail("a@example.org", ["b@example.com"], body) == {}
    (qid,) = relay.queued()
    wire, env = relay.message(qid)
    assert split_received(wire)[1] == body
    assert env["size"] == str(len(wire))


# ---- 8. recipients ---------------------------------------------------------


def test_max_recipients(relay_factory):
    """RFC 5321 4.5.3.1.8 / 4.5.3.1.10: past MaxRecipients a RCPT gets
    452 4.5.3 (try later); the message still goes to the accepted ones."""
    relay = relay_factory(conf="MaxRecipients=3", tls=False)
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        for i in range(3):
            c.expect(f"RCPT TO:<r{i}@example.com>", 250, "2.1.5")
        c.expect("RCPT TO:<r3@example.com>", 452, "4.5.3")
        c.expect("RCPT TO:<r4@example.com>", 452, "4.5.3")
        qid = qid_of(send_data(c, b"Subject: many\r\n\r\nx\r\n.\r\n"))
    env = relay.message(qid)[1]
    assert env["rcpt"] == [("P", f"r{i}@example.com") for i in range(3)]


# ---- 9. relay control ------------------------------------------------------


def test_relay_control_without_trusted_client(relay_factory):
    """No open relay (RFC 5321 3.6.2, RFC 2505): loopback is not a relay
    client here, so only RelayDomains (case-insensitively, RFC 5321 2.4) are
    accepted; others get 550 5.7.1 and a status=rejected log line."""
    relay = relay_factory(conf="RelayClients=10.9.9.9/32\nRelayDomains=example.com", tls=False)
    with Smtp(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<x@example.com>", 250, "2.1.5")
        c.expect("RCPT TO:<x@EXAMPLE.COM>", 250, "2.1.5")
        c.expect("RCPT TO:<x@other.org>", 550, "5.7.1")
        c.expect("RCPT TO:<x@sub.example.com>", 550, "5.7.1")
        c.expect("RCPT TO:<x@example.com.other.org>", 550, "5.7.1")
        c.expect("RCPT TO:<@example.com:x@other.org>", 550, "5.7.1")  # source route
        c.expect('RCPT TO:<"x@other.org"@example.com>', 250, "2.1.5")
        c.expect("RCPT TO:<postmaster>", 550, "5.1.1")
        c.expect("RCPT TO:<x@[10.9.9.9]>", 550, "5.7.1")
        qid = qid_of(send_data(c, b"Subject: relay\r\n\r\nx\r\n.\r\n"))
    env = relay.message(qid)[1]
    assert env["rcpt"] == [("P", "x@example.com"), ("P", "x@EXAMPLE.COM"),
                           ("P", '"x@other.org"@example.com')]
    log = relay.logs()
    assert re.search(r"smtp to id=\S+ to=<x@other\.org> status=rejected "
                     r"reply=\"550 5\.7\.1 Error: relay access denied\"", log)
    assert re.search(r"smtp to id=\S+ to=<postmaster> status=rejected reply=\"550 5\.1\.1 ", log)
    assert "to=<x@other.org> status=accepted" not in log


def test_relay_allowed_from_loopback_by_default(relay):
    """Default RelayClients trust 127.0.0.0/8: any domain may be relayed."""
    with Smtp(relay.port) as c:
        start_tx(c, rcpts=["x@other.org", "y@example.net"])
        qid = qid_of(send_data(c, b"Subject: out\r\n\r\nx\r\n.\r\n"))
    assert relay.message(qid)[1]["rcpt"] == [("P", "x@other.org"), ("P", "y@example.net")]


# ---- 10. timeouts ----------------------------------------------------------


def test_command_timeout(relay_factory):
    """RFC 5321 4.5.3.2.7: an idle client is dropped after CommandTimeout
    with 421 4.4.2, then the connection closes."""
    relay = relay_factory(conf="CommandTimeout=2", tls=False)
    with Smtp(relay.port) as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply()
        elapsed = time.monotonic() - t0
        check(r, 421, "4.4.2")
        assert r.lines[-1] == "4.4.2 relay.test Error: timeout exceeded"
        assert 1.5 <= elapsed <= 5, elapsed
        assert c.closed()
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="timeout"')


def test_data_timeout(relay_factory):
    """RFC 5321 4.5.3.2.6: a client that stops in the middle of DATA gets
    421 4.4.2 after DataTimeout; the partial message is not queued and its
    tmp/ file is removed."""
    relay = relay_factory(conf="CommandTimeout=30\nDataTimeout=2", tls=False)
    with Smtp(relay.port) as c:
        start_tx(c)
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: slow\r\n\r\npartial")
        t0 = time.monotonic()
        r = c.reply()
        elapsed = time.monotonic() - t0
        check(r, 421, "4.4.2")
        assert 1.5 <= elapsed <= 5, elapsed
        assert c.closed()
    relay.wait_log(r"smtp timeout state=data")
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="timeout"')
    assert_nothing_queued(relay)


# ---- 11. connection limit --------------------------------------------------


def test_max_connections(relay_factory):
    """MaxConnections=2: a third simultaneous client gets 421 4.7.0 (RFC
    5321 3.8) and is closed; once one leaves, a new client is served."""
    relay = relay_factory(conf="MaxConnections=2", tls=False)
    wait_sessions_closed(relay)  # the fixture's readiness probe
    c1, c2 = Smtp(relay.port), Smtp(relay.port)
    try:
        c1.ehlo()
        c2.ehlo()
        with Smtp(relay.port, greet=False) as c3:
            r = c3.reply()
            assert r == Reply(421, ["4.7.0 relay.test Error: too many connections"])
            assert c3.closed()
        relay.wait_log(r'reason="too many connections"')
        gone = relay.logs().count(" smtp disconnect ")
        c1.expect("QUIT", 221, "2.0.0")
        assert c1.closed()
        wait_until(lambda: relay.logs().count(" smtp disconnect ") > gone, 5, "c1 to end")
        time.sleep(0.1)  # the count drops just after the disconnect line
        with Smtp(relay.port) as c4:  # asserts the 220 greeting
            c4.ehlo()
            c4.expect("NOOP", 250, "2.0.0")
        c2.expect("NOOP", 250, "2.0.0")
    finally:
        c1.close()
        c2.close()


# ---- 12. log lines ---------------------------------------------------------

LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) krelay\[(\d+)\]: "
                      r"([0-9a-f]{16}) (smtp \S+)(.*)")


def test_session_log_lines(relay):
    """The log records a delivery: connect, from, to, queued, disconnect,
    each line "ISO-time krelay[pid]: <16 hex session id> smtp ..."."""
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        s.ehlo()
        assert s.sendmail("a@example.org", ["b@example.com"], "Subject: log\r\n\r\nx\r\n") == {}
    (qid,) = relay.queued()
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 commands=\d+ messages=1 reason="quit"')
    from_line = relay.wait_log(rf"(?m)^.* smtp from id={qid} .*$").group(0)
    sid = LOG_LINE.fullmatch(from_line).group(3)
    mine = [LOG_LINE.fullmatch(line) for line in relay.logs().splitlines() if f" {sid} " in line]
    assert all(mine), relay.logs()
    now = datetime.now(timezone.utc)
    for m in mine:
        t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs((now - t).total_seconds()) < 120
        assert int(m.group(2)) == relay.proc.pid
        assert m.group(3) == sid
    events = [(m.group(4), m.group(5)) for m in mine]
    kinds = [e[0] for e in events]
    assert kinds == ["smtp connect", "smtp from", "smtp to", "smtp queued", "smtp disconnect"]
    assert re.fullmatch(rf" client=127\.0\.0\.1 port=\d+ listener=127\.0\.0\.1:{relay.port} "
                        r"smtps=0", events[0][1])
    assert re.fullmatch(rf" id={qid} from=<a@example\.org> size=\d+", events[1][1])
    assert events[2][1] == f" id={qid} to=<b@example.com> status=accepted"
    size = len(relay.message(qid)[0])
    assert re.fullmatch(rf" id={qid} from=<a@example\.org> size={size} nrcpt=1 "
                        r"delay_ms=\d+\.\d", events[3][1])
    assert re.fullmatch(r' client=127\.0\.0\.1 commands=\d+ messages=1 reason="quit"',
                        events[4][1])


# ---- shutdown as the client sees it ----------------------------------------


def test_shutdown_tells_idle_client_421(relay):
    """RFC 5321 3.8: on SIGTERM an idle session gets 421 4.3.2 before the
    relay exits (0, checked by the fixture)."""
    with Smtp(relay.port) as c:
        c.ehlo()
        rc = []
        t = threading.Thread(target=lambda: rc.append(relay.stop(signal.SIGTERM)))
        t.start()
        try:
            r = c.reply()
            check(r, 421, "4.3.2")
            assert c.closed()
        finally:
            t.join(30)
    assert rc == [0]


def test_shutdown_during_data_drops_message(relay):
    """RFC 5321 3.8 / 4.1.1.4: on SIGTERM a message still being received is
    not acknowledged, so it must not be queued; the client gets one 421
    4.3.2 and the connection closes."""
    with Smtp(relay.port) as c:
        start_tx(c)
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: interrupted\r\n\r\nhalf a messa")
        time.sleep(0.2)
        rc = []
        t = threading.Thread(target=lambda: rc.append(relay.stop(signal.SIGTERM)))
        t.start()
        try:
            r = c.reply()
            check(r, 421, "4.3.2")
            assert c.closed()
        finally:
            t.join(30)
    assert rc == [0]
    assert relay.queued() == []
    assert tmp_files(relay) == []
