"""Small messages are committed into segments (QueueDirectory/seg/, README
"The spool"): one shared fdatasync per batch, no file of their own.  What a
crash leaves there is taken in at the next start, nothing acknowledged is
lost, and nothing logged as sent goes out again.  Segments are read here by
the format the README gives (conftest.segment_messages), not by krelay's
own code."""
import re
import socket
import struct

from conftest import segment_messages
from helpers import deliveries, wait_for
from test_queue_routing import queue_list
from test_relay import (check_peer_copy, content_of, msgid_of, queued_ids, submit,
                        submit_concurrently, wait_deliveries, wait_peer)

N = 24


class SilentHop:
    """A next hop that takes connections and never says a word: a delivery
    to it waits for the greeting, so its messages stay in their segment."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def route_to(relay, port):
    text = re.sub(r"(?m)^SmartHost=.*$", "", relay.conf.read_text())
    relay.conf.write_text(text + f"\nSmartHost=[127.0.0.1]:{port}\n")


def fill_segments(relay_factory):
    """N messages acknowledged while the next hop is silent: all in segments."""
    hop = SilentHop()
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{hop.port}\nTLSPolicy=none\n"
                          "DestinationConcurrency=4\n")
    sent = {}
    for i in range(N):
        content = content_of(f"seg-{i}", b"line of the body\r\n" * (i * 7))
        sent[submit(relay.port, "s@example.org", [f"r{i}@example.com"], content)] = content
    return hop, relay, sent


def test_acknowledged_messages_in_segments_survive_kill9(relay_factory):
    hop, relay, sent = fill_segments(relay_factory)
    # in segments, not in queue/: each 250 cost a share of one fdatasync
    live = segment_messages(relay.queue)
    assert set(live) == set(sent), (sorted(live), sorted(sent))
    assert queued_ids(relay) == []
    # `krelay queue list` shows them as queued messages like any other
    msgs, count = queue_list(relay)
    assert count == N and set(msgs) == set(sent), msgs
    assert all(not m["held"] and m["attempts"] == 0 for m in msgs.values()), msgs
    relay.kill9()
    hop.close()
    peer = relay_factory("DeliveryMode=queueonly\n", tls=False)
    route_to(relay, peer.port)
    relay.start()
    relay.wait_log(rf"spool: {N} messages recovered from \d+ segments into queue/")
    got = wait_peer(peer, N, timeout=30)
    for qid, content in sent.items():
        (_, wire, _), = got[msgid_of(content)]
        check_peer_copy(wire, content, qid)
    wait_for(lambda: queued_ids(relay) == [] and segment_messages(relay.queue) == {}, 15,
             "an empty spool")
    assert {d["qid"] for d in deliveries(relay) if d["status"] == "sent"} == set(sent)


def test_a_torn_record_after_the_acknowledged_ones_is_ignored(relay_factory):
    hop, relay, sent = fill_segments(relay_factory)
    relay.kill9()
    hop.close()
    # what a crash in the middle of the next write leaves: a record header
    # with half its payload, then the preallocated zeros
    seg = sorted((relay.queue / "seg").iterdir())[0]
    data = bytearray(seg.read_bytes())
    off = 64
    while struct.unpack_from("<I", data, off)[0] == 0x3152524B:
        off += 32 + struct.unpack_from("<I", data, off + 8)[0]
    torn = struct.pack("<IB3xII", 0x3152524B, 1, 4000, 0x12345678) + b"0D0000000000FFFF"
    data[off:off + len(torn) + 100] = torn + b"y" * 100
    seg.write_bytes(bytes(data))
    peer = relay_factory("DeliveryMode=queueonly\n", tls=False)
    route_to(relay, peer.port)
    relay.start()
    relay.wait_log(rf"spool: {N} messages recovered from \d+ segments into queue/")
    wait_peer(peer, N, timeout=30)
    assert "0D0000000000FFFF" not in relay.logs()


def test_delivered_messages_are_not_sent_again_after_kill9(relay_factory):
    peer = relay_factory("DeliveryMode=queueonly\n", tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n")
    ids = [submit(relay.port, "s@example.org", [f"r{i}@example.com"],
                  content_of(f"once-{i}")) for i in range(N)]
    wait_deliveries(relay, N, "sent")
    # killed at once: a delivery is logged sent only once the segment's
    # record of it leaving is durable, so the restart finds none of them
    relay.kill9()
    relay.start()
    relay.wait_log(r"listening on")
    assert not re.search(r"spool: [1-9]\d* messages recovered", relay.logs()), \
        relay.logs()[-2000:]
    wait_for(lambda: segment_messages(relay.queue) == {}, 5, "no live segment records")
    assert queued_ids(relay) == []
    assert len(wait_peer(peer, N)) == N
    assert sorted(d["qid"] for d in deliveries(relay)) == sorted(ids)


def test_a_deferred_message_is_written_to_queue_before_its_deferral_is_logged(relay_factory):
    # (the default next hop refuses connections: every message is deferred)
    relay = relay_factory("RetrySchedule=1h\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("deferred"))
    d = wait_deliveries(relay, 1, "deferred")[0]
    assert d["qid"] == qid
    assert (relay.queue / "queue" / qid).exists()
    wait_for(lambda: segment_messages(relay.queue) == {}, 5, "its segment record ended")
    wire, env = relay.message(qid)
    assert env["rcpt"] == [("P", "r@example.com")]
    relay.stop()
    assert re.search(r"krelay stopped .* segmented=1 segments=\d+", relay.logs())


def test_a_queue_bigger_than_the_descriptors_is_taken_in_whole_at_start(relay_factory):
    """1200 queued messages and a limit of 512 open files: at start every
    message is read and goes out, in turns (at most half the descriptors are
    files of messages under way, counted from when each open is asked
    for), and none is 'left alone' for want of a descriptor."""
    m = 1200
    relay = relay_factory("DeliveryMode=queueonly\nWorkers=1\nTLSPolicy=none\n", tls=False)
    sent = submit_concurrently(relay.port, 8, m // 8, "nofile")
    relay.stop()
    assert len(queued_ids(relay)) == m
    peer = relay_factory("DeliveryMode=queueonly\n", tls=False)
    relay.conf.write_text(relay.conf.read_text().replace("DeliveryMode=queueonly\n", ""))
    route_to(relay, peer.port)
    relay.prelude = ["prlimit", "--nofile=512"]
    relay.start()
    got = wait_peer(peer, m, timeout=120)
    assert set(got) == set(sent)
    wait_for(lambda: queued_ids(relay) == [], 30, "an empty queue")
    logs = relay.logs()
    assert "left alone" not in logs, [l for l in logs.splitlines() if "left alone" in l][:5]
    assert len({d["qid"] for d in deliveries(relay) if d["status"] == "sent"}) == m
