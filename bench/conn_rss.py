#!/usr/bin/python3
"""conn_rss: how much memory krelay holds per waiting connection.

Starts the relay (build/krelay by default) on free loopback ports with a
throw-away queue and certificates, then reads its VmRSS (/proc/PID/status)
with no client, with IDLE cleartext connections that were greeted and say
nothing, and with HALF half-open TLS connections on the implicit TLS
listener (the first half of a ClientHello sent, the rest never).  Prints one
JSON object.  Bounded: fixed counts, every connect and read with a timeout,
the whole run stops after --limit seconds.  Not a test: a figure for README.

    bench/conn_rss.py [--bin build/krelay] [--idle 3000] [--half 600]
"""
import argparse
import json
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def sessions(log):
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count(" smtp connect ") - text.count(" smtp disconnect ")


def settle(pid, log, want, deadline):
    """Waits until the relay has want sessions open and its RSS stops moving."""
    while sessions(log) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    last = -1
    while time.monotonic() < deadline:
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def client_hello():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="relay.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "build" / "krelay"))
    ap.add_argument("--idle", type=int, default=3000)
    ap.add_argument("--half", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=float, default=180.0, help="seconds for the whole run")
    a = ap.parse_args()
    end = time.monotonic() + a.limit

    # this process holds every client socket: raise its own descriptor limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + a.half + 100
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"conn_rss: ulimit -Hn is {hard}, below the {need} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    tmp = Path(tempfile.mkdtemp(prefix="krelay-rss-"))
    subprocess.run([str(ROOT / "scripts" / "mkcerts.sh"), str(tmp / "certs"), "--name",
                    "relay.test"], check=True, capture_output=True)
    port, smtps = free_port(), free_port()
    log = tmp / "krelay.log"
    conf = tmp / "krelay.conf"
    conf.write_text(f"Listen=127.0.0.1:{port}\nListen=127.0.0.1:{smtps} smtps\n"
                    f"QueueDirectory={tmp / 'queue'}\nHostname=relay.test\n"
                    + ("RunAsUser=root\n" if os.geteuid() == 0 else "") +
                    f"Workers={a.workers}\nLogFile={log}\n"
                    f"MaxConnections={a.idle + a.half + 100}\nMaxConnectionsPerClient=0\n"
                    f"ServerCertFile={tmp / 'certs' / 'server.crt'}\n"
                    f"ServerKeyFile={tmp / 'certs' / 'server.key'}\n")
    err = open(tmp / "stderr", "wb")
    relay = subprocess.Popen([a.bin, "-C", str(conf)], stdout=err, stderr=err)
    held = []
    try:
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                    c.settimeout(2)
                    if c.recv(512):
                        break
            except OSError:
                time.sleep(0.1)
        base = settle(relay.pid, log, 0, min(end, time.monotonic() + 3))

        for i in range(a.idle):
            if time.monotonic() > end:
                sys.exit("conn_rss: out of time opening idle connections")
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(s)
        for s in held:
            if not s.recv(512).startswith(b"220 "):
                sys.exit("conn_rss: no greeting")
        idle = settle(relay.pid, log, a.idle, min(end, time.monotonic() + 10))
        for s in held:
            s.close()
        held.clear()
        settle(relay.pid, log, 0, min(end, time.monotonic() + 10))
        while sessions(log) > 0 and time.monotonic() < end:
            time.sleep(0.1)
        after_idle = rss_kib(relay.pid)

        hello = client_hello()
        part = hello[:len(hello) // 2]
        for i in range(a.half):
            if time.monotonic() > end:
                sys.exit("conn_rss: out of time opening TLS connections")
            s = socket.create_connection(("127.0.0.1", smtps), timeout=10)
            s.sendall(part)
            held.append(s)
        half = settle(relay.pid, log, a.half, min(end, time.monotonic() + 10))
        print(json.dumps({
            "binary": a.bin, "workers": a.workers,
            "rss_kib_no_clients": base,
            "idle_cleartext": a.idle, "rss_kib_idle": idle,
            "kib_per_idle": round((idle - base) / max(a.idle, 1), 1),
            "rss_kib_after_idle_closed": after_idle,
            "half_open_tls": a.half, "rss_kib_half_open": half,
            "kib_per_half_open": round((half - after_idle) / max(a.half, 1), 1),
        }))
    finally:
        for s in held:
            s.close()
        relay.terminate()
        try:
            relay.wait(30)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
