"""A TLS 1.3 KeyUpdate from the next hop in the middle of an outbound session.

With kTLS TX on, OpenSSL 3.0 updates only its userspace key when the peer
sends a KeyUpdate with update_requested, and the stream breaks; krelay
notices the KeyUpdate and closes that connection so the message is retried.
With kTLS off (this machine's kernel has no tls module), OpenSSL handles the
KeyUpdate in userspace and the session simply goes on.

Python's ssl cannot send a KeyUpdate, so the next hop is a small C server
(tests/tools/keyupdate_peer.c, built here on demand): STARTTLS with TLS 1.3
only, no CHUNKING (krelay uses DATA), and a KeyUpdate sent right after MAIL
(before the 250) or right after the 354, as asked.  It stores each message
un-stuffed in OUTDIR/<n>.eml and prints one line per event.
"""
import re
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import KRELAY, ROOT, free_port
from helpers import DELIVERY_RE, deliveries, wait_for  # noqa: F401

PEER_SRC = ROOT / "tests" / "tools" / "keyupdate_peer.c"
PEER_BIN = ROOT / "build" / "test" / "keyupdate_peer"
BUILD = ["cc", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
         "-fsanitize=address,undefined", "-o", str(PEER_BIN), str(PEER_SRC), "-lssl", "-lcrypto"]

DATE = "Sat, 28 Nov 2026 12:00:00 +0000"


# ---- the peer -----------------------------------------------------------------


def build_peer():
    if PEER_BIN.exists() and PEER_BIN.stat().st_mtime >= PEER_SRC.stat().st_mtime:
        return
    PEER_BIN.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(BUILD, capture_output=True, text=True)
    assert out.returncode == 0, f"building keyupdate_peer failed:\n{out.stdout}{out.stderr}"


class Peer:
    def __init__(self, tmp: Path, certs, when):
        self.port = free_port()
        self.outdir = tmp / f"peer-{when}-{self.port}"
        self.outdir.mkdir(parents=True)
        self.stderr_path = self.outdir.parent / f"peer-{self.port}.stderr"
        self._err = open(self.stderr_path, "wb")
        self.lines = []
        self.proc = subprocess.Popen(
            [str(PEER_BIN), str(self.port), str(certs.server_crt), str(certs.server_key),
             str(self.outdir), "--max-conns", "50", "--timeout", "180", "--when", when],
            stdout=subprocess.PIPE, stderr=self._err, text=True,
            env={"ASAN_OPTIONS": "detect_leaks=1:exitcode=99", "PATH": "/usr/bin:/bin"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: any(l.startswith("listening") for l in self.lines)
                 or self.proc.poll() is not None, 10, "keyupdate_peer to listen")
        assert self.proc.poll() is None, f"keyupdate_peer exited: {self.errors()}"

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def errors(self):
        return self.stderr_path.read_text(errors="replace")

    def count(self, prefix):
        return sum(1 for l in list(self.lines) if l.startswith(prefix))

    def connections(self):
        return sum(1 for l in list(self.lines) if re.fullmatch(r"connection \d+", l))

    def messages(self):
        files = sorted(self.outdir.glob("*.eml"), key=lambda p: int(p.stem))
        return [p.read_bytes() for p in files]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self._err.close()


@pytest.fixture
def keyupdate_peer(tmp_path, certs):
    build_peer()
    made = []

    def make(when="mail"):
        p = Peer(tmp_path, certs, when)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
    for p in made:
        err = p.errors()
        assert "Sanitizer" not in err and "runtime error" not in err, err[-4000:]


# ---- helpers --------------------------------------------------------------------


def ktls_available():
    out = subprocess.run([KRELAY, "check"], capture_output=True, text=True, timeout=30)
    m = re.search(r"^ktls       (available|unavailable)", out.stdout, re.M)
    assert m, out.stdout + out.stderr
    return m.group(1) == "available"


def content_of(tag, body):
    head = (f"From: Sender <sender@example.org>\r\nTo: rcpt@example.com\r\n"
            f"Subject: keyupdate {tag}\r\nDate: {DATE}\r\nMessage-Id: <{tag}@example.org>\r\n\r\n")
    return head.encode() + body


def make_body(size):
    """About `size` bytes of CRLF lines, some starting with dots."""
    out = bytearray()
    i = 0
    while len(out) < size:
        if i % 5 == 0:
            out += b"." * (i % 3 + 1) + b" dotted line %d\r\n" % i
        else:
            out += b"%07d the quick brown fox jumps over the lazy dog 0123456789\r\n" % i
        i += 1
    return bytes(out)


def submit(port, content, rcpt="rcpt@example.com"):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        code, msg = s.mail("sender@example.org")
        assert code == 250, msg
        code, msg = s.rcpt(rcpt)
        assert code == 250, msg
        code, msg = s.data(content)
        assert code == 250, msg
        m = re.search(r"queued as ([0-9A-F]{16})", msg.decode())
        assert m, msg
        return m.group(1)


def strip_received(data, qid):
    """krelay's Received header (for qid) off the front of what arrived."""
    m = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    assert m, data[:500]
    assert b"by relay.test (krelay) with ESMTP id " + qid.encode() in m.group(0), m.group(0)
    return data[m.end():]


def relay_conf(peer):
    return (f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=encrypt\nRetrySchedule=1s,2s\n"
            "LogLevel=10\n")


def check_delivered(relay, peer, qids, contents, ktls):
    """Every message arrives exactly once, byte-identical under krelay's
    Received header; the delivery lines fit kTLS's state."""
    def all_sent():
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited {relay.proc.returncode}\n{relay.logs()[-3000:]}")
        sent = {d["qid"] for d in deliveries(relay) if d["status"] == "sent"}
        return sent >= set(qids)
    try:
        wait_for(all_sent, 60, "every message to be sent")
    except AssertionError as e:
        raise AssertionError(f"{e}\nkrelay log:\n{relay.logs()[-4000:]}\npeer:\n"
                             + "\n".join(peer.lines)) from None
    wait_for(lambda: len(peer.messages()) >= len(qids), 10, "the peer's files")
    for qid in qids:  # each removed for good: no copy of it can come later
        relay.wait_log(rf"trace: message {qid} active -> removing")
    got = peer.messages()
    assert len(got) == len(qids), (len(got), peer.lines)
    by_qid = {}
    for data in got:
        m = re.search(rb"with ESMTP id ([0-9A-F]{16})", data)
        assert m, data[:500]
        by_qid.setdefault(m.group(1).decode(), []).append(data)
    for qid, content in zip(qids, contents):
        assert len(by_qid.get(qid, [])) == 1, (qid, list(by_qid))
        assert strip_received(by_qid[qid][0], qid) == content
    for qid in qids:
        lines = [d for d in deliveries(relay) if d["qid"] == qid]
        sent = [d for d in lines if d["status"] == "sent"]
        assert len(sent) == 1, lines
        d = sent[0]
        assert "TLSv1.3" in d["tls"], d
        if not ktls:
            # userspace TLS: the KeyUpdate is handled, the first attempt succeeds
            assert [x["status"] for x in lines] == ["sent"], lines
            assert d["ktls_tx"] == "off", d
        elif lines[0]["status"] == "deferred":
            # kTLS TX: the first attempt's connection was closed, then retried
            assert lines[0]["dsn"].startswith("4."), lines[0]
    if ktls:
        # at least one attempt was cut short: a deferred line or a reconnection
        deferred = [d for d in deliveries(relay) if d["status"] == "deferred"]
        assert deferred or peer.connections() > peer.count("message "), (
            deliveries(relay), peer.lines)


# ---- tests ----------------------------------------------------------------------


@pytest.mark.parametrize("when", ["mail", "data"])
def test_keyupdate_from_next_hop(relay_factory, keyupdate_peer, when):
    """(a) KeyUpdate right after MAIL, before its 250; (b) right after the
    354, while krelay sends the body."""
    ktls = ktls_available()
    peer = keyupdate_peer(when)
    relay = relay_factory(relay_conf(peer))
    content = content_of(f"ku-{when}-{time.time_ns()}", make_body(200_000))
    qid = submit(relay.port, content)
    check_delivered(relay, peer, [qid], [content], ktls)
    assert peer.count("keyupdate sent") >= 1, peer.lines
    assert peer.count("tls established TLSv1.3") >= 1, peer.lines


def test_keyupdate_before_each_message_on_one_connection(relay_factory, keyupdate_peer):
    """(c) several messages over one connection (MaxMessagesPerConnection
    default), a KeyUpdate before each MAIL: all arrive.  The peer serves one
    connection at a time, so krelay gets one worker and one connection per
    destination: every message queues behind the first connection."""
    ktls = ktls_available()
    peer = keyupdate_peer("mail")
    relay = relay_factory(relay_conf(peer) + "Workers=1\nDestinationConcurrency=1\n")
    contents = [content_of(f"ku-multi-{i}-{time.time_ns()}", make_body(5000 + 3000 * i))
                for i in range(5)]
    qids = [submit(relay.port, c) for c in contents]
    check_delivered(relay, peer, qids, contents, ktls)
    assert peer.count("keyupdate sent") >= len(qids), peer.lines
    if not ktls:
        # the connection is reused: fewer connections than messages, and the
        # second and later MAILs on it came after a KeyUpdate each
        assert peer.connections() < len(qids), peer.lines
        assert peer.count("keyupdate sent") == len(qids), peer.lines
