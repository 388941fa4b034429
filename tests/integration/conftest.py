"""Fixtures for krelay's integration tests.

Every test starts the real krelay binary (the ASan+UBSan build from
`make test`, or $KRELAY_BIN) on free loopback ports with its own queue
directory, talks to it with clients nobody here wrote (smtplib, ssl, swaks,
openssl s_client), and checks at teardown that it stopped cleanly: exit 0 on
SIGTERM, no sanitizer report.
"""
import os
import re
import struct
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KRELAY = os.environ.get("KRELAY_BIN", str(ROOT / "build" / "test" / "krelay"))
MKCERTS = ROOT / "scripts" / "mkcerts.sh"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Certs:
    """A CA with server and client certificates, a second unrelated CA with
    its own client certificate (not trusted by the relay), and the seed
    how-to's 1024-bit self-signed set-up."""

    def __init__(self, base: Path):
        self.dir = base / "good"
        self.rogue = base / "rogue"
        self.seed = base / "seed"
        subprocess.run([MKCERTS, str(self.dir), "--name", "relay.test"], check=True,
                       capture_output=True)
        subprocess.run([MKCERTS, str(self.rogue), "--name", "rogue.test"], check=True,
                       capture_output=True)
        self.seed.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "3650",
                        "-keyout", str(self.seed / "server.key.open"), "-out",
                        str(self.seed / "server.crt"), "-subj", "/CN=seed.test"],
                       check=True, capture_output=True)
        self.ca = self.dir / "ca.crt"
        self.server_crt = self.dir / "server.crt"
        self.server_key = self.dir / "server.key"
        self.client_crt = self.dir / "client.crt"
        self.client_key = self.dir / "client.key"

    def fingerprint(self, crt):
        out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(crt)],
                             check=True, capture_output=True, text=True).stdout
        return out.strip().split("=", 1)[1]


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


class Relay:
    def __init__(self, tmp: Path, certs: Certs, conf: str = "", tls=True, smtps=True,
                 prelude=None):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.smtps_port = free_port() if (tls and smtps) else None
        self.queue = tmp / "queue"
        self.log = tmp / "krelay.log"
        self.conf = tmp / "krelay.conf"
        lines = [f"Listen=127.0.0.1:{self.port}"]
        if self.smtps_port:
            lines.append(f"Listen=127.0.0.1:{self.smtps_port} smtps")
                # Relaying goes to a loopback port where nothing listens, so accepted
        # messages stay queued (deferred) unless a test routes them elsewhere.
        self.dead_port = free_port()
        # The test relays stay root (RunAsUser=root): pytest's files are
        # root's alone, and reloads re-read them; test_runas.py runs as krelay.
        lines += [f"QueueDirectory={self.queue}", "Hostname=relay.test", "Workers=2",
                  "RunAsUser=root",
                  f"LogFile={self.log}", f"SmartHost=[127.0.0.1]:{self.dead_port}"]
        if tls:
            lines += [f"CACertFile={certs.ca}", f"ServerCertFile={certs.server_crt}",
                      f"ServerKeyFile={certs.server_key}"]
        self.conf.write_text("\n".join(lines) + "\n" + conf + "\n")
        self.proc = None
        self.stderr = tmp / "krelay.stderr"
        self.prelude = prelude or []
        self.hung = self.killed = False

    def start(self, wait=True):
        for attempt in range(3):
            self._err = open(self.stderr, "ab")
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
                       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
            self.proc = subprocess.Popen(self.prelude + [KRELAY, "-C", str(self.conf)],
                                         stdout=self._err, stderr=self._err, env=env)
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except AssertionError:
                # free_port() only found a port free a moment ago: when
                # something else took it meanwhile, pick others and retry
                if attempt == 2 or "Address already in use" not in self.errors():
                    raise
                self._err.close()
                self.stderr.write_bytes(b"")
                self._new_ports()
        return self

    def _new_ports(self):
        text = self.conf.read_text()
        for attr in ("port", "smtps_port"):
            old = getattr(self, attr)
            if old:
                new = free_port()
                text = re.sub(rf"(?m)^Listen=127\.0\.0\.1:{old}\b", f"Listen=127.0.0.1:{new}",
                              text)
                setattr(self, attr, new)
        self.conf.write_text(text)

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"krelay exited {self.proc.returncode}: {self.errors()}")
            try:
                # ready when krelay itself greets (not when anything at all
                # accepts: another program may hold the port, see start())
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.settimeout(2)
                    if c.recv(512):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("krelay did not start listening")

    def errors(self):
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def logs(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, pattern, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.logs())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.logs()[-3000:]}")

    # The relay gives sessions still open 30 s (SHUTDOWN_GRACE_MS) before it
    # leaves them: past that and a margin, it hangs.
    STOP_S = 40

    def stop(self, sig=signal.SIGTERM, timeout=STOP_S):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.hung = True  # (the teardown fails the test)
            self.proc.kill()
            rc = self.proc.wait()
        self._err.close()
        return rc

    def kill9(self):
        self.killed = True  # by the test: -9 is what it asked for
        self.proc.kill()
        self.proc.wait()
        self._err.close()

    def queued(self):
        """Every queued message: queue/ID files, and those still in a
        segment (seg/: committed, not yet delivered nor written to queue/)."""
        # the segments first: a message deferred from a segment is written
        # to queue/ID before it leaves the segment, so read in this order
        # it is seen in one or the other (the other order could miss it)
        in_seg = set(segment_messages(self.queue))
        q = self.queue / "queue"
        ids = (p.name for p in q.iterdir()) if q.exists() else ()
        ids = {n for n in ids if re.fullmatch(r"[0-9A-F]{16}", n)}
        return sorted(ids | in_seg)

    def message(self, qid):
        # the segment first: a message leaves it only once queue/ID is
        # written (or once it is gone for good)
        live = segment_messages(self.queue)
        if qid in live:
            return parse_spool(live[qid])
        return read_spool(self.queue / "queue" / qid)


SEG_HEADER, SEG_REC = 64, 32


def segment_messages(queue_dir: Path):
    """{queue ID: queue file bytes} of the messages in QueueDirectory/seg/
    without their SEG_DONE record, read by the format in README.md ("The
    spool": a 64-byte header, then records of a 32-byte header and a
    payload, up to the first one that is not whole; CRCs are not checked
    here)."""
    live = {}
    d = queue_dir / "seg"
    for f in sorted(d.iterdir()) if d.exists() else ():
        try:
            data = f.read_bytes()
        except FileNotFoundError:  # reclaimed meanwhile
            continue
        if data[:8] != b"KRSEG001":
            continue
        off = SEG_HEADER
        while off + SEG_REC <= len(data):
            magic, rtype, length = struct.unpack_from("<IB3xI", data, off)
            qid = data[off + 16:off + 32].decode("latin-1")
            if magic != 0x3152524B or rtype not in (1, 2) or \
                    off + SEG_REC + length > len(data) or not re.fullmatch(r"[0-9A-F]{16}", qid):
                break
            if rtype == 1:
                live[qid] = data[off + SEG_REC:off + SEG_REC + length]
            else:
                live.pop(qid, None)
            off += SEG_REC + length
    return live


def read_spool(path: Path):
    """Parses a spool file by the format in README.md: body, envelope, trailer."""
    return parse_spool(path.read_bytes())


def parse_spool(data: bytes):
    """Parses a queue file's bytes: body, envelope, trailer."""
    trailer = data[-38:]
    m = re.fullmatch(rb"\nKRELAY-ENV ([0-9a-f]{16}) ([0-9a-f]{8})\n", trailer)
    assert m, f"bad trailer {trailer!r}"
    off, length = int(m.group(1), 16), int(m.group(2), 16)
    assert off + length + 38 == len(data)
    env_text = data[off:off + length].decode()
    env = {"rcpt": []}
    lines = env_text.split("\n")
    assert lines[0] == "krelay-envelope 1" and lines[-2] == "end"
    for line in lines[1:-2]:
        key, _, val = line.partition(" ")
        val = re.sub(r"%([0-9A-F]{2})", lambda mm: chr(int(mm.group(1), 16)), val)
        if key == "rcpt":
            env["rcpt"].append((val[0], val[2:]))
        else:
            env[key] = val
    return data[:off], env


@pytest.fixture
def relay_factory(tmp_path, certs):
    made = []

    def make(conf="", start=True, **kw):
        r = Relay(tmp_path / f"r{len(made)}", certs, conf, **kw)
        made.append(r)
        return r.start() if start else r

    yield make
    problems = []
    for r in made:
        rc = r.stop()
        err = r.errors()
        if "Sanitizer" in err or "runtime error" in err:
            problems.append(f"sanitizer report:\n{err[-4000:]}")
        elif r.hung:
            problems.append(f"krelay did not exit within {Relay.STOP_S} s of SIGTERM "
                            f"(killed):\n{err[-2000:]}")
        elif rc not in (0, None) and not (rc == -9 and r.killed):
            problems.append(f"krelay exited {rc} on SIGTERM:\n{err[-2000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def relay(relay_factory):
    """A running relay with TLS (STARTTLS + smtps) and default policy."""
    return relay_factory()
