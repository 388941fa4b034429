"""Spool files are reused: once a delivered message's removal from queue/ is
durable, its file (kept open) goes to QueueDirectory/pool/ and the next
message is written over it where it is (pool/NAME, then renamed to
queue/ID at commit), so a busy relay allocates no inode and frees no blocks
per message.  Checked here: what the next hop receives is exact to the byte
whatever the sizes before it (a longer file left behind is cut to the new
message), the pool does not grow when messages come one after another, a
small body goes out in the same write as its BDAT command (over TLS in user
space too), a restart after kill -9 starts with an empty pool, and a message
dropped half-way leaves its (half-overwritten) file to the pool.
"""
import smtplib
import time

import pytest

from helpers import wait_for
from test_relay import (BIG, check_peer_copy, content_of, make_body, peer_messages,
                        submit_bdat, wait_deliveries, wait_spool_empty)

# Largest first: every later message is written over a longer file.
SIZES = [70000, 20000, 5000, 300, 2, 0, 9000]


def pool_files(relay):
    d = relay.queue / "pool"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def relayed_exact(relay, peer, tag, rcpt, n, size):
    """Submits a message (over a pool file), waits until it is the n-th
    delivery and the spool is empty; checks the peer's copy and the pool."""
    content = content_of(tag, make_body(size, dots=True), rcpt=rcpt)
    qid = submit_bdat(relay.port, "s@example.org", [rcpt], content)
    wait_deliveries(relay, n, status="sent", timeout=30)
    wait_spool_empty(relay)
    check_peer_copy(peer_messages(peer)[f"{tag}@example.org"][0][1], content, qid)
    assert 1 <= len(pool_files(relay)) <= 2, pool_files(relay)


@pytest.mark.parametrize("policy", ["none", "encrypt"])
def test_reused_files_carry_exact_bodies(relay_factory, policy):
    peer = relay_factory(BIG, tls=policy != "none")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy={policy}\n"
                          f"BodyPath=copy\n{BIG}")
    sent = {}
    for n, size in enumerate(SIZES):
        tag = f"reuse-{policy}-{n}-{size}"
        content = content_of(tag, make_body(size, dots=n % 2 == 1))
        qid = submit_bdat(relay.port, "s@example.org", ["r@example.com"], content)
        sent[tag] = (qid, content)
        # one at a time: each message finds the file its predecessor left
        wait_deliveries(relay, n + 1, status="sent", timeout=30)
        wait_spool_empty(relay)
    got = peer_messages(peer)
    for tag, (qid, content) in sent.items():
        copies = got.get(f"{tag}@example.org", [])
        assert len(copies) == 1, (tag, len(copies))
        check_peer_copy(copies[0][1], content, qid)
    # one file per worker at most comes and goes: without reuse there
    # would be one per message
    assert 1 <= len(pool_files(relay)) <= 2, pool_files(relay)
    want = "ssl_write" if policy == "encrypt" else "copy"
    assert f"body_path={want} " in relay.logs()


def test_pool_is_emptied_at_start_after_kill9(relay_factory):
    peer = relay_factory(BIG, tls=False)
    conf = f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n{BIG}"
    relay = relay_factory(conf)
    for n in range(3):
        submit_bdat(relay.port, "s@example.org", ["r@example.com"],
                    content_of(f"before-{n}", make_body(3000 - n * 1000, dots=False)))
        wait_deliveries(relay, n + 1, status="sent", timeout=30)
    wait_spool_empty(relay)
    assert pool_files(relay)
    relay.kill9()
    relay.start()
    # the second start's line (a dying relay's listener may still answer)
    relay.wait_log(r"(?s)starting .*starting .* queued=0 ")
    assert pool_files(relay) == []
    content = content_of("after", make_body(5000, dots=True))
    qid = submit_bdat(relay.port, "s@example.org", ["r@example.com"], content)
    wait_for(lambda: "after@example.org" in peer_messages(peer), 30, "the message at the peer")
    wait_spool_empty(relay)
    check_peer_copy(peer_messages(peer)["after@example.org"][0][1], content, qid)


def test_bounced_message_file_is_reused(relay_factory):
    """A message whose recipient is refused for good (sender <>: no bounce)
    leaves the queue by the same road: its file goes to the pool, and the
    next message, written over it, arrives exact."""
    peer = relay_factory(f"RelayDomains=ok.test\nRelayClients=10.9.9.9/32\n{BIG}", tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n{BIG}")
    submit_bdat(relay.port, "", ["r@example.com"],
                content_of("refused", make_body(8000, dots=False)))
    wait_deliveries(relay, 1, status="bounced", timeout=30)
    wait_spool_empty(relay)
    wait_for(lambda: pool_files(relay), 10, "the refused message's file in pool/")
    relayed_exact(relay, peer, "accepted", "r@ok.test", 1, 700)


def test_dropped_message_leaves_its_file_to_the_pool(relay_factory):
    """A client that goes away in the middle of its content: the message was
    being written over a pool file (a 64 KiB buffer of it already written);
    nothing reaches queue/, the file goes back to the pool, and the next
    message, shorter, written over it, arrives exact (no stale tail)."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n{BIG}")
    submit_bdat(relay.port, "s@example.org", ["r@example.com"],
                content_of("first", make_body(90000, dots=False)))
    wait_deliveries(relay, 1, status="sent", timeout=30)
    wait_spool_empty(relay)
    wait_for(lambda: pool_files(relay), 10, "the first message's file in pool/")
    before = pool_files(relay)
    ended = relay.logs().count("smtp disconnect")
    s = smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30)
    s.ehlo()
    assert s.mail("s@example.org")[0] == 250
    assert s.rcpt("r@example.com")[0] == 250
    s.send(b"BDAT 200000 LAST\r\n" + b"x" * 150000)
    time.sleep(0.5)
    s.close()  # the socket and smtplib's file on it
    wait_for(lambda: relay.logs().count("smtp disconnect") > ended, 10, "the session's end")
    assert not list((relay.queue / "queue").iterdir())
    assert pool_files(relay) == before, (pool_files(relay), before)
    relayed_exact(relay, peer, "second", "r@example.com", 2, 4000)
