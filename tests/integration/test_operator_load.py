"""Operator actions under load, not on an idle relay: each broke once.

- `krelay queue flush` every 50 ms while messages flow: it used to take in
  queue/ID files that sessions had just renamed there but not yet handed
  over, so messages went out twice, and one recipient got another message's
  body (the second copy read a file the first had given back to the pool).
- SIGTERM while sessions are receiving: a session in the middle of a
  message was never freed, and the stop hung for 30 s with the listeners
  already closed.

The load is krelay-bench's source; the next hop is krelay-bench's sink with
--verify, which checks each body against its own checksum and counts every
message it is given.
"""
import socket
import subprocess
import threading
import time

from helpers import wait_for
from test_bench_tool import BENCH, ENV, Sink
from test_queue_routing import queue_cmd
from test_relay import (content_of, raw_peer_factory, submit,  # noqa: F401 (fixture)
                        wait_deliveries, wait_spool_empty)


def start_source(relay, n, concurrency=20, per_conn=10):
    return subprocess.Popen([BENCH, "source", "--to", f"127.0.0.1:{relay.port}", "--messages",
                             str(n), "--size", "mix:1k=50,20k=40,200k=10", "--concurrency",
                             str(concurrency), "--per-conn", str(per_conn), "--tls", "none",
                             "--timeout", "120", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish_source(p):
    import json
    out, err = p.communicate(timeout=180)
    assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]
    return json.loads(out) if out.strip() else {}


def test_flush_under_load_delivers_each_message_once(relay_factory, tmp_path):
    n = 1500
    sink = Sink(tmp_path, "--verify", timeout=300)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=none\n"
                          "MaxConnections=200\nRetrySchedule=1s,2s\n")
    # a connection per message: the load lasts long enough for many flushes
    src = start_source(relay, n, per_conn=1)
    stop = threading.Event()
    flushes = [0]

    def flusher():  # bounded: until the source is done, at most 180 s
        end = time.time() + 180
        while not stop.is_set() and time.time() < end:
            p = queue_cmd(relay, "flush")
            assert p.returncode == 0, p.stderr
            flushes[0] += 1
            time.sleep(0.05)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        res = finish_source(src)
    finally:
        stop.set()
        t.join()
    assert res.get("messages_ok") == n, res
    wait_spool_empty(relay, timeout=120)
    r = sink.finish()
    assert flushes[0] >= 5, flushes
    assert r["checksum_errors"] == 0, r
    assert r["messages"] == n, (r["messages"], n, f"{flushes[0]} flushes")


def test_release_under_load_takes_in_only_what_was_released(relay_factory, tmp_path):
    """hold + release of queued messages while others flow: each message is
    delivered once, the released ones included."""
    sink = Sink(tmp_path, "--verify", timeout=300)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=none\n"
                          "MaxConnections=200\nDeliveryMode=queueonly\n")
    first = start_source(relay, 30, concurrency=3)
    assert finish_source(first).get("messages_ok") == 30
    ids = wait_for(lambda: (lambda q: q if len(q) == 30 else None)(relay.queued()), 20,
                   "30 queued messages")
    for qid in ids[:10]:
        assert queue_cmd(relay, "hold", qid).returncode == 0
    src = start_source(relay, 600)
    for qid in ids[:10]:
        assert queue_cmd(relay, "release", qid).returncode == 0
        assert queue_cmd(relay, "flush").returncode == 0
    assert finish_source(src).get("messages_ok") == 600
    assert queue_cmd(relay, "flush").returncode == 0
    wait_spool_empty(relay, timeout=120)
    r = sink.finish()
    assert r["checksum_errors"] == 0 and r["messages"] == 630, r


def test_sigterm_under_load_stops_at_once(relay_factory, tmp_path):
    """Stopped while sessions are mid-message: the relay exits in well under
    5 s (the sessions get 421 or lose their connection; nothing they were
    not told was queued counts), and after a restart every message that got
    its 250 reaches the next hop."""
    sink = Sink(tmp_path, "--verify", timeout=300)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=none\n"
                          "MaxConnections=200\n")
    src = start_source(relay, 5000, concurrency=40)
    wait_for(lambda: relay.logs().count(" smtp queued ") >= 200, 60, "200 messages queued")
    t0 = time.time()
    rc = relay.stop(timeout=30)
    took = time.time() - t0
    src.kill()
    src.communicate()
    assert rc == 0, relay.errors()[-2000:]
    assert took < 5, f"stop took {took:.1f} s"
    # "queued" is logged before its 250 goes out: each such message is durable
    ok = relay.logs().count(" smtp queued ")
    relay.start()
    wait_spool_empty(relay, timeout=120)
    r = sink.finish()
    assert r["checksum_errors"] == 0, r
    assert r["messages"] >= ok, (r["messages"], ok)


def test_hold_during_a_delivery_never_sends_twice(relay_factory, raw_peer_factory):
    """`krelay queue hold` while the next hop is taking the message: the
    relay finishes the delivery, and the message is not held afterwards
    (it left the queue); before, the files were moved under the delivery,
    and a release sent it a second time."""
    peer = raw_peer_factory(final_delay=2.0)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\nLogLevel=10\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("hold-mid"))
    # the next hop has the body and waits before its 250
    wait_for(lambda: any(c.upper().startswith(b"DATA") for ses in peer.sessions
                         for c in ses["log"]), 20, "the delivery's DATA")
    p = queue_cmd(relay, "hold", qid)
    assert p.returncode == 0, p.stderr
    wait_deliveries(relay, 1, status="sent")
    wait_spool_empty(relay)
    assert not (relay.queue / "hold" / qid).exists(), p.stdout
    assert "not held" in p.stdout, p.stdout
    if (relay.queue / "hold").exists():
        assert list((relay.queue / "hold").iterdir()) == []
    # removed for good: nothing of it can be sent again
    relay.wait_log(rf"trace: message {qid} active -> removing")
    assert f"message {qid} active -> retry-save" not in relay.logs()
    assert len(peer.messages()) == 1


def test_hold_and_delete_of_a_waiting_message(relay_factory):
    """A message waiting for its retry: hold moves it to hold/ at once (the
    relay lets go of it), release brings it back, delete removes it."""
    relay = relay_factory("RetrySchedule=1h\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("hold-wait"))
    wait_deliveries(relay, 1, status="deferred")
    p = queue_cmd(relay, "hold", qid)
    assert p.returncode == 0 and "held by krelay" in p.stdout, (p.stdout, p.stderr)
    assert (relay.queue / "hold" / qid).exists() and qid not in relay.queued()
    p = queue_cmd(relay, "release", qid)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: len(wait_deliveries(relay, 2, status="deferred")) >= 2, 20, "a retry")
    p = queue_cmd(relay, "delete", qid)
    assert p.returncode == 0 and "deleted by krelay" in p.stdout, (p.stdout, p.stderr)
    wait_spool_empty(relay)


def test_sigterm_does_not_wait_for_a_silent_next_hop(relay_factory, tmp_path):
    """A next hop that accepts the connection and never says a word: a stop
    closes that connection at once (nothing of the message was sent), and
    the message goes out after the restart."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshakes; nobody answers
    line = f"SmartHost=[127.0.0.1]:{silent.getsockname()[1]}"
    try:
        relay = relay_factory(f"{line}\nTLSPolicy=none\nCommandTimeout=300\n")
        qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("silent"))
        time.sleep(1)  # connected, waiting for a greeting that never comes
        t0 = time.time()
        assert relay.stop() == 0
        took = time.time() - t0
        assert took < 5, f"stop took {took:.1f} s"
        assert qid in relay.queued()
    finally:
        silent.close()
    sink = Sink(tmp_path, timeout=120)
    relay.conf.write_text(relay.conf.read_text().replace(
        line, f"SmartHost=[127.0.0.1]:{sink.port}"))
    relay.start()
    wait_spool_empty(relay, timeout=30)
    assert sink.finish()["messages"] == 1
