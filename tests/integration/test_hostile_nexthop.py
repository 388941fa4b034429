"""The next hop as an adversary: krelay's SMTP client against a next hop
that breaks the protocol on purpose.  Any recipient domain's MX can do this,
so none of it may crash the relay, lose a message, send one twice, or write
the peer's words into the log as anything but quoted data.

The next hop is HostilePeer, a raw-socket SMTP server on loopback (Python's
socket and ssl, nothing else), reached with `SmartHost=[127.0.0.1]:PORT`.
Its first connection runs the misbehaviour under test; every later one is
a plain, correct server that confirms each message with "250 ... queued as
GOODn".  RetrySchedule=1s brings the retry within seconds.

For every case: krelay keeps running (and the relay_factory fixture checks
at teardown that it exits 0 with no sanitizer report); the message is
deferred on the hostile connection unless that connection gave it a real
final reply; the retry delivers it; the next hop holds exactly one
confirmed copy; krelay logs exactly one status=sent for it, never
status=bounced; and queue/ ends empty.
"""
import os
import re
import smtplib
import socket
import ssl
import struct
import threading
import time

import pytest

from helpers import deliveries, wait_for

QID = r"[0-9A-F]{16}"
EHLO_LINES = ["hostile.test", "PIPELINING", "8BITMIME", "SIZE 50000000"]
LINE_MAX = 1 << 20  # the peer reads no line longer than this
BODY_MAX = 64 << 20


class Session:
    """One connection of HostilePeer: bounded line reads, plain or split
    writes, and STARTTLS on the server side."""

    def __init__(self, peer, conn, index):
        self.peer, self.conn, self.index = peer, conn, index
        self.buf = b""
        self.conn.settimeout(10)

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > LINE_MAX:
                raise EOFError("line too long")
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def say(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.conn.sendall(data)

    def say_split(self, data, gap=0.002):
        """One byte per send, each flushed (TCP_NODELAY) after a short gap."""
        if isinstance(data, str):
            data = data.encode()
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            self.conn.sendall(data[i:i + 1])
            time.sleep(gap)

    def read_body(self, limit=None):
        """The DATA body up to "." (dot-unstuffed); with limit, stops after
        that many bytes and returns None."""
        body = bytearray()
        while True:
            ln = self.line()
            if ln == b".":
                return bytes(body)
            body += (ln[1:] if ln.startswith(b".") else ln) + b"\r\n"
            if len(body) > BODY_MAX or (limit is not None and len(body) >= limit):
                return None

    def confirm(self):
        """Records the message just read as confirmed: call it before the
        2xx to the end of data goes out."""
        with self.peer.lock:
            self.peer.confirmed.append(self.message)

    def starttls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.peer.certs.server_crt, self.peer.certs.server_key)
        assert not self.buf, "input pipelined behind STARTTLS"
        self.conn = ctx.wrap_socket(self.conn, server_side=True)
        self.conn.settimeout(10)


def normal_replies(sess, stage, text):
    """What a correct server says at each stage."""
    sess.say(text)


class HostilePeer:
    """A next hop on loopback.  Connection 0 runs with `hooks`: a dict from
    stage ("greeting", "ehlo", "mail", "rcpt", "data", "body", "end") to
    hook(session, stage, normal_reply_text), each used once, the first time
    its stage comes; a hook says what it likes (or nothing) and may raise
    EOFError to end the connection.  Everything else behaves.  `confirmed`
    lists (sender, rcpts, body) of every message whose end of data was
    answered 2xx."""

    def __init__(self, hooks=None, certs=None, starttls=False, ehlo=None):
        self.hooks = hooks or {}
        self.certs = certs
        self.starttls = starttls
        self.ehlo = list(ehlo or EHLO_LINES) + (["STARTTLS"] if starttls else [])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.confirmed = []
        self.connections = 0
        self.closed_without_quit = 0
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                index = self.connections
                self.connections += 1
            t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn, index):
        sess = Session(self, conn, index)
        quit_seen = False
        try:
            quit_seen = self._session(sess, dict(self.hooks) if index == 0 else {})
        except (OSError, EOFError, ssl.SSLError, ValueError):
            pass
        finally:
            if not quit_seen:
                with self.lock:
                    self.closed_without_quit += 1
            try:
                sess.conn.close()
            except OSError:
                pass

    def _session(self, sess, hooks):
        def reply(stage, text):
            hooks.pop(stage, normal_replies)(sess, stage, text)

        reply("greeting", "220 hostile.test ESMTP\r\n")
        sender, rcpts, tls = None, [], False
        for _ in range(10000):
            cmd = sess.line()
            verb = cmd.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                ext = [x for x in self.ehlo if x != "STARTTLS" or not tls]
                reply("ehlo", "".join(f"250-{x}\r\n" for x in ext[:-1]) + f"250 {ext[-1]}\r\n")
            elif verb == b"STARTTLS" and self.starttls and not tls:
                sess.say("220 2.0.0 Ready to start TLS\r\n")
                sess.starttls()
                tls = True
            elif verb == b"MAIL":
                sender, rcpts = cmd, []
                reply("mail", "250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(cmd)
                reply("rcpt", "250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                reply("data", "354 End data with <CR><LF>.<CR><LF>\r\n")
                if "body" in hooks:
                    hooks.pop("body")(sess, "body", None)
                    return False
                sess.message = (sender, rcpts, sess.read_body())
                with self.lock:
                    n = len(self.confirmed) + 1
                text = f"250 2.0.0 Ok: queued as GOOD{n}\r\n"
                if "end" not in hooks:
                    sess.confirm()
                    sess.say(text)
                else:
                    hooks.pop("end")(sess, "end", text)
            elif verb in (b"RSET", b"NOOP"):
                sess.say("250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                sess.say("221 2.0.0 Bye\r\n")
                return True
            else:
                sess.say("502 5.5.2 Error: command not recognized\r\n")
        return False

    def messages(self, tag):
        with self.lock:
            return [m for m in self.confirmed if f"<{tag}@example.org>".encode() in m[2]]

    def close(self):
        self.stopping = True
        self.acceptor.join(2)
        self.sock.close()
        for t in self.threads:
            t.join(15)


@pytest.fixture
def peer_factory():
    made = []

    def make(**kw):
        made.append(HostilePeer(**kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


# ---- hooks: what the hostile first connection does ------------------------------


def extra(more):
    """The normal reply, then `more`, in the same write."""
    def hook(sess, stage, text):
        sess.say(text.encode() + more)
    return hook


def instead(data):
    """`data` instead of the normal reply."""
    def hook(sess, stage, text):
        sess.say(data)
    return hook


def silent(sess, stage, text):
    """No reply at all (one was sent ahead)."""


def split(sess, stage, text):
    sess.say_split(text)


def split_end(sess, stage, text):
    sess.confirm()
    sess.say_split(text)


def hang(sess, stage, text):
    """Says nothing, and waits (bounded) for the relay to give up."""
    sess.conn.settimeout(15)
    while sess.conn.recv(65536):
        pass
    raise EOFError


def confirm_then(more):
    """The real 250 to the end of data, then `more` in the same write."""
    def hook(sess, stage, text):
        sess.confirm()
        sess.say(text.encode() + more)
    return hook


def confirm_with(data):
    """`data` (a 2xx) instead of the normal 250 to the end of data."""
    def hook(sess, stage, text):
        sess.confirm()
        sess.say(data)
    return hook


# ---- relay side ------------------------------------------------------------------


def conf_for(peer, extra_conf=""):
    return (f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\nRetrySchedule=1s,2s\n"
            f"CommandTimeout=2\nLogLevel=10\n{extra_conf}")


def message(tag, body=b"hostile next hop\r\n"):
    return (f"From: <s@example.org>\r\nTo: <r@example.com>\r\nSubject: {tag}\r\n"
            f"Message-Id: <{tag}@example.org>\r\n\r\n").encode() + body


def submit(relay, tag, body=b"hostile next hop\r\n", rcpts=("r@example.com",),
           sender="s@example.org"):
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        code, msg = s.docmd(f"MAIL FROM:<{sender}>")
        assert code == 250, msg
        for r in rcpts:
            code, msg = s.docmd(f"RCPT TO:<{r}>")
            assert code == 250, msg
        code, msg = s.data(message(tag, body))
        assert code == 250, msg
        m = re.search(rf"queued as ({QID})", msg.decode())
        assert m, msg
        return m.group(1)


def lines_for(relay, qid):
    return [d for d in deliveries(relay) if d["qid"] == qid]


def wait_lines(relay, qid, pred, timeout, what):
    def check():
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited {relay.proc.returncode}:\n"
                                 f"{relay.errors()[-4000:]}")
        got = lines_for(relay, qid)
        return got if pred(got) else None
    try:
        return wait_for(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\nkrelay log:\n{relay.logs()[-4000:]}") from None


def spool_empty(relay):
    q = relay.queue / "queue"
    return not q.exists() or not any(q.iterdir())


def check_delivered_once(relay, peer, qid, tag):
    """One status=sent per recipient, no bounce, one confirmed copy at the
    peer, queue/ empty; and so for good: the message's traced phases reach
    removing (after which nothing of it can be tried again)."""
    sent = wait_lines(relay, qid, lambda d: any(x["status"] == "sent" for x in d), 20,
                      f"status=sent for {qid}")
    wait_for(lambda: spool_empty(relay), 10, "queue/ to empty")
    relay.wait_log(rf"trace: message {qid} active -> removing")
    got = lines_for(relay, qid)
    for to in {d["to"] for d in got}:
        statuses = [d["status"] for d in got if d["to"] == to]
        assert statuses.count("sent") == 1 and "bounced" not in statuses, (to, statuses,
                                                                            relay.logs())
    sent = [d for d in got if d["status"] == "sent"]
    assert len(peer.messages(tag)) == 1, (len(peer.messages(tag)), relay.logs()[-3000:])
    assert spool_empty(relay)
    assert relay.proc.poll() is None, relay.errors()[-4000:]
    return sent


# ---- 1. replies nobody asked for, bad replies, silence ----------------------------

DEFERRED_CASES = {
    # extra replies behind a real one, at each stage
    "extra_after_greeting": dict(hooks={"greeting": extra(b"250 2.0.0 extra\r\n")}),
    "extra_after_ehlo": dict(hooks={"ehlo": extra(b"250 2.0.0 extra\r\n")}),
    "extra_after_mail": dict(hooks={"mail": extra(b"250 2.1.0 extra\r\n")}),
    "extra_after_mail_no_pipelining": dict(hooks={"mail": extra(b"250 2.1.0 extra\r\n")},
                                           ehlo=["hostile.test", "8BITMIME"]),
    "extra_after_rcpt": dict(hooks={"rcpt": extra(b"250 2.1.5 extra\r\n250 2.1.5 more\r\n")}),
    "extra_after_354": dict(hooks={"data": extra(b"250 2.0.0 extra\r\n")}),
    # replies before the command they answer was sent
    "mail_reply_before_mail": dict(hooks={"ehlo": extra(b"250 2.1.0 Sender ok\r\n")}),
    "replies_ahead_of_data": dict(hooks={
        "mail": instead(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n250 2.0.0 extra\r\n"),
        "rcpt": silent, "data": silent}),
    "banner_flood": dict(hooks={"greeting": instead(b"220 hostile.test flood\r\n" * 300)}),
    # bounds
    "overlong_line": dict(hooks={"ehlo": instead(b"250-" + b"x" * 5000 + b"\r\n250 OK\r\n")}),
    "endless_line": dict(hooks={"mail": instead(b"250 " + b"y" * 100000)}),
    "too_many_lines": dict(hooks={"ehlo": instead(b"250-hostile.test\r\n" * 5000 +
                                                  b"250 OK\r\n")}),
    # bad codes
    "code_abc": dict(hooks={"mail": instead(b"abc Ok\r\n")}),
    "code_25": dict(hooks={"mail": instead(b"25\r\n")}),
    "code_2500": dict(hooks={"mail": instead(b"2500 Ok\r\n")}),
    "code_600": dict(hooks={"mail": instead(b"600 Ok\r\n")}),
    "codes_differ_between_lines": dict(
        hooks={"rcpt": instead(b"550-5.1.1 no\r\n250 2.1.5 Ok\r\n")}),
    "250_to_data": dict(hooks={"data": instead(b"250 2.0.0 Ok\r\n")}),
    "354_to_end_of_data": dict(hooks={"end": instead(b"354 again\r\n")}),
    # silence
    "no_greeting": dict(hooks={"greeting": hang}),
    "no_reply_to_end_of_data": dict(hooks={"end": hang}),
}


@pytest.mark.parametrize("case", list(DEFERRED_CASES))
def test_hostile_reply_is_deferred_then_delivered_once(relay_factory, peer_factory, case):
    """The first connection misbehaves: krelay closes it, defers the message
    (dsn 4.x.x, never sent or bounced on the strength of it), and the retry
    to the now-correct next hop delivers it exactly once."""
    peer = peer_factory(**DEFERRED_CASES[case])
    relay = relay_factory(conf_for(peer))
    tag = f"{case}-{time.time_ns()}"
    qid = submit(relay, tag)
    first = wait_lines(relay, qid, lambda d: len(d) >= 1, 20, "the first delivery line")[0]
    assert (first["status"], first["dsn"][0]) == ("deferred", "4"), first
    check_delivered_once(relay, peer, qid, tag)
    assert peer.connections >= 2
    assert relay.proc.poll() is None


def test_extra_reply_after_final_250_keeps_it_sent(relay_factory, peer_factory):
    """The next hop confirms the message (250 to the end of data) and says
    more behind it.  The 250 stands: status=sent once, never sent again; the
    connection is closed (no QUIT) and the protocol error is logged; a second
    message goes out on a new connection."""
    peer = peer_factory(hooks={"end": confirm_then(b"250 2.0.0 extra\r\n550 5.0.0 and more\r\n")})
    relay = relay_factory(conf_for(peer))
    tag = f"after-final-{time.time_ns()}"
    qid = submit(relay, tag)
    d = check_delivered_once(relay, peer, qid, tag)
    assert [x["status"] for x in d] == ["sent"], d
    assert d[0]["reply"] == "250 2.0.0 Ok: queued as GOOD1", d
    relay.wait_log(r"protocol error from 127\.0\.0\.1:\d+: connection closed; .* "
                   r"reason=\"unexpected reply \(more replies than commands\): "
                   r"250 2\.0\.0 extra\"")
    wait_for(lambda: peer.closed_without_quit >= 1, 5, "the hostile connection to close")
    tag2 = f"after-final-2-{time.time_ns()}"
    qid2 = submit(relay, tag2)
    check_delivered_once(relay, peer, qid2, tag2)
    assert peer.connections == 2


def test_extra_reply_while_idle_closes_the_connection(relay_factory, peer_factory):
    """After the 250 to the end of data the next hop waits a moment and
    then speaks unasked, while krelay's connection is idle: krelay closes it
    (it is not reused for the next message, whose MAIL would have taken
    that reply as its answer)."""
    def late(sess, stage, text):
        sess.confirm()
        sess.say(text)
        time.sleep(0.3)
        sess.say(b"250 2.1.0 Sender ok\r\n")

    peer = peer_factory(hooks={"end": late})
    relay = relay_factory(conf_for(peer))
    tag = f"idle-{time.time_ns()}"
    qid = submit(relay, tag)
    check_delivered_once(relay, peer, qid, tag)
    relay.wait_log(r"protocol error from 127\.0\.0\.1:\d+: .*reason=\"unexpected reply "
                   r"\(more replies than commands\): 250 2\.1\.0 Sender ok\"")
    tag2 = f"idle-2-{time.time_ns()}"
    qid2 = submit(relay, tag2)
    check_delivered_once(relay, peer, qid2, tag2)
    assert peer.connections == 2


def test_replies_split_at_every_byte(relay_factory, peer_factory):
    """Every reply, multi-line EHLO included, arrives one byte per segment:
    that is still correct SMTP, so the first attempt delivers it."""
    stages = ("greeting", "ehlo", "mail", "rcpt", "data")
    hooks = {s: split for s in stages}
    hooks["end"] = split_end
    peer = peer_factory(hooks=hooks)
    relay = relay_factory(conf_for(peer, "CommandTimeout=10\n"))
    tag = f"split-{time.time_ns()}"
    qid = submit(relay, tag, rcpts=("a@example.com", "b@example.com"))
    d = check_delivered_once(relay, peer, qid, tag)
    assert [x["status"] for x in d] == ["sent", "sent"], d
    assert peer.connections == 1


# ---- 2. TLS torn down in the middle of the body -------------------------------------


def tls_alert_mid_body(sess, stage, text):
    """Reads some of the body, then writes a fatal TLS alert record in
    clear on the socket and resets the connection."""
    sess.read_body(limit=64 << 10)
    raw = sess.conn.fileno()
    s = socket.socket(fileno=os.dup(raw))
    s.sendall(b"\x15\x03\x03\x00\x02\x02\x50")  # fatal internal_error
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    raise EOFError


def close_notify_mid_body(sess, stage, text):
    """Reads some of the body, then ends TLS (close_notify) and the TCP
    connection."""
    sess.read_body(limit=64 << 10)
    sess.conn.setblocking(False)
    try:
        sess.conn.unwrap()
    except (ssl.SSLError, OSError):
        pass
    raise EOFError


@pytest.mark.parametrize("how", [tls_alert_mid_body, close_notify_mid_body],
                         ids=["alert", "close_notify"])
def test_tls_torn_down_mid_body(relay_factory, peer_factory, certs, how):
    peer = peer_factory(hooks={"body": how}, certs=certs, starttls=True)
    relay = relay_factory(conf_for(peer, "TLSPolicy=encrypt\n"))
    tag = f"tls-{how.__name__}-{time.time_ns()}"
    body = b"".join(b"%06d tls body line, long enough to take a while\r\n" % i
                    for i in range(40000))
    qid = submit(relay, tag, body=body)
    first = wait_lines(relay, qid, lambda d: len(d) >= 1, 20, "the first delivery line")[0]
    assert (first["status"], first["dsn"][0]) == ("deferred", "4"), first
    sent = check_delivered_once(relay, peer, qid, tag)
    assert sent[-1]["tls"].startswith("TLSv1."), sent
    assert peer.messages(tag)[0][2].endswith(body)


# ---- 3. the peer's words in the log ---------------------------------------------------

TOKEN_RE = re.compile(r' ([a-z_]+)=(<[^<>"]*>|"[^"]*"|[^ "<>]+)')


def log_fields(line):
    """Splits a delivery line into its key=value pairs, the way a log reader
    would; asserts that nothing is left over (no stray quote or bracket)."""
    m = re.match(rf"^.*? ({QID}) delivery(.*)$", line)
    assert m, line
    rest, pairs = m.group(2), []
    pos = 0
    while pos < len(rest):
        t = TOKEN_RE.match(rest, pos)
        assert t, f"unparsable at {rest[pos:pos + 60]!r} in {line!r}"
        pairs.append((t.group(1), t.group(2)))
        pos = t.end()
    return pairs


def unescape(value):
    """Turns krelay's \\xHH escapes back into bytes (well-formed UTF-8 text
    stands as itself in the log)."""
    return re.sub(rb"\\x([0-9A-F]{2})", lambda mm: bytes([int(mm.group(1), 16)]),
                  value.encode("utf-8"))


def test_peer_reply_and_addresses_are_escaped_in_the_log(relay_factory, peer_factory):
    """The 250 to the end of data carries '"', '\\', '<>', a fake
    ' status=sent ' and 8-bit bytes; the recipient is a quoted local part
    with the same kinds of characters.  The log line parses into one
    status= (sent) and a reply that unescapes to exactly the peer's text."""
    nasty = b'250 2.0.0 Ok "quoted" back\\slash <angle> status=sent dsn=5.0.0 \xff\xe9t\xc3\xa9 end'
    peer = peer_factory(hooks={"end": confirm_with(nasty + b"\r\n")})
    relay = relay_factory(conf_for(peer))
    tag = f"escape-{time.time_ns()}"
    rcpt = '"odd \\"q\\" <x> status=bounced"@example.com'
    qid = submit(relay, tag, rcpts=(rcpt,))
    wait_for(lambda: spool_empty(relay), 20, "queue/ to empty")

    def delivery_lines():  # (logged once the removal is durable: after queue/ empties)
        return [ln for ln in relay.log.read_bytes().decode("utf-8").splitlines()
                if f"{qid} delivery " in ln]
    lines = wait_for(delivery_lines, 20, "the delivery line")
    assert len(lines) == 1, lines
    fields = log_fields(lines[0])
    keys = [k for k, _ in fields]
    assert keys.count("status") == 1 and keys.count("dsn") == 1, fields
    f = dict(fields)
    assert f["status"] == "sent" and f["dsn"] == "2.0.0", f
    assert unescape(f["reply"][1:-1]) == nasty, f["reply"]
    assert unescape(f["to"][1:-1]) == rcpt.encode(), f["to"]
    assert len(peer.messages(tag)) == 1


def test_protocol_error_text_is_escaped_in_the_log(relay_factory, peer_factory):
    """A malformed reply with quotes and 8-bit bytes: the protocol-error line
    and the deferral quote it escaped."""
    peer = peer_factory(hooks={"mail": instead(b'2x0 "bad" \xff status=sent\r\n')})
    relay = relay_factory(conf_for(peer))
    tag = f"escape-err-{time.time_ns()}"
    qid = submit(relay, tag)
    first = wait_lines(relay, qid, lambda d: len(d) >= 1, 20, "the first delivery line")[0]
    assert first["status"] == "deferred", first
    text = relay.log.read_bytes().decode("utf-8")
    line = next(ln for ln in text.splitlines() if f"{qid} delivery " in ln)
    f = dict(log_fields(line))
    assert unescape(f["reply"][1:-1]) == b'malformed reply: 2x0 "bad" \xff status=sent', f
    err = re.search(r'protocol error from 127\.0\.0\.1:\d+: .* reason="([^"]*)"$', text, re.M)
    assert err and unescape(err.group(1)) == b'malformed reply: 2x0 "bad" \xff status=sent', text
    check_delivered_once(relay, peer, qid, tag)


# ---- 4. multi-line replies: the whole text is kept ----------------------------------


def test_multiline_final_reply_is_logged_whole(relay_factory, peer_factory):
    """Exim answers the end of data with two lines, the queue id in the
    last one: the log's reply= holds both, joined by " / "."""
    peer = peer_factory(hooks={"end": confirm_with(
        b"250- 445 byte chunk, total 445\r\n250 OK id=1tXyz7-000abc-Ab\r\n")})
    relay = relay_factory(conf_for(peer))
    tag = f"multiline-{time.time_ns()}"
    qid = submit(relay, tag)
    d = check_delivered_once(relay, peer, qid, tag)
    assert d[0]["reply"] == "250- 445 byte chunk, total 445 / 250 OK id=1tXyz7-000abc-Ab", d


def test_long_multiline_reply_keeps_first_and_last_line(relay_factory, peer_factory):
    """A 60-line 250: the logged text is bounded, starts with the first
    line and ends with the last (the queue id)."""
    many = b"".join(b"250-line %02d of a long reply from a chatty server\r\n" % i
                    for i in range(59))
    peer = peer_factory(hooks={"end": confirm_with(many + b"250 2.0.0 queued as LAST42\r\n")})
    relay = relay_factory(conf_for(peer))
    tag = f"longml-{time.time_ns()}"
    qid = submit(relay, tag)
    d = check_delivered_once(relay, peer, qid, tag)
    reply = d[0]["reply"]
    assert reply.startswith("250-line 00 of a long reply"), reply
    assert reply.endswith(" / ... / 250 2.0.0 queued as LAST42"), reply
    assert len(reply) < 512, reply


def test_multiline_5xx_reaches_the_bounce_whole(relay_factory, peer_factory):
    """A two-line 550 to the end of data: status=bounced (a real 5xx), the
    log's reply= and the bounce's Diagnostic-Code both hold the last line."""
    refusal = b"550-5.7.1 first line of the refusal\r\n550 5.7.1 policy id=REF12345\r\n"
    peer = peer_factory(hooks={"end": instead(refusal)})
    relay = relay_factory(conf_for(peer))
    tag = f"bounce-ml-{time.time_ns()}"
    qid = submit(relay, tag)
    d = wait_lines(relay, qid, lambda x: len(x) >= 1, 20, "the delivery line")
    assert (d[0]["status"], d[0]["dsn"]) == ("bounced", "5.7.1"), d
    assert d[0]["reply"] == ("550-5.7.1 first line of the refusal / "
                             "550 5.7.1 policy id=REF12345"), d
    # the bounce goes to s@example.org through the same (now correct) next hop
    bounce = wait_for(lambda: [m for m in peer.confirmed if m[0].startswith(b"MAIL FROM:<>")], 20,
                      "the bounce at the next hop")
    text = bounce[0][2].decode(errors="replace")
    assert "policy id=REF12345" in re.sub(r"\r\n[ \t]+", " ", text), text
    assert len(lines_for(relay, qid)) == 1


def test_size_refusals_come_one_after_the_other(relay_factory, peer_factory):
    """A next hop whose SIZE limit is below the messages: each is refused
    before MAIL (552 5.3.4, a bounce), with nothing said on the wire.  Many
    waiting for one connection are refused one after the other, each
    reported from the ring, never from inside the call that handed it over
    (the queue asserts it: one nested inside the other once grew the stack
    by a frame set per message)."""
    from test_queue_routing import queue_cmd
    peer = peer_factory(ehlo=["small.test", "PIPELINING", "SIZE 100"])
    relay = relay_factory(conf_for(peer, "DestinationConcurrency=1\nWorkers=1\n"
                                         "DeliveryMode=queueonly\n"))
    qids = [submit(relay, f"big-{i}-{time.time_ns()}", body=b"x" * 400 + b"\r\n")
            for i in range(20)]
    queue_cmd(relay, "flush")
    for qid in qids:
        d = wait_lines(relay, qid, lambda d: len(d) >= 1, 20, "a delivery line")
        assert [(x["status"], x["dsn"]) for x in d] == [("bounced", "5.3.4")], d
    assert peer.confirmed == []
    assert relay.proc.poll() is None
