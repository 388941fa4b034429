#!/usr/bin/python3
"""postfix_relay: Postfix as the relay under test in bench/run.sh.

    bench/postfix_relay.py --dir DIR --relayhost PORT --certs CERTDIR \\
        --cgroup CGROUP_DIR --info FILE [--reuse] [--max-seconds S]

Runs one private Postfix 3.7 instance, built by the tests' own
tests/integration/postfix_peer.py (role "relay": its own config_directory,
queue_directory and data_directory under DIR, smtpd on a free 127.0.0.1
port, inet_interfaces=127.0.0.1, mynetworks=127.0.0.0/8, STARTTLS offered
inbound with the bench's certificates, relayhost=[127.0.0.1]:PORT with
smtp_tls_security_level=encrypt, TLS 1.2 or newer), tuned as a high-volume
relay (settings below), and:

  * starts it with every one of its processes in the cgroup v2 CGROUP_DIR:
    this process moves itself into it, runs `postfix start` (so master and
    everything master ever forks -- smtpd, cleanup, qmgr, smtp, tlsproxy,
    trivial-rewrite, postlogd... -- are born there), then moves itself back
    out; the cgroup's cpu.stat then counts all of the instance's CPU time,
    including processes that have exited;
  * writes FILE (JSON: port, base, queue, maillog, master_pid) once smtpd
    greets;
  * waits for SIGTERM/SIGINT (or --max-seconds), then stops the instance:
    `postfix stop`, `postfix abort` if that fails, SIGKILL of master's
    process group if anything is left.
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from postfix_peer import Postfix  # noqa: E402  (the tests' private-instance builder)

# A relay that is meant to move a lot of mail, and as much concurrency
# towards the next hop as krelay gets (bench/run.sh gives krelay 20
# connections per destination in all).
TUNING = {
    "message_size_limit": "67108864",
    "default_process_limit": "100",
    "default_destination_concurrency_limit": "20",
    "smtp_destination_concurrency_limit": "20",
    "initial_destination_concurrency": "20",  # no slow start
    # TLS session resumption, as krelay does per destination
    "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
    "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
    "smtpd_tls_ask_ccert": "no",
}
# Needed by smtp_tls_connection_reuse = yes (TLS connections kept open by
# tlsproxy(8) so that scache can hand them to the next smtp(8) delivery).
TLSPROXY = "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"


def cgroup2_mount():
    for line in Path("/proc/mounts").read_text().splitlines():
        f = line.split()
        if f[2] == "cgroup2":
            return f[1]
    raise SystemExit("postfix_relay: no cgroup2 mount")


def own_cgroup():
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return cgroup2_mount() + line[3:].rstrip("/")
    raise SystemExit("postfix_relay: this process is in no cgroup v2")


def join(cgroup):
    Path(cgroup, "cgroup.procs").write_text(f"{os.getpid()}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--relayhost", required=True, help="next hop's port on 127.0.0.1")
    ap.add_argument("--certs", required=True, help="scripts/mkcerts.sh output directory")
    ap.add_argument("--cgroup", required=True,
                    help="cgroup v2 directory for the instance, or 'none' (no cgroup v2 here)")
    ap.add_argument("--info", required=True)
    ap.add_argument("--reuse", action="store_true", help="smtp_tls_connection_reuse = yes")
    ap.add_argument("--max-seconds", type=float, default=900)
    args = ap.parse_args()

    c = Path(args.certs).resolve()
    certs = SimpleNamespace(ca=c / "ca.crt", server_crt=c / "server.crt", server_key=c / "server.key",
                            client_crt=c / "client.crt", client_key=c / "client.key")
    main_cf = dict(TUNING, smtp_tls_connection_reuse="yes" if args.reuse else "no")
    pf = Postfix(Path(args.dir).resolve(), certs, role="relay", relayhost=args.relayhost,
                 main=main_cf, master_extra=TLSPROXY)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        if args.cgroup == "none":
            pf.start()
        else:
            home = own_cgroup()
            join(args.cgroup)
            try:
                pf.start()
            finally:
                join(home)
        info = {"port": pf.port, "base": str(pf.base), "queue": str(pf.queuedir),
                "maillog": str(pf.maillog), "master_pid": pf.master_pid()}
        tmp = Path(args.info + ".tmp")
        tmp.write_text(json.dumps(info) + "\n")
        tmp.rename(args.info)
        deadline = time.monotonic() + args.max_seconds
        while not stop and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        pf.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
