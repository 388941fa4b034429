"""A queue directory that really fills up (ENOSPC, on a 3 MiB tmpfs the
test mounts; skipped where mounting is not allowed, which fails the run in
CI): every refusal is `452 4.3.1`, whether the file could not even be
created or its writing ran out of room; nothing is left in tmp/; and once
the queued mail is delivered, the room it held is free again, though the
relay keeps delivered files for reuse (pool/): they are released when a
write finds the disk full, so the next client's retry is accepted.
"""
import os
import smtplib
import subprocess

import pytest

from test_relay import content_of, wait_spool_empty

SIZE = "3m"


def mount_tmpfs(d, opts):
    d.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {p.stderr}")
        pytest.skip(f"cannot mount a tmpfs: {p.stderr}")


@pytest.fixture
def small_fs(tmp_path):
    d = tmp_path / "small"
    mount_tmpfs(d, f"size={SIZE},nr_inodes=4000")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.fixture
def few_inodes(tmp_path):
    d = tmp_path / "inodes"
    mount_tmpfs(d, "size=64m,nr_inodes=40")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def relay_on(relay_factory, fs, conf):
    relay = relay_factory(f"QueueDirectory={fs}/queue\n{conf}", start=False)
    # the fixture's own QueueDirectory and SmartHost lines go: the test's count
    relay.conf.write_text(relay.conf.read_text().replace(
        f"QueueDirectory={relay.queue}\n", "").replace(
        f"SmartHost=[127.0.0.1]:{relay.dead_port}\n", ""))
    relay.queue = fs / "queue"
    return relay.start()


def test_no_room_for_a_new_file_is_452(relay_factory, few_inodes):
    """The file system has no inode left for the message's file: the client
    is told 452 4.3.1 (insufficient storage, try later), not 451."""
    relay = relay_on(relay_factory, few_inodes, "Workers=1\nDeliveryMode=queueonly\n")
    replies = []
    for i in range(60):
        code, msg = try_send(relay, f"inode-{i}", 100)
        replies.append((code, msg))
        if code != 250:
            break
    assert replies[-1] == (452, b"4.3.1 Insufficient system storage"), replies[-3:]
    relay.wait_log(r"smtp spool error id=\S+ error=\"No space left on device\"")


def try_send(relay, tag, size):
    body = (b"z" * 78 + b"\r\n") * (size // 80)
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("s@example.org")
        s.rcpt("r@example.com")
        return s.data(content_of(tag, body))


def test_disk_full_cycle(relay_factory, tmp_path, small_fs):
    from test_bench_tool import Sink
    sink = Sink(tmp_path, timeout=300)
    try:
        disk_full_cycle(relay_factory, small_fs, sink)
    finally:
        sink.kill()


def disk_full_cycle(relay_factory, small_fs, sink):
    from test_queue_routing import queue_cmd
    relay = relay_on(relay_factory, small_fs,
                     f"Workers=1\nTLSPolicy=none\nSmartHost=[127.0.0.1]:{sink.port}\n"
                     "DeliveryMode=queueonly\n")
    replies, accepted = [], 0
    for i in range(60):  # fills up long before
        code, msg = try_send(relay, f"full-{i}", 200_000)
        replies.append((code, msg))
        if code == 250:
            accepted += 1
        else:
            break
    assert accepted > 3, replies[-3:]
    assert replies[-1] == (452, b"4.3.1 Insufficient system storage"), replies[-1]
    # nothing half-written is left behind
    assert list((small_fs / "queue" / "tmp").iterdir()) == []
    # a tiny message that finds no room for its file either: 452 as well
    code, msg = try_send(relay, "full-tiny", 100)
    assert code in (250, 452), (code, msg)
    # a queue run: everything queued is delivered
    assert queue_cmd(relay, "flush").returncode == 0
    wait_spool_empty(relay, timeout=60)
    # the room is free again: a retry gets in (the first write that finds the
    # disk full releases the pooled files)
    codes = []
    for i in range(3):
        code, msg = try_send(relay, f"after-{i}", 200_000)
        codes.append((code, msg))
        if code == 250:
            break
    assert codes[-1][0] == 250, codes
    assert list((small_fs / "queue" / "tmp").iterdir()) == []
