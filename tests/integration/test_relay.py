"""Outbound relaying: krelay's queue and SMTP client against real next hops.

Every test submits mail into the krelay under test with Python's smtplib
(BDAT written on smtplib's socket where the body must be exact to the byte)
and routes it with `SmartHost=[127.0.0.1]:PORT` (a later line in the
configuration wins over the fixture's dead port) to a next hop nobody here
wrote for this purpose:

  * a private Postfix 3.7 sink (postfix_peer.py): STARTTLS, asks for and
    verifies client certificates, offers CHUNKING (or hides it with
    smtpd_discard_ehlo_keywords), and delivers every message byte-for-byte
    (LF line ends) into a file;
  * a second krelay as the next hop, which keeps what it receives in its
    spool in wire form (its relaying goes to its own dead port), configured
    to refuse (RelayClients without 127.0.0.1), to defer (MaxRecipients=1:
    452 4.5.3 for the second recipient), to speak no TLS, or to present a
    certificate krelay must not trust;
  * a tiny raw-socket SMTP server (RawPeer), only where a peer has to
    misbehave: STARTTLS offered, 220, then garbage instead of a TLS
    handshake; or the connection closed after the body, before the final
    reply.

What is checked: the bytes that arrive, krelay's per-recipient delivery log
lines (status, dsn, tls, verified, body_path, bytes), its stop line
(relayed, bounced, deferred, connections), the spool (queue/ID and
queue/ID.env gone once every recipient is final), and the peers' own logs.
"""
import re
import smtplib
import socket
import threading
import time

import pytest

from conftest import segment_messages
from postfix_peer import Postfix, postfix_sink  # noqa: F401 (fixture)
from helpers import DELIVERY_RE, deliveries, wait_for  # noqa: F401

QID = r"[0-9A-F]{16}"
DATE = "Sat, 28 Nov 2026 12:00:00 +0000"

STOP_RE = re.compile(r"krelay stopped .*relayed=(\d+) bounced=(\d+) deferred=(\d+) "
                     r"connections=(\d+)")


# ---- helpers ----------------------------------------------------------------


def wait_deliveries(relay, n, status=None, timeout=20):
    """Waits until at least n delivery lines (with that status) are logged."""
    def enough():
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited {relay.proc.returncode}\n{relay.logs()[-3000:]}")
        d = [x for x in deliveries(relay) if status is None or x["status"] == status]
        return d if len(d) >= n else None
    try:
        return wait_for(enough, timeout, f"{n} delivery lines with status={status}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nkrelay log tail:\n{relay.logs()[-4000:]}") from None


def stop_stats(relay):
    """Stops krelay with SIGTERM; returns its stop line's counters as a
    dict.  (The exit status and any sanitizer report are checked by the
    relay_factory fixture at teardown, so the test's own checks still run.)"""
    relay.stop()
    m = STOP_RE.findall(relay.logs())
    assert m, relay.logs()[-3000:]
    return dict(zip(("relayed", "bounced", "deferred", "connections"), map(int, m[-1])))


def spool_names(relay):
    """Everything in queue/ (queue/ID and queue/ID.env files)."""
    q = relay.queue / "queue"
    return sorted(p.name for p in q.iterdir()) if q.exists() else []


def queued_ids(relay):
    """The queue ids of the messages in queue/ (not their .env files)."""
    return [n for n in spool_names(relay) if re.fullmatch(QID, n)]


def wait_spool_empty(relay, timeout=15):
    """queue/ empty, and no message left in a segment (seg/)."""
    def empty():
        # segments first (see Relay.queued)
        return segment_messages(relay.queue) == {} and spool_names(relay) == []
    try:
        wait_for(empty, timeout, "krelay's queue/ and segments to empty")
    except AssertionError as e:
        raise AssertionError(f"{e}: {spool_names(relay)} "
                             f"{sorted(segment_messages(relay.queue))}\n"
                             f"{relay.logs()[-4000:]}") from None


def env_states(relay, qid):
    """{recipient: state} from queue/ID.env (the durable per-recipient
    state), or None when there is no such file."""
    p = relay.queue / "queue" / f"{qid}.env"
    try:
        text = p.read_text()
    except FileNotFoundError:
        return None
    out = {}
    for line in text.split("\n"):
        if line.startswith("rcpt "):
            out[line[7:]] = line[5]
    return out


def content_of(tag, body=b"", rcpt="rcpt@example.com", extra=""):
    """A complete message in wire form (CRLF) with its own Date and
    Message-Id <tag@example.org>, so that no hop adds anything but a
    Received header."""
    head = (f"From: Sender <sender@example.org>\r\nTo: {rcpt}\r\nSubject: relay test {tag}\r\n"
            f"Date: {DATE}\r\nMessage-Id: <{tag}@example.org>\r\n{extra}\r\n")
    return head.encode() + body


TEXT_LINE = (b" The quick brown fox jumps over the lazy dog 0123456789 "
             b"~!@#$%^&*()_+-=[]{};':\",./<>?|\\\r\n")
DOT_LINES = [b".\r\n", b"..\r\n", b". a dot and a space\r\n", b".leading dot\r\n",
             b"...three dots\r\n", b".\r\n.\r\n"]


def make_body(size, dots):
    """Exactly `size` bytes of body; with `dots`, many lines start with '.'
    (including a line that is just "." and one that is ".."), the first one
    included.  A body of 2 bytes or more ends with CRLF; a 1-byte body is
    "x" (or "."), a last line without CRLF, which only BDAT can carry."""
    if size == 0:
        return b""
    if size == 1:
        return b"." if dots else b"x"
    out = bytearray()
    i = 0
    while len(out) < size:
        if dots and i % 3 == 0:
            out += DOT_LINES[(i // 3) % len(DOT_LINES)]
        else:
            out += b"%07d" % i + TEXT_LINE
        i += 1
    del out[size:]
    out[-2:] = b"\r\n"
    if out[-3:-2] == b"\r":
        out[-3:-2] = b"x"  # no bare CR in front of the final CRLF
    return bytes(out)


def qid_from(msg):
    m = re.search(rf"queued as ({QID})", msg.decode() if isinstance(msg, bytes) else msg)
    assert m, msg
    return m.group(1)


def submit_bdat(port, sender, rcpts, content):
    """One message into krelay with BDAT (exact bytes, no dot-stuffing, no
    CRLF added); returns krelay's queue id."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=120) as s:
        s.ehlo()
        assert s.has_extn("chunking")
        code, msg = s.mail(sender)
        assert code == 250, msg
        for r in rcpts:
            code, msg = s.rcpt(r)
            assert code == 250, msg
        s.send(b"BDAT %d LAST\r\n" % len(content) + content)
        code, msg = s.getreply()
        assert code == 250, msg
        return qid_from(msg)


def open_tx(s, sender, rcpts):
    """MAIL and RCPTs on an open smtplib session, each answered 250."""
    code, msg = s.mail(sender)
    assert code == 250, msg
    for r in rcpts:
        code, msg = s.rcpt(r)
        assert code == 250, msg


def submit_data(s, sender, rcpts, content):
    """One message on an open smtplib session with DATA; returns the qid."""
    open_tx(s, sender, rcpts)
    code, msg = s.data(content)
    assert code == 250, msg
    return qid_from(msg)


def submit(port, sender, rcpts, content):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        return submit_data(s, sender, rcpts, content)


def split_received(data, eol):
    """Splits leading Received headers (with folded lines) off data.
    Returns ([header, ...], rest)."""
    headers, pos = [], 0
    while data.startswith(b"Received:", pos):
        end = data.index(eol, pos) + len(eol)
        while data[end:end + 1] in (b" ", b"\t"):
            end = data.index(eol, end) + len(eol)
        headers.append(data[pos:end])
        pos = end
    return headers, data[pos:]


def krelay_received_re(qid, eol):
    e = re.escape(eol)
    return (rb"Received: from client\.test \(\S+ \[127\.0\.0\.1\]\)" + e
            + rb"(?:\t[^\r\n]*" + e + rb")*?"
            + rb"\tby relay\.test \(krelay\) with ESMTP id " + qid.encode() + rb"[^\r\n]*" + e
            + rb"(?:\t[^\r\n]*" + e + rb")*")


def msgid_of(data):
    m = re.search(rb"^Message-Id: <([^>]+)>\r?$", data, re.M)
    assert m, data[:2000]
    return m.group(1).decode()


# -- the krelay peer --

def peer_messages(peer):
    """{Message-Id: [(qid, wire, env), ...]} of what a krelay next hop holds."""
    out = {}
    for name in queued_ids(peer):
        wire, env = peer.message(name)
        out.setdefault(msgid_of(wire), []).append((name, wire, env))
    return out


def wait_peer(peer, n, timeout=20):
    def enough():
        return len(queued_ids(peer)) >= n
    try:
        wait_for(enough, timeout, f"{n} messages in the krelay peer's spool")
    except AssertionError as e:
        raise AssertionError(f"{e}\npeer log:\n{peer.logs()[-3000:]}") from None
    return peer_messages(peer)


def check_peer_copy(wire, content, qid):
    """What a krelay next hop stored: its own Received header, then krelay's
    (for queue id qid), then exactly the submitted content."""
    received, rest = split_received(wire, b"\r\n")
    assert len(received) == 2, received
    assert received[0].startswith(b"Received: from relay.test ("), received[0]
    assert re.fullmatch(krelay_received_re(qid, b"\r\n"), received[1]), received[1]
    assert rest == content, (len(rest), len(content), rest[:200], content[:200])
    return received[1]


# -- the Postfix sink --

def sink_files(pf):
    """[(filename, data)] of the sink's complete deliveries.  (Read here
    rather than with pf.messages(): that globs "*.eml", which in Python 3.11
    also matches deliver.sh's ".tmp.*.eml" files, and one renamed away
    between the glob and the read raises FileNotFoundError.)"""
    out = []
    for p in sorted(pf.outdir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(".eml"):
            continue
        try:
            out.append((p.name, p.read_bytes()))
        except FileNotFoundError:
            pass
    return out


def wait_sink(pf, n, timeout=30):
    """Waits until the sink delivered at least n messages, and for Postfix's
    queue to be empty; returns sink_messages()."""
    try:
        wait_for(lambda: len(sink_files(pf)) >= n, timeout, f"{n} messages at the Postfix sink")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{pf.mailq()}\n{pf.log()[-3000:]}") from None
    pf.wait_queue_empty(timeout=timeout)
    return sink_messages(pf)


def sink_messages(pf):
    """{Message-Id: [(filename, data), ...]} of the sink's deliveries."""
    out = {}
    for name, data in sink_files(pf):
        out.setdefault(msgid_of(data), []).append((name, data))
    return out


def lf_form(content):
    """How the sink stores content: LF line ends, and a last line without
    CRLF ends with LF (Postfix's record form)."""
    lf = content.replace(b"\r\n", b"\n")
    return lf if lf.endswith(b"\n") else lf + b"\n"


def check_sink_copy(data, content, qid, client_cert=True):
    """Postfix's Received header, krelay's (for qid), then the content."""
    want = lf_form(content)
    assert data.endswith(want), (len(data), len(want), data[-300:], want[-300:])
    received, rest = split_received(data[:-len(want)], b"\n")
    assert rest == b"", rest[:500]
    assert len(received) == 2, received
    pf_hdr, ours = received
    assert pf_hdr.startswith(b"Received: from relay.test (localhost [127.0.0.1])\n"), pf_hdr
    if client_cert:
        assert re.search(rb'\t\(Client CN "relay\.test client", Issuer "[^"]+" \(verified OK\)\)\n',
                         pf_hdr), pf_hdr
    assert re.fullmatch(krelay_received_re(qid, b"\n"), ours), ours


def make_sink(tmp_path, certs, made, **main):
    pf = Postfix(tmp_path / f"postfix-sink{len(made)}", certs, role="sink",
                 main={k: str(v) for k, v in main.items()})
    made.append(pf)
    return pf.start()


@pytest.fixture
def sink_factory(tmp_path, certs):
    """make(**main_cf) -> a started Postfix sink with extra main.cf settings."""
    made = []
    try:
        yield lambda **main: make_sink(tmp_path, certs, made, **main)
    finally:
        for pf in made:
            pf.stop()


# -- a misbehaving raw-socket peer --

class RawPeer:
    """A deliberately misbehaving next hop, on raw sockets, for what no real
    server does on purpose.  It speaks just enough SMTP to take a message in
    clear: EHLO (advertising STARTTLS, no PIPELINING, no CHUNKING), HELO,
    MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP, QUIT.

    break_starttls   answer 220 to STARTTLS, then reply to the ClientHello
                     with garbage and close
    drop_after_body  on the first N messages, read the whole body up to the
                     final "." and close without any reply
    final_delay      seconds to wait before the reply to the final "." """

    def __init__(self, break_starttls=False, drop_after_body=0, final_delay=0.0):
        self.break_starttls = break_starttls
        self.drop_after_body = drop_after_body
        self.final_delay = final_delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.sessions = []  # per connection: {"starttls", "messages", "dropped", "log"}
        self.lock = threading.Lock()
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        sess = {"starttls": False, "messages": [], "dropped": [], "log": []}
        with self.lock:
            self.sessions.append(sess)
        conn.settimeout(10)
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            ln, buf = buf.split(b"\r\n", 1)
            return ln

        def say(text):
            conn.sendall(text.encode() + b"\r\n")

        try:
            say("220 raw.test ESMTP")
            sender, rcpts = None, []
            while True:
                cmd = line()
                sess["log"].append(cmd[:100])
                verb = cmd.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    say("250-raw.test\r\n250-8BITMIME\r\n250 STARTTLS")
                elif verb == b"HELO":
                    say("250 raw.test")
                elif verb == b"STARTTLS" and self.break_starttls:
                    sess["starttls"] = True
                    say("220 2.0.0 Ready to start TLS")
                    conn.recv(65536)  # the ClientHello
                    conn.sendall(b"this is not a TLS record\r\n" * 8)
                    return
                elif verb == b"MAIL":
                    sender, rcpts = cmd, []
                    say("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    rcpts.append(cmd)
                    say("250 2.1.5 Ok")
                elif verb == b"DATA":
                    say("354 End data with <CR><LF>.<CR><LF>")
                    body = bytearray()
                    while (ln := line()) != b".":
                        body += (ln[1:] if ln.startswith(b".") else ln) + b"\r\n"
                    with self.lock:
                        drop = self.drop_after_body > 0
                        self.drop_after_body -= drop
                    if drop:
                        sess["dropped"].append((sender, rcpts, bytes(body)))
                        return  # no final reply: the connection just ends
                    time.sleep(self.final_delay)
                    sess["messages"].append((sender, rcpts, bytes(body)))
                    say(f"250 2.0.0 Ok: queued as RAW{len(sess['messages'])}")
                elif verb in (b"RSET", b"NOOP"):
                    say("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
        except (OSError, EOFError):
            pass
        finally:
            conn.close()

    def messages(self):
        with self.lock:
            return [m for s in self.sessions for m in s["messages"]]

    def close(self):
        self.stopping = True
        self.acceptor.join(2)
        self.sock.close()


@pytest.fixture
def raw_peer_factory():
    made = []

    def make(**kw):
        made.append(RawPeer(**kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


def tls_client_conf(certs, policy="verify"):
    return (f"TLSPolicy={policy}\nCACertFile={certs.ca}\nClientCertFile={certs.client_crt}\n"
            f"ClientKeyFile={certs.client_key}\n")


# ---- 1. STARTTLS, verified both ways, into Postfix ------------------------------


def test_verified_starttls_with_client_cert_into_postfix(relay_factory, certs, postfix_sink):
    """TLSPolicy=verify to [127.0.0.1]:port (the certificate's IP SAN), with
    a client certificate Postfix verifies: every message arrives once, its
    content byte-identical under the two Received headers; Postfix logs a
    trusted TLS connection; krelay logs status=sent verified=yes, TLS 1.3,
    the userspace TLS body path, Postfix's 250 (whose queue id is the
    sink file's); queue/ is empty afterwards."""
    pf = postfix_sink
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{pf.port}\n" + tls_client_conf(certs))
    sent = {}
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        # (Postfix's pipe delivers once per domain: the two recipients share one)
        for i, rcpts in enumerate([["one@example.com"], ["two@example.com", "three@example.com"],
                                   ["four@example.com"]]):
            tag = f"verify-{i}-{time.time_ns()}"
            content = content_of(tag, make_body(3000 * (i + 1), dots=(i == 1)))
            qid = submit_data(s, f"sender{i}@example.org", rcpts, content)
            sent[tag] = (qid, f"sender{i}@example.org", rcpts, content)

    lines = wait_deliveries(relay, 4, timeout=20)
    wait_spool_empty(relay)
    got = wait_sink(pf, 3)
    assert sorted(got) == sorted(f"{t}@example.org" for t in sent), sorted(got)
    by_qid = {}
    for tag, (qid, sender, rcpts, content) in sent.items():
        copies = got[f"{tag}@example.org"]
        assert len(copies) == 1, [n for n, _ in copies]
        name, data = copies[0]
        check_sink_copy(data, content, qid)
        env_sender, env_rcpts = pf.envelope(name)
        assert (env_sender, sorted(env_rcpts)) == (sender, sorted(rcpts))
        by_qid[qid] = (name, rcpts)

    assert len(lines) == 4, lines
    for d in lines:
        name, rcpts = by_qid[d["qid"]]
        assert d["to"] in rcpts
        assert d["status"] == "sent" and d["dsn"] == "2.0.0", d
        assert d["relay"] == f"127.0.0.1[127.0.0.1:{pf.port}]", d
        assert re.fullmatch(r"TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)", d["tls"]), d
        assert d["verified"] == "yes", d
        # the kernel here has no tls module: OpenSSL encrypts, SSL_write sends
        assert d["body_path"] == ("splice" if d["ktls_tx"] == "on" else "ssl_write"), d
        # Postfix's reply to BDAT counts the bytes it got (krelay's bytes=)
        # and names the queue id of the file it delivered
        m = re.fullmatch(r"250 2\.0\.0 Ok: (\d+) bytes queued as ([0-9A-F]+)", d["reply"])
        assert m, d
        assert m.group(1) == d["bytes"], d
        assert name.split(".")[0] == m.group(2), (name, d)
    assert relay.logs().count(" status=sent ") == 4

    log = pf.log()
    assert re.search(r"Trusted TLS connection established from localhost\[127\.0\.0\.1\]: "
                     r"TLSv1\.3 with cipher", log), log[-3000:]
    assert "Anonymous TLS connection established from" not in log
    assert "Untrusted TLS connection established from" not in log
    st = stop_stats(relay)
    assert (st["relayed"], st["bounced"], st["deferred"]) == (4, 0, 0), st


# ---- 2. body integrity ------------------------------------------------------------

SIZES = [0, 1, 16383, 16384, 16385, 1 << 20, 20 << 20]
BIG = "MaxMessageSize=64m\n"


def body_cases(prefix):
    return [(f"{prefix}-{size}-{'dots' if dots else 'plain'}-{time.time_ns()}", size, dots)
            for size in SIZES for dots in (False, True)]


@pytest.mark.parametrize("verb", ["BDAT", "DATA"])
def test_body_integrity_into_postfix(relay_factory, certs, sink_factory, verb):
    """Bodies of 0, 1, 16383, 16384, 16385 bytes, 1 MiB and 20 MiB, with and
    without lines starting with '.', over verified STARTTLS into Postfix,
    with BDAT (Postfix offers CHUNKING) or DATA (Postfix hides CHUNKING with
    smtpd_discard_ehlo_keywords=chunking, so krelay must dot-stuff): each
    arrives byte-identical (in the sink's LF form)."""
    main = {"message_size_limit": 64 << 20}
    if verb == "DATA":
        main["smtpd_discard_ehlo_keywords"] = "chunking"
    pf = sink_factory(**main)
    if verb == "DATA":
        assert pf.postconf("smtpd_discard_ehlo_keywords") == "chunking"
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{pf.port}\n{BIG}" + tls_client_conf(certs))
    cases = body_cases(verb.lower())
    sent = {}
    for tag, size, dots in cases:
        content = content_of(tag, make_body(size, dots))
        sent[tag] = (submit_bdat(relay.port, "s@example.org", ["r@example.com"], content),
                     content, size, dots)

    lines = wait_deliveries(relay, len(cases), timeout=60)
    wait_spool_empty(relay)
    got = wait_sink(pf, len(cases))
    by_qid = {d["qid"]: d for d in lines}
    assert len(lines) == len(cases), lines
    for tag, (qid, content, size, dots) in sent.items():
        copies = got.get(f"{tag}@example.org", [])
        assert len(copies) == 1, (tag, [n for n, _ in copies])
        check_sink_copy(copies[0][1], content, qid)
        d = by_qid[qid]
        assert d["status"] == "sent" and d["verified"] == "yes", d
        if verb == "DATA" and re.search(rb"(^|\n)\.", content):
            want = "stuffing"  # DATA and a line starting with '.': stuffing copies
        else:
            want = "splice" if d["ktls_tx"] == "on" else "ssl_write"
        assert d["body_path"] == want, (tag, d)


@pytest.mark.parametrize("body_path", ["splice", "copy"])
def test_cleartext_body_paths_to_krelay_peer(relay_factory, body_path):
    """TLSPolicy=none to a krelay next hop (BDAT: it offers CHUNKING), with
    BodyPath=splice and BodyPath=copy: the same bodies (0 bytes to 20 MiB,
    with and without dot lines) are stored byte-for-byte by the peer, and
    the log names the path used (splice: file -> pipe -> socket)."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"BodyPath={body_path}\n{BIG}")
    cases = body_cases(body_path)
    sent = {}
    for tag, size, dots in cases:
        content = content_of(tag, make_body(size, dots))
        sent[tag] = (submit_bdat(relay.port, "s@example.org", ["r@example.com"], content),
                     content)
    lines = wait_deliveries(relay, len(cases), timeout=60)
    wait_spool_empty(relay)
    # the peer stores a message durably before its 250, and krelay logs
    # status=sent only after that reply: the peer has everything by now
    got = peer_messages(peer)
    by_qid = {d["qid"]: d for d in lines}
    assert len(lines) == len(cases), lines
    for tag, (qid, content) in sent.items():
        d = by_qid[qid]
        copies = got.get(f"{tag}@example.org", [])
        assert len(copies) == 1, (
            f"{tag}: krelay logged status={d['status']} dsn={d['dsn']} bytes={d['bytes']} "
            f"body_path={d['body_path']} reply={d['reply']!r}, but the peer holds "
            f"{len(copies)} copies")
        peer_qid, wire, env = copies[0]
        assert d["reply"] == f"250 2.0.0 Ok: queued as {peer_qid}", d
        ours = check_peer_copy(wire, content, qid)
        assert d["status"] == "sent" and d["tls"] == "" and d["verified"] == "no", d
        assert d["body_path"] == body_path, d
        # bytes= is the whole spooled body: krelay's Received header + content
        assert int(d["bytes"]) == len(ours) + len(content), (d, len(ours) + len(content))
        assert env["tls"] == "" and env["helo"] == "relay.test", env
        assert env["rcpt"] == [("P", "r@example.com")], env


# ---- 3. connection reuse ---------------------------------------------------------


def sessions_with_mail(peer):
    """How many of a krelay peer's sessions carried at least one MAIL (the
    fixture's readiness probe is a session without one)."""
    return len(set(re.findall(r" ([0-9a-f]{16}) smtp from ", peer.logs())))


def submit_concurrently(port, sessions, per_session, tag):
    """`sessions` smtplib sessions at once, each sending `per_session`
    messages; returns {Message-Id: qid}."""
    result, errors = {}, []

    def worker(k):
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as s:
                s.ehlo()
                for i in range(per_session):
                    mid = f"{tag}-{k}-{i}-{time.time_ns()}"
                    result[f"{mid}@example.org"] = submit_data(
                        s, "s@example.org", ["r@example.com"],
                        content_of(mid, b"connection reuse %d %d\r\n" % (k, i)))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(result) == sessions * per_session
    return result


@pytest.mark.parametrize("limit", [None, "DestinationConcurrency=2", "MaxMessagesPerConnection=1"])
def test_connection_reuse(relay_factory, limit):
    """50 messages to one destination from 5 concurrent sessions, relayed
    over STARTTLS to a krelay peer.  Connections are reused: with the
    defaults krelay opens at most DestinationConcurrency (20) in all, its 2
    workers 10 each, so fewer than 50; with DestinationConcurrency=2 at
    most 2 (one per worker) carry all 50 messages (no connection idles out
    in this short test); with MaxMessagesPerConnection=1 every message has its own
    connection: exactly 50.  The stop line's connections= is checked
    against the peer's own count of sessions that carried mail."""
    peer = relay_factory()
    conf = f"SmartHost=[127.0.0.1]:{peer.port}\n"
    if limit:
        conf += limit + "\n"
    relay = relay_factory(conf)
    sent = submit_concurrently(relay.port, 5, 10, f"reuse{time.time_ns()}")
    lines = wait_deliveries(relay, 50, "sent", timeout=40)
    wait_spool_empty(relay)
    got = wait_peer(peer, 50)
    assert sorted(got) == sorted(sent)
    assert all(len(v) == 1 for v in got.values())
    assert len(lines) == 50 and len(deliveries(relay)) == 50
    st = stop_stats(relay)
    assert (st["relayed"], st["bounced"], st["deferred"]) == (50, 0, 0), st
    assert sessions_with_mail(peer) == st["connections"], (sessions_with_mail(peer), st)
    if limit is None:
        assert st["connections"] <= 20, st
    elif limit.startswith("DestinationConcurrency"):
        assert st["connections"] <= 2, st
    else:
        assert st["connections"] == 50, st


# ---- 4. retries ----------------------------------------------------------------------


def test_retry_after_connection_refused(relay_factory):
    """The next hop is down (nothing listens on its port): the message is
    deferred; once a krelay peer listens there, the retry (RetrySchedule=1s,2s)
    delivers it within seconds.  Log: status=deferred, then status=sent."""
    peer = relay_factory(start=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n")
    content = content_of(f"retry-{time.time_ns()}", b"retry me\r\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content)
    first = wait_deliveries(relay, 1, "deferred")[0]
    assert first["qid"] == qid and first["dsn"].startswith("4."), first
    assert "Connection refused" in first["reply"], first
    assert queued_ids(relay) == [qid]
    # the deferral is recorded (attempt count, next try) with the recipient pending
    wait_for(lambda: env_states(relay, qid) == {"r@example.com": "P"}, 5, "queue/ID.env")
    peer.start()
    started = time.time()
    sent = wait_deliveries(relay, 1, "sent", timeout=10)[0]
    assert time.time() - started < 6
    assert sent["qid"] == qid
    wait_spool_empty(relay)
    got = wait_peer(peer, 1)
    (_, wire, _), = got[msgid_of(content)]
    check_peer_copy(wire, content, qid)
    statuses = [d["status"] for d in deliveries(relay)]
    assert statuses[-1] == "sent" and set(statuses[:-1]) == {"deferred"}, statuses


def test_4xx_then_2xx_from_real_peer(relay_factory):
    """A krelay next hop with MaxRecipients=1 accepts the first recipient and
    answers 452 4.5.3 to the second: one recipient is sent, the other
    deferred (dsn=4.5.3) and retried alone a second later, then sent.  The
    peer holds two copies, one per recipient; queue/ ends empty."""
    peer = relay_factory("MaxRecipients=1\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n")
    content = content_of(f"tempfail-{time.time_ns()}", b"two recipients\r\n")
    qid = submit(relay.port, "s@example.org", ["a@example.com", "b@example.com"], content)
    wait_deliveries(relay, 3, timeout=15)
    wait_spool_empty(relay)
    lines = [(d["to"], d["status"], d["dsn"]) for d in deliveries(relay)]
    assert lines[:2] == [("a@example.com", "sent", "2.0.0"),
                         ("b@example.com", "deferred", "4.5.3")], lines
    assert lines[2:] == [("b@example.com", "sent", "2.0.0")], lines
    copies = wait_peer(peer, 2)[msgid_of(content)]
    assert sorted(env["rcpt"] for _, _, env in copies) == [[("P", "a@example.com")],
                                                          [("P", "b@example.com")]]
    for _, wire, _ in copies:
        check_peer_copy(wire, content, qid)
    st = stop_stats(relay)
    assert (st["relayed"], st["bounced"], st["deferred"]) == (2, 0, 1), st


def test_connection_lost_before_final_reply_is_not_delivered(relay_factory, raw_peer_factory):
    """The next hop accepts MAIL and RCPT (250), takes the whole DATA body and
    closes the connection without a final reply (a crash, a lost link): the
    message was not delivered (RFC 5321 4.1.1.4/6.1: only the reply to the
    end of data makes the receiver responsible), so krelay must defer it and
    deliver it on the retry - not log status=sent with the RCPT reply and
    drop it from the queue."""
    peer = raw_peer_factory(drop_after_body=1)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          "RetrySchedule=1s,2s\n")
    content = content_of(f"dropped-{time.time_ns()}", make_body(3000, dots=False))
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content)
    first = wait_deliveries(relay, 1)[0]
    assert first["qid"] == qid
    assert (first["status"], first["dsn"][0]) == ("deferred", "4"), (
        f"krelay logged status={first['status']} dsn={first['dsn']} reply={first['reply']!r} "
        f"for a message whose transaction never got a final reply")
    d = wait_deliveries(relay, 1, "sent", timeout=10)[0]
    assert (d["qid"], d["reply"]) == (qid, "250 2.0.0 Ok: queued as RAW1"), d
    wait_spool_empty(relay)
    assert len(peer.messages()) == 1
    received, rest = split_received(peer.messages()[0][2], b"\r\n")
    assert len(received) == 1 and rest == content


# ---- 5. permanent failures ----------------------------------------------------------


def test_5xx_bounces_without_retry(relay_factory):
    """A next hop that refuses every recipient (550 5.7.1 relay access
    denied): status=bounced dsn=5.7.1, the message leaves the queue, and it
    is not tried again (RetrySchedule=1s would have).  (krelay queues a
    bounce to the sender; that one is refused by the same peer too, and is
    never bounced itself: its sender is <>.)"""
    peer = relay_factory("RelayClients=10.9.9.9/32\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n"
                          "LogLevel=10\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"],
                 content_of(f"bounce-{time.time_ns()}", b"refused\r\n"))
    d = wait_deliveries(relay, 1)[0]
    assert (d["qid"], d["to"], d["status"], d["dsn"]) == (qid, "r@example.com", "bounced",
                                                         "5.7.1"), d
    assert d["reply"].startswith("550 5.7.1"), d
    wait_spool_empty(relay)
    # removed for good, never set for a retry (its phases say so)
    relay.wait_log(rf"trace: message {qid} active -> removing")
    assert f"message {qid} active -> retry-save" not in relay.logs()
    mine = [x for x in deliveries(relay) if x["qid"] == qid]
    assert len(mine) == 1, mine
    # the peer saw RCPT TO:<r@example.com> once: no retry
    assert len(re.findall(r"smtp to id=\S* to=<r@example\.com> status=rejected",
                          peer.logs())) == 1, peer.logs()[-3000:]
    assert spool_names(peer) == []
    assert all(x["status"] == "bounced" for x in deliveries(relay)), deliveries(relay)
    st = stop_stats(relay)
    assert (st["relayed"], st["deferred"]) == (0, 0), st
    assert st["bounced"] == len(deliveries(relay)), st


def test_partial_success_one_sent_one_bounced(relay_factory):
    """One message, two recipients; the next hop accepts x@ok.test (a relay
    domain) and refuses y@other.test (550 5.7.1): one sent, one bounced, the
    peer's copy is for x only, and y is not tried again.  The sender is in
    ok.test too, so the bounce krelay queues for y reaches the peer: a
    report from <> to the sender that names y@other.test."""
    peer = relay_factory("RelayDomains=ok.test\nRelayClients=10.9.9.9/32\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n"
                          "LogLevel=10\n")
    content = content_of(f"partial-{time.time_ns()}", b"half of it\r\n")
    qid = submit(relay.port, "s@ok.test", ["x@ok.test", "y@other.test"], content)
    wait_deliveries(relay, 2)
    wait_spool_empty(relay)
    mine = [x for x in deliveries(relay) if x["qid"] == qid]
    by_to = {d["to"]: d for d in mine}
    assert len(mine) == 2, mine
    assert (by_to["x@ok.test"]["status"], by_to["x@ok.test"]["dsn"]) == ("sent", "2.0.0")
    assert (by_to["y@other.test"]["status"], by_to["y@other.test"]["dsn"]) == ("bounced",
                                                                              "5.7.1")
    got = wait_peer(peer, 2)
    (_, wire, env), = got[msgid_of(content)]
    assert env["rcpt"] == [("P", "x@ok.test")], env
    check_peer_copy(wire, content, qid)
    reports = [v for k, v in got.items() if k != msgid_of(content)]
    assert len(reports) == 1 and len(reports[0]) == 1, list(got)
    _, report, renv = reports[0][0]
    assert renv["sender"] == "" and renv["rcpt"] == [("P", "s@ok.test")], renv
    assert b"y@other.test" in report and b"multipart/report" in report, report[:3000]
    relay.wait_log(rf"trace: message {qid} active -> removing")
    assert f"message {qid} active -> retry-save" not in relay.logs()
    assert len([x for x in deliveries(relay) if x["qid"] == qid]) == 2
    assert len(re.findall(r"smtp to id=\S* to=<y@other\.test> status=rejected",
                          peer.logs())) == 1
    st = stop_stats(relay)
    assert (st["relayed"], st["bounced"], st["deferred"]) == (2, 1, 0), st


# ---- 6. TLS policy -----------------------------------------------------------------


def test_encrypt_never_sends_in_clear_may_does(relay_factory, certs):
    """A next hop without STARTTLS: TLSPolicy=encrypt defers (TLS is
    required) and never sends MAIL in clear - the peer's spool stays empty;
    TLSPolicy=may to the same peer delivers in clear (tls="")."""
    peer = relay_factory(tls=False)
    strict = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=encrypt\n"
                           f"ClientCertFile={certs.client_crt}\nClientKeyFile={certs.client_key}\n")
    content = content_of(f"encrypt-{time.time_ns()}", b"secret\r\n")
    qid = submit(strict.port, "s@example.org", ["r@example.com"], content)
    d = wait_deliveries(strict, 1)[0]
    assert (d["qid"], d["status"]) == (qid, "deferred"), d
    assert d["dsn"].startswith("4."), d
    assert "TLS is required" in d["reply"], d
    assert queued_ids(strict) == [qid]
    wait_for(lambda: " smtp disconnect " in peer.logs(), 5, "the peer to see krelay leave")
    assert spool_names(peer) == []
    assert " smtp from " not in peer.logs(), peer.logs()[-2000:]

    lax = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=may\n")
    content2 = content_of(f"may-{time.time_ns()}", b"not secret\r\n")
    qid2 = submit(lax.port, "s@example.org", ["r@example.com"], content2)
    d = wait_deliveries(lax, 1)[0]
    assert (d["qid"], d["status"], d["tls"], d["verified"]) == (qid2, "sent", "", "no"), d
    assert d["body_path"] == "splice", d
    wait_spool_empty(lax)
    got = wait_peer(peer, 1)
    assert list(got) == [msgid_of(content2)]
    check_peer_copy(got[msgid_of(content2)][0][1], content2, qid2)
    assert queued_ids(strict) == [qid]


@pytest.mark.parametrize("peer_cert", ["rogue-ca", "no-ip-san"])
def test_verify_refuses_untrusted_certificate(relay_factory, certs, peer_cert):
    """TLSPolicy=verify to [127.0.0.1]:port: a peer whose certificate comes
    from another CA (certs.rogue), or from the right CA but without
    IP:127.0.0.1 in its subjectAltName (the client certificate, which names
    only relay.test), fails verification: deferred, nothing sent."""
    if peer_cert == "rogue-ca":
        crt, key = certs.rogue / "server.crt", certs.rogue / "server.key"
    else:
        crt, key = certs.client_crt, certs.client_key
    peer = relay_factory(f"ServerCertFile={crt}\nServerKeyFile={key}\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n" + tls_client_conf(certs))
    qid = submit(relay.port, "s@example.org", ["r@example.com"],
                 content_of(f"verify-{peer_cert}-{time.time_ns()}", b"x\r\n"))
    d = wait_deliveries(relay, 1)[0]
    assert (d["qid"], d["status"]) == (qid, "deferred"), d
    assert "certificate verify failed" in d["reply"], d
    assert queued_ids(relay) == [qid]
    # the peer's side of that connection ended without a transaction
    peer.wait_log(r"smtp disconnect client=127\.0\.0\.1 ")
    assert spool_names(peer) == []
    assert " smtp from " not in peer.logs()


def test_verify_accepts_ip_san(relay_factory, certs):
    """TLSPolicy=verify with SmartHost=[127.0.0.1]:port and the peer's
    certificate (IP:127.0.0.1 in its subjectAltName, from CACertFile's CA):
    sent, verified=yes; the peer saw krelay's verified client certificate."""
    peer = relay_factory()
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n" + tls_client_conf(certs))
    content = content_of(f"ipsan-{time.time_ns()}", b"verified\r\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content)
    d = wait_deliveries(relay, 1)[0]
    assert (d["qid"], d["status"], d["verified"]) == (qid, "sent", "yes"), d
    assert d["tls"].startswith("TLSv1.3 with cipher "), d
    wait_spool_empty(relay)
    (_, wire, env), = wait_peer(peer, 1)[msgid_of(content)]
    check_peer_copy(wire, content, qid)
    assert env["clientcert"].startswith("verified "), env
    assert env["tls"].startswith("TLSv1.3 with cipher "), env


def test_may_falls_back_to_clear_after_broken_handshake(relay_factory, raw_peer_factory):
    """TLSPolicy=may to a peer that offers STARTTLS but breaks the handshake:
    the first attempt is deferred, krelay logs that the next attempt goes in
    clear, and the retry a second later delivers in clear (no STARTTLS on
    that connection, tls="")."""
    peer = raw_peer_factory(break_starttls=True)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=may\n"
                          "RetrySchedule=1s,2s\n")
    content = content_of(f"fallback-{time.time_ns()}", make_body(5000, dots=True))
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content)
    first = wait_deliveries(relay, 1)[0]
    assert (first["qid"], first["status"]) == (qid, "deferred"), first
    assert first["reply"].startswith("TLS handshake"), first
    relay.wait_log(rf"TLS with 127\.0\.0\.1:{peer.port} failed \(.*\): the next attempt goes "
                   r"in clear \(TLSPolicy=may\)")
    d = wait_deliveries(relay, 1, "sent", timeout=10)[0]
    assert (d["qid"], d["tls"], d["verified"]) == (qid, "", "no"), d
    assert d["reply"] == "250 2.0.0 Ok: queued as RAW1", d
    wait_spool_empty(relay)
    assert [d["status"] for d in deliveries(relay)] == ["deferred", "sent"]
    assert peer.sessions[0]["starttls"] and not peer.sessions[0]["messages"]
    clear = [s for s in peer.sessions if s["messages"]]
    assert len(clear) == 1 and not clear[0]["starttls"], [s["log"] for s in peer.sessions]
    sender, rcpts, body = clear[0]["messages"][0]
    assert sender == b"MAIL FROM:<s@example.org>" and rcpts == [b"RCPT TO:<r@example.com>"]
    received, rest = split_received(body, b"\r\n")
    assert len(received) == 1 and rest == content


# ---- 7. kill -9 in the middle of relaying ----------------------------------------------


def test_kill9_during_delivery_no_loss_no_repeat(relay_factory, postfix_sink):
    """30 messages are queued while the next hop is down; krelay is restarted
    pointing at the Postfix sink (one connection at a time) and killed -9 as
    soon as the first status=sent is logged.  Restarted on the same config,
    it delivers every message at least once, and none whose status=sent was
    logged before the kill (and whose queue/ID.env, if still there, says D)
    a second time: deliveries are counted per Message-Id at the sink."""
    pf = postfix_sink
    relay = relay_factory("DestinationConcurrency=1\n")
    tags = {}
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        for i in range(30):
            tag = f"crash-{i}-{time.time_ns()}"
            tags[submit_data(s, "s@example.org", ["r@example.com"],
                             content_of(tag, make_body(200_000, dots=False)))] = tag
    wait_deliveries(relay, 30, "deferred")
    assert stop_stats(relay)["deferred"] == 30
    relay.conf.write_text(relay.conf.read_text() + f"SmartHost=[127.0.0.1]:{pf.port}\n")
    before = len(relay.logs())
    relay.start()
    deadline = time.time() + 30
    while " status=sent " not in relay.logs()[before:]:
        assert time.time() < deadline, f"no status=sent in 30s\n{relay.logs()[-3000:]}"
        time.sleep(0.002)
    relay.kill9()
    log_at_kill = relay.logs()[before:]
    sent_before = {d["qid"] for d in deliveries(relay, log_at_kill) if d["status"] == "sent"}
    assert sent_before
    assert len(sent_before) < 30, "krelay was not killed in the middle of relaying"
    left = set(queued_ids(relay))
    for qid in sent_before & left:
        assert env_states(relay, qid) == {"r@example.com": "D"}, qid

    before = len(relay.logs())
    relay.start()
    wait_spool_empty(relay, timeout=40)
    got = wait_sink(pf, 30)
    counts = {qid: len(got.get(f"{tag}@example.org", [])) for qid, tag in tags.items()}
    assert all(n >= 1 for n in counts.values()), counts
    again = {qid: counts[qid] for qid in sent_before if counts[qid] != 1}
    assert not again, f"delivered again after status=sent was logged: {again}"
    assert not (sent_before & {d["qid"] for d in deliveries(relay, relay.logs()[before:])})


# ---- 8. recovery after a restart --------------------------------------------------------


def test_queued_mail_delivered_after_restart_with_new_smarthost(relay_factory):
    """Mail queued while the next hop was down survives SIGTERM; restarted
    with SmartHost pointing at a working krelay peer, krelay delivers all of
    it and empties queue/."""
    peer = relay_factory()
    relay = relay_factory()
    sent = {}
    for i in range(5):
        content = content_of(f"recover-{i}-{time.time_ns()}", make_body(1000 * i, dots=i % 2))
        sent[submit(relay.port, "s@example.org", [f"r{i}@example.com"], content)] = content
    wait_deliveries(relay, 5, "deferred")
    st = stop_stats(relay)
    assert (st["relayed"], st["deferred"]) == (0, 5), st
    assert queued_ids(relay) == sorted(sent)
    relay.conf.write_text(relay.conf.read_text() + f"SmartHost=[127.0.0.1]:{peer.port}\n")
    before = len(relay.logs())
    relay.start()
    relay.wait_log(r"starting .* queued=5 ")
    wait_for(lambda: len([d for d in deliveries(relay, relay.logs()[before:])
                          if d["status"] == "sent"]) >= 5, 20, "5 deliveries after restart")
    wait_spool_empty(relay)
    got = wait_peer(peer, 5)
    for qid, content in sent.items():
        (_, wire, _), = got[msgid_of(content)]
        check_peer_copy(wire, content, qid)


def test_sigterm_while_connection_idle_exits_cleanly(relay_factory):
    """SIGTERM right after a run of deliveries over one reused connection
    (it is idle, kept open IDLE_KEEP_S for more mail): krelay quits it, exits
    0 with its stop line, and frees everything (no LeakSanitizer report)."""
    peer = relay_factory(tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        for i in range(6):
            submit_data(s, "s@example.org", ["r@example.com"],
                        content_of(f"idle-{i}-{time.time_ns()}", b"x\r\n"))
            wait_deliveries(relay, i + 1, "sent")
    wait_spool_empty(relay)
    rc = relay.stop()
    err = relay.errors()
    assert "Sanitizer" not in err, err[-4000:]
    assert rc == 0, err[-3000:]
    st = STOP_RE.findall(relay.logs())
    assert st and int(st[-1][0]) == 6, relay.logs()[-2000:]
