"""Large bodies through the spool's big buffers: a message past its first
256 KiB is written in 512 KiB writes (buffers pooled per worker, at most 32
in use; past that a message keeps its 64 KiB buffers), and the envelope is
written from the last buffer when it fits there.  Checked here: bodies
around those boundaries, with DATA (dot-stuffed) and BDAT, arrive exact at
a krelay next hop, and so do more large messages at once than one worker
has big buffers for."""
import smtplib
import threading

import pytest

from test_relay import (BIG, check_peer_copy, content_of, make_body, peer_messages,
                        submit_bdat, submit_data, wait_deliveries, wait_spool_empty)

KIB = 1 << 10
SIZES = [256 * KIB - 700, 256 * KIB + 1, 512 * KIB - 1, 768 * KIB + 3, 1280 * KIB,
         3 * (1 << 20) + 7, 9 * (1 << 20) + 65 * KIB]


def submit_any(port, verb, content):
    if verb == "BDAT":
        return submit_bdat(port, "s@example.org", ["r@example.com"], content)
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=120) as s:
        s.ehlo()
        return submit_data(s, "s@example.org", ["r@example.com"], content)


def check_all(relay, peer, sent):
    lines = wait_deliveries(relay, len(sent), status="sent", timeout=90)
    assert len(lines) == len(sent), lines
    wait_spool_empty(relay, timeout=30)
    got = peer_messages(peer)
    for tag, (qid, content) in sent.items():
        copies = got.get(f"{tag}@example.org", [])
        assert len(copies) == 1, (tag, len(copies))
        check_peer_copy(copies[0][1], content, qid)


@pytest.mark.parametrize("verb", ["DATA", "BDAT"])
def test_big_bodies_exact(relay_factory, verb):
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"BodyPath=copy\nWorkers=1\n{BIG}")
    sent = {}
    for n, size in enumerate(SIZES):
        tag = f"big-{verb}-{n}-{size}"
        content = content_of(tag, make_body(size, dots=n % 2 == 0))
        sent[tag] = (submit_any(relay.port, verb, content), content)
    check_all(relay, peer, sent)


def test_more_big_messages_than_big_buffers(relay_factory):
    """24 sessions at once into one worker, 1.5 MiB each: 48 buffers would
    be big, 32 may be; every body arrives exact."""
    peer = relay_factory(BIG, tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"Workers=1\n{BIG}")
    sent, errors, lock = {}, [], threading.Lock()

    def one(k):
        tag = f"many-{k}"
        content = content_of(tag, make_body(1536 * KIB + k, dots=k % 2 == 0))
        try:
            qid = submit_any(relay.port, "DATA" if k % 2 else "BDAT", content)
            with lock:
                sent[tag] = (qid, content)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(sent) == 24
    check_all(relay, peer, sent)
