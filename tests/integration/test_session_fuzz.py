"""Mutated SMTP sessions (tests/fuzz/session_fuzz.py) against the ASan+UBSan
relay with a live next hop, several at once.  Checked: the relay never
crashes or trips a sanitizer, every session ends once its client is done (no
session left behind holding a slot), the relay still answers, every message
it acknowledged reaches the next hop exactly once and byte for byte, nothing
it refused does, and it stops in well under 5 s.

A short run is part of make test; `make fuzz` runs it long
(FUZZ_SESSION_S seconds).  FUZZ_SEED replays a run; each failure names the
seed of its session.
"""
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import wait_for
from test_relay import (BIG, content_of, msgid_of, peer_messages, split_received, submit_bdat,
                        wait_deliveries, wait_spool_empty)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from session_fuzz import Session  # noqa: E402

SESSIONS = int(os.environ.get("FUZZ_SESSIONS", "300"))
SECONDS = float(os.environ.get("FUZZ_SESSION_S", "0"))  # > 0: run this long instead
SEED = int(os.environ.get("FUZZ_SEED", str(int(time.time()) % 1000000 * 1000000)))
CLIENTS = 4


def probe(port):
    """The relay answers a new client at once."""
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.noop()[0] == 250


def test_fuzzed_sessions(relay_factory):
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          "MaxMessageSize=65536\nMaxConnections=400\n")
    # a file in the pool first: the next messages are written over it
    submit_bdat(relay.port, "s@example.org", ["r@example.com"], content_of("fz-warm", b"w\r\n"))
    wait_deliveries(relay, 1, status="sent")
    print(f"session fuzz: seed base {SEED}, {SESSIONS} sessions or {SECONDS} s")

    def one(i):
        seed = SEED + i
        try:
            return Session(seed, relay.port).run()
        except Exception as e:  # name the session that failed
            raise AssertionError(f"session seed={seed}: {e!r}") from e

    queued, sent, n = [], {}, 0
    end = time.time() + SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        while (n < SESSIONS) if SECONDS <= 0 else (time.time() < end):
            batch = range(n, n + 40)
            for ids, tags in pool.map(one, batch):
                queued += ids
                sent.update(tags)
            n += len(batch)
            assert relay.proc.poll() is None, relay.errors()[-3000:]
            probe(relay.port)
    # every session ended: none left holding a slot
    wait_for(lambda: relay.logs().count(" smtp disconnect ") >=
             relay.logs().count(" smtp connect "), 20, "every session to end")
    wait_spool_empty(relay, timeout=120)
    got = peer_messages(peer)
    got.pop("fz-warm@example.org")
    relayed = set()
    for tag, copies in got.items():
        assert len(copies) == 1, (tag, [q for q, _, _ in copies])
        assert tag in sent, tag
        assert sent[tag] is not None, f"{tag}: refused content was relayed"
        received, rest = split_received(copies[0][1], b"\r\n")
        assert rest == sent[tag], (tag, rest[:300], sent[tag][:300])
        assert msgid_of(rest) == tag
        relayed.add(re.search(rb"\(krelay\) with \S+ id ([0-9A-F]{16})", received[-1])
                    .group(1).decode())
    # every acknowledged message was relayed (and more may have been: a
    # client that left without reading its reply)
    assert len(queued) == len(set(queued))
    assert set(queued) <= relayed, sorted(set(queued) - relayed)
    t0 = time.time()
    relay.stop()
    stop_s = time.time() - t0
    print(f"session fuzz: {n} sessions, {len(queued)} messages acknowledged and relayed, "
          f"stop {stop_s:.2f} s")
    assert stop_s < 5, stop_s
