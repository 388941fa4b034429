#!/usr/bin/python3
"""krelay's fault soak: operator actions and faults under load, with a
client and a sink that record every message.

Phases (each bounded by its knob; all traffic on loopback):
  kills    kill -9 of the relay at random moments under load, restarted at
           once, in DeliveryMode=background and interactive (--kills each)
  flush    `krelay queue flush` every 50 ms under load (--flush-s seconds),
           with `hold`, `release` and `delete` of queued messages mixed in
           (a deleted message is not counted lost)
  stops    SIGTERM under load, then a restart (--stops); each stop is timed
  hup      SIGHUP under load (--hups)
  diskfull the queue on a small loop-mounted ext4 that fills up under load
           (--disk-full cycles; needs root and mount, else it says so)

The client sends unique messages (Message-Id, and a SHA-256 of the body in
a header) with smtplib and records each one acknowledged with its queue id;
the sink (a small SMTP server here) records each one that arrives, when, and
whether its body matches its hash.  At the end the relay drains and the
soak prints:

  acknowledged arrived lost duplicates sent_duplicates mismatches slowest_stop

`sent_duplicates` counts copies that arrived after the relay had logged
that message's recipient status=sent (a copy arriving before that line is
the at-least-once window of a kill -9, and allowed).  Exit 0 only when
lost = 0, sent_duplicates = 0, mismatches = 0 and every stop took < 5 s.

  tests/soak/soak.py [--krelay BIN] [--kills N] [--flush-s S] [--stops N]
                     [--hups N] [--disk-full N] [--seed N]
"""
import argparse
import json
import hashlib
import os
import random
import re
import signal
import smtplib
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# ---- the recording sink --------------------------------------------------------

class Sink(socketserver.ThreadingTCPServer):
    """Speaks enough ESMTP to take mail in clear (PIPELINING, no CHUNKING):
    records (arrival time, Message-Id, body ok) for every message."""
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # socketserver's 5 drops handshakes under load

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SinkSession)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.got = []  # (time, msgid, ok)

    def record(self, data):
        head, _, body = data.partition(b"\r\n\r\n")
        mid = re.search(rb"^Message-Id: <([^>]+)>", head, re.M | re.I)
        want = re.search(rb"^X-Soak-Sha256: ([0-9a-f]{64})", head, re.M)
        ok = bool(want) and hashlib.sha256(body).hexdigest().encode() == want.group(1)
        with self.lock:
            self.got.append((time.time(), mid.group(1).decode() if mid else "?", ok))


class SinkSession(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            self.session()
        except OSError:
            pass  # the relay was killed mid-session: what was not answered 250 is its own

    def session(self):
        w = self.wfile
        w.write(b"220 sink ESMTP\r\n")
        data = None
        for line in self.rfile:
            if data is not None:
                if line == b".\r\n":
                    self.server.record(bytes(data))
                    data = None
                    w.write(b"250 2.0.0 Ok\r\n")
                else:
                    data += line[1:] if line.startswith(b"..") else line
                continue
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                w.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif cmd == b"DATA":
                data = bytearray()
                w.write(b"354 go\r\n")
            elif cmd == b"QUIT":
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"250 2.0.0 Ok\r\n")


# ---- the recording client -------------------------------------------------------

class Client:
    """Threads that send unique messages while `running` is set and record
    every acknowledged one: {msgid: qid}."""

    def __init__(self, port_of, threads=6, seed=1):
        self.port_of, self.threads = port_of, threads
        self.rng = random.Random(seed)
        self.tag = f"{os.getpid()}-{seed}"  # Message-Ids unique across runs
        self.lock = threading.Lock()
        self.acked = {}
        self.seq = 0
        self.running = threading.Event()
        self.pool = []

    def _message(self):
        with self.lock:
            self.seq += 1
            n = self.seq
            size = self.rng.choice([500, 3000, 20000, 120000])
        mid = f"soak-{self.tag}-{n}@soak.test"
        body = b"".join(b"%06d soak line ......................................\r\n" % i
                        for i in range(size // 56 + 1))
        if n % 7 == 0:
            body += b".leading dot\r\n..two\r\n"
        head = (f"From: s@soak.test\r\nTo: r@example.com\r\nSubject: soak {n}\r\n"
                f"Message-Id: <{mid}>\r\nX-Soak-Sha256: {hashlib.sha256(body).hexdigest()}\r\n"
                "\r\n").encode()
        return mid, head + body

    def _run(self):
        while self.running.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port_of(), timeout=20) as s:
                    s.ehlo("client.soak")
                    for _ in range(5):
                        if not self.running.is_set():
                            break
                        mid, msg = self._message()
                        s.mail("s@soak.test")
                        s.rcpt("r@example.com")
                        code, text = s.data(msg)
                        q = re.search(rb"(?:queued|relayed) as ([0-9A-F]{16})", text)
                        if code == 250 and q:
                            with self.lock:
                                self.acked[mid] = q.group(1).decode()
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the relay is down or refusing: try again

    def start(self):
        self.running.set()
        self.pool = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self.pool:
            t.start()

    def stop(self):
        self.running.clear()
        for t in self.pool:
            t.join(60)


# ---- the relay ------------------------------------------------------------------

class Relay:
    def __init__(self, binary, work, sink_port, mode, queue_dir=None):
        self.binary, self.work = binary, work
        self.port = free_port()
        self.queue = queue_dir or work / "queue"
        self.log = work / "krelay.log"
        self.conf = work / "krelay.conf"
        self.mode = mode
        self.sink_port = sink_port
        self.write_conf()
        self.proc = None
        self.stderr = open(work / "krelay.stderr", "ab")

    def write_conf(self, extra=""):
        self.conf.write_text(
            f"Listen=127.0.0.1:{self.port}\nQueueDirectory={self.queue}\nHostname=relay.soak\n"
            f"Workers=2\nLogFile={self.log}\nSmartHost=[127.0.0.1]:{self.sink_port}\n"
            f"TLSPolicy=none\nRetrySchedule=1s,2s\nMaxConnections=500\n"
            f"DeliveryMode={self.mode}\nInteractiveTimeout=5s\n"
            + ("RunAsUser=root\n" if os.geteuid() == 0 else "") + extra)

    def start(self):
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99")
        self.proc = subprocess.Popen([self.binary, "-C", str(self.conf)], stdout=self.stderr,
                                     stderr=self.stderr, env=env)
        end = time.time() + 20
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"krelay exited {self.proc.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    if c.recv(64).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("krelay did not start")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        t0 = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        took = time.time() - t0
        if rc != 0:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise SystemExit(f"krelay exited {rc} on SIGTERM after {took:.1f} s\n{tail}")
        return took

    def queue_cmd(self, *args):
        return subprocess.run([self.binary, "queue", "-C", str(self.conf), *args],
                              capture_output=True, text=True, timeout=30)

    def queued(self):
        """What `krelay queue list` says is queued and not held: queue/ID
        files and messages still in a segment (seg/)."""
        p = self.queue_cmd("list", "--json")
        if p.returncode != 0:
            raise RuntimeError(f"krelay queue list --json: {p.stderr.strip()}")
        return sorted(m["id"] for m in json.loads(p.stdout) if not m["held"])

    def held(self):
        d = self.queue / "hold"
        return sorted(p.name for p in d.iterdir() if re.fullmatch(r"[0-9A-F]{16}", p.name)) \
            if d.exists() else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SENT = re.compile(r"^(\S+)Z krelay\[\d+\]: ([0-9A-F]{16}) delivery .* status=sent ", re.M)


def sent_times(log_text):
    """{qid: first time its recipient was logged status=sent}."""
    out = {}
    for ts, qid in SENT.findall(log_text):
        t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
        out.setdefault(qid, t.timestamp())
    return out


# ---- the phases -------------------------------------------------------------------

def phase_kills(relay, client, n, rng):
    for _ in range(n):
        time.sleep(rng.uniform(0.1, 0.8))
        relay.kill9()
        relay.start()


DELETED = set()  # queue ids `krelay queue delete` was asked for: not counted lost


def phase_flush(relay, client, seconds, rng):
    end = time.time() + seconds
    while time.time() < end:
        relay.queue_cmd("flush")
        q = relay.queued()
        if q and rng.random() < 0.2:
            relay.queue_cmd("hold", rng.choice(q))
        if q and rng.random() < 0.05:
            qid = rng.choice(q)
            DELETED.add(qid)
            relay.queue_cmd("delete", qid)
        h = relay.held()
        if h and rng.random() < 0.3:
            relay.queue_cmd("release", rng.choice(h))
        time.sleep(0.05)
    for qid in relay.held():
        relay.queue_cmd("release", qid)


def phase_stops(relay, client, n, rng, stops):
    for _ in range(n):
        time.sleep(rng.uniform(0.3, 1.0))
        stops.append(relay.stop())
        relay.start()


def phase_hups(relay, client, n, rng):
    for i in range(n):
        time.sleep(rng.uniform(0.2, 0.6))
        relay.write_conf(f"# reload {i}\n")
        relay.proc.send_signal(signal.SIGHUP)


def log_of(r):
    return r.log.read_text(errors="replace") if r.log.exists() else ""


def run_mode(args, mode, work, sink, stops, rng, queue_dir=None, phases=(), sink_port=None):
    relay = Relay(args.krelay, work, sink_port or sink.port, mode, queue_dir)
    relay.start()
    client = Client(lambda: relay.port, seed=rng.randrange(1 << 30))
    client.start()
    try:
        for ph in phases:
            ph(relay, client)
    finally:
        client.stop()
    # drain: everything acknowledged goes out (hold released, retries due)
    for qid in relay.held():
        relay.queue_cmd("release", qid)
    end = time.time() + args.drain_s
    while time.time() < end and (relay.queued() or relay.held()):
        relay.queue_cmd("flush")
        time.sleep(0.5)
    left = relay.queued() + relay.held()
    for qid in left[:3]:  # what the log says of a message that stayed
        lines = [x for x in log_of(relay).splitlines() if qid in x]
        print(f"soak: left {qid}:\n    " + "\n    ".join(lines[-8:]), flush=True)
    stops.append(relay.stop())
    return client.acked, log_of(relay), left


def disk_full_dir(work):
    img, mnt = work / "queue.ext4", work / "small"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "24M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    p = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return mnt, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--krelay", default=str(ROOT / "build" / "krelay"))
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--flush-s", type=float, default=60)
    ap.add_argument("--stops", type=int, default=20)
    ap.add_argument("--hups", type=int, default=10)
    ap.add_argument("--disk-full", type=int, default=1)
    ap.add_argument("--drain-s", type=float, default=120)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"soak: {args.krelay} seed={args.seed} kills={args.kills}/mode "
          f"flush={args.flush_s}s stops={args.stops} hups={args.hups} "
          f"disk_full={args.disk_full}", flush=True)
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    acked, logs, left, stops, notes = {}, [], [], [], []
    with tempfile.TemporaryDirectory(prefix="krelay-soak-") as tmp:
        tmp = Path(tmp)
        runs = [("background", [lambda r, c: phase_kills(r, c, args.kills, rng)]),
                ("interactive", [lambda r, c: phase_kills(r, c, args.kills, rng)]),
                ("background", [lambda r, c: phase_flush(r, c, args.flush_s, rng),
                                lambda r, c: phase_stops(r, c, args.stops, rng, stops),
                                lambda r, c: phase_hups(r, c, args.hups, rng)])]
        for i, (mode, phases) in enumerate(runs):
            work = tmp / f"run{i}"
            work.mkdir()
            a, log, l = run_mode(args, mode, work, sink, stops, rng, phases=phases)
            acked.update(a)
            logs.append(log)
            left += l
            print(f"soak: run {i} ({mode}) acknowledged {len(a)}, left in the queue {len(l)}"
                  + (f" ({' '.join(l[:5])}...)" if l else ""), flush=True)
            if not a:
                notes.append(f"run {i} ({mode}): nothing was acknowledged")
        for k in range(args.disk_full):
            work = tmp / f"full{k}"
            work.mkdir()
            mnt, why = disk_full_dir(work)
            if mnt is None:
                notes.append(f"disk-full phase not run: mount: {why}")
                continue
            try:
                def fill(r, c):
                    # the next hop is away: the queue fills until the disk is
                    # full (452s), a while more, then it comes back (SIGHUP)
                    end = time.time() + 90
                    while time.time() < end and "No space left" not in log_of(r):
                        time.sleep(0.3)
                    time.sleep(2)
                    r.sink_port = sink.port
                    r.write_conf()
                    r.proc.send_signal(signal.SIGHUP)
                    time.sleep(1)

                a, log, l = run_mode(args, "background", work, sink, stops, rng,
                                     queue_dir=mnt / "q", phases=[fill], sink_port=free_port())
                acked.update(a)
                logs.append(log)
                left += l
                print(f"soak: disk full {k}: acknowledged {len(a)}, "
                      f"{log.count('No space left')} no-room events, left in the queue {len(l)}"
                      + (f" ({' '.join(l[:5])}...)" if l else ""), flush=True)
            finally:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
    sent_at = {}
    for log in logs:
        for qid, t in sent_times(log).items():
            sent_at.setdefault(qid, t)
    with sink.lock:
        got = list(sink.got)
    by_mid = {}
    for t, mid, ok in got:
        by_mid.setdefault(mid, []).append((t, ok))
    lost = [m for m in acked if m not in by_mid and acked[m] not in DELETED]
    dups = sum(len(v) - 1 for v in by_mid.values())
    sent_dups = 0
    for mid, copies in by_mid.items():
        qid = acked.get(mid)
        if qid in sent_at and len(copies) > 1:
            sent_dups += sum(1 for t, _ in copies if t > sent_at[qid] + 0.001)
    mismatches = sum(1 for _, _, ok in got if not ok)
    slowest = max(stops) if stops else 0.0
    print(f"acknowledged={len(acked)} arrived={len(got)} lost={len(lost)} duplicates={dups} "
          f"sent_duplicates={sent_dups} mismatches={mismatches} slowest_stop={slowest:.2f}s "
          f"stops={len(stops)} deleted={len(DELETED)} left_in_queue={len(left)}")
    for n in notes:
        print(f"soak: {n}")
    ok = (not lost and sent_dups == 0 and mismatches == 0 and slowest < 5 and
          not any("nothing was acknowledged" in n for n in notes))
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
