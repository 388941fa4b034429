#!/usr/bin/python3
"""smtp_load: a bounded SMTP load generator built on Python's smtplib and ssl.

Opens SESSIONS concurrent sessions (split over worker processes so the GIL is
not the bottleneck), each sending its share of MESSAGES messages of SIZE
bytes over STARTTLS or implicit TLS (one TLS session per connection, many
messages per connection), and prints one JSON object: messages, bytes,
seconds, messages/s, MB/s, reply latency percentiles, TLS versions seen and
errors.  Used by `make demo` and `make bench`; it stops by itself.
"""
import argparse
import json
import multiprocessing as mp
import smtplib
import socket

import ssl
import sys
import threading
import time


def make_body(size, seq):
    head = f"From: load@example.org\r\nTo: sink@example.com\r\nSubject: load {seq}\r\n\r\n".encode()
    line = ("x" * 76 + "\r\n").encode()
    lines = max(0, (size - len(head) - 2) // len(line))
    body = head + line * lines
    return body + b"y" * max(0, size - len(body) - 2) + b"\r\n"


def session(args, count, first_seq, out):
    ctx = ssl.create_default_context(cafile=args.ca) if args.ca else ssl._create_unverified_context()
    ctx.check_hostname = False
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    lat, errors, nbytes, versions, sent = [], [], 0, {}, 0
    deadline = time.monotonic() + args.timeout
    try:
        if args.mode == "smtps":
            s = smtplib.SMTP_SSL(args.host, args.port, context=ctx, timeout=30)
        else:
            s = smtplib.SMTP(args.host, args.port, timeout=30)
                # Like real MTAs' clients: no Nagle delay on the last small TLS record.
        s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.ehlo("load.example.org")
        if args.mode == "starttls":
            s.starttls(context=ctx)
            s.ehlo("load.example.org")
        v = s.sock.version() if hasattr(s.sock, "version") else "none"
        versions[v] = versions.get(v, 0) + 1
        for i in range(count):
            if time.monotonic() > deadline:
                errors.append("deadline reached")
                break
            body = make_body(args.size, first_seq + i)
            t0 = time.monotonic()
            s.sendmail("load@example.org", [f"sink{(first_seq + i) % 7}@example.com"], body)
            lat.append(time.monotonic() - t0)
            nbytes += len(body)
            sent += 1
        s.quit()
    except Exception as e:  # a failed session is reported, never hidden
        errors.append(f"{type(e).__name__}: {e}")
    out.append((sent, nbytes, lat, errors, versions))


def worker(args, sessions, first, q):
    out, threads = [], []
    per = args.messages // args.sessions
    for k in range(sessions):
        idx = first + k
        count = per + (1 if idx < args.messages % args.sessions else 0)
        t = threading.Thread(target=session, args=(args, count, idx * (per + 1), out))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    q.put(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["starttls", "smtps", "plain"], default="starttls")
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before a session stops")
    args = ap.parse_args()
    if args.sessions < 1 or args.messages < 1 or args.size < 200:
        ap.error("--sessions and --messages must be >= 1 and --size >= 200")
    procs = max(1, min(args.procs, args.sessions))
    q, ps, first = mp.Queue(), [], 0
    t0 = time.monotonic()
    for p in range(procs):
        n = args.sessions // procs + (1 if p < args.sessions % procs else 0)
        ps.append(mp.Process(target=worker, args=(args, n, first, q)))
        first += n
    for p in ps:
        p.start()
    results = [r for _ in ps for r in q.get()]
    for p in ps:
        p.join()
    secs = time.monotonic() - t0
    lat = sorted(x for r in results for x in r[2])
    versions = {}
    for r in results:
        for k, v in r[4].items():
            versions[k] = versions.get(k, 0) + v
    sent = sum(r[0] for r in results)
    nbytes = sum(r[1] for r in results)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

    print(json.dumps({
        "mode": args.mode, "messages": sent, "bytes": nbytes, "seconds": round(secs, 3),
        "messages_per_s": round(sent / secs, 1), "mb_per_s": round(nbytes / secs / 1e6, 2),
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                       "max": round(lat[-1] * 1000, 2) if lat else None},
        "sessions": args.sessions, "size": args.size, "tls_versions": versions,
        "errors": [e for r in results for e in r[3]][:10],
    }))
    return 0 if sent == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
