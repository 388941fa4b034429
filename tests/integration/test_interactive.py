"""DeliveryMode=interactive (Sendmail's name; its SuperSafe=interactive):
krelay relays a message before it answers the end of data, and makes it
durable in queue/ only when that does not fully succeed.

  * Every recipient 2xx at the next hop: the client gets "250 2.0.0 Ok:
    relayed as ID" only after the next hop's own 250, the log says
    "smtp relayed ... mode=interactive", and queue/ never holds the message
    (no fdatasync, no rename: the point of the mode).
  * A 4xx or 5xx for any recipient, no connection, or InteractiveTimeout
    passing first: the message is made durable, the client gets the usual
    "queued as ID", and the queue goes on as for any message, remembering
    which recipients the next hop already took (no duplicate for them); a
    transaction still under way at the timeout ends like a queued one.
  * A client that leaves while it waits: the message is made durable and
    relayed all the same (never lost).
  * The message cannot be made durable (queue/ immutable): 451, the client
    keeps it; the delivery under way is only logged.
  * kill -9 while a client waits: that message was never acknowledged and
    is not found in the spool at the next start (the client still has it).
  * Recipients for two next hops: relayed once both took theirs; stored
    (with the first recipient done) when the other refuses.
  * Clients: smtplib (DATA, and BDAT over STARTTLS) and Postfix 3.7 relaying
    into krelay, which logs status=sent with krelay's "relayed as ID".
  * Under load (krelay-bench, 40 sessions), relayed and stored messages
    mixed: one copy per recipient at the next hop, no more, no less.

The next hops are krelays (they keep what they receive in their spool),
a bare listening socket that never greets (for the timeout), and a
refused port.
"""
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import KRELAY
from helpers import wait_for
from postfix_peer import postfix_relay_factory  # noqa: F401 (fixture)
from test_bench_tool import BENCH
from helpers import deliveries
from test_relay import (check_peer_copy, content_of, env_states, make_body, msgid_of, open_tx,
                        peer_messages, raw_peer_factory, spool_names, split_received,  # noqa: F401
                        stop_stats, wait_deliveries, wait_peer, wait_spool_empty)

QID = r"[0-9A-F]{16}"
MODE = "DeliveryMode=interactive\n"


def send(s, rcpts, content, sender="s@example.org"):
    """One transaction on an open smtplib session; returns the final reply."""
    open_tx(s, sender, rcpts)
    code, msg = s.data(content)
    return code, msg.decode()


def submit(port, rcpts, content, sender="s@example.org"):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        return send(s, rcpts, content, sender)


def accepted(relay, what):
    """krelay's "smtp queued|relayed id=..." lines: [(id, mode)]."""
    return re.findall(rf"smtp {what} id=({QID}) .*?delay_ms=\S+( mode=interactive)?$",
                      relay.logs(), re.M)


@pytest.fixture
def silent_peer():
    """A next hop that takes connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def test_relayed_before_the_reply(relay_factory):
    peer = relay_factory("DeliveryMode=queueonly\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n{MODE}")
    sizes = [0, 300, 70000, 300000]
    sent = []
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        for n, size in enumerate(sizes):
            content = content_of(f"inter-{n}-{time.time_ns()}", make_body(size, dots=True))
            code, msg = send(s, ["r@example.com"], content)
            assert code == 250, msg
            m = re.fullmatch(rf"2\.0\.0 Ok: relayed as ({QID})", msg)
            assert m, msg
            # the next hop had taken it (durably: it is in its queue/)
            # before krelay answered
            assert len([n for n in spool_names(peer) if re.fullmatch(QID, n)]) == n + 1
            sent.append((m.group(1), content))
    d = wait_deliveries(relay, len(sizes), "sent")
    assert [x["qid"] for x in d] == [q for q, _ in sent]
    got = peer_messages(peer)
    for qid, content in sent:
        (_, wire, _), = got[msgid_of(content)]
        check_peer_copy(wire, content, qid)
    assert accepted(relay, "relayed") == [(q, " mode=interactive") for q, _ in sent]
    assert accepted(relay, "queued") == []
    # nothing was ever made durable here: the next hop had it
    assert spool_names(relay) == []
    assert "status=sent" in relay.logs() and "tls=\"TLSv1.3" in relay.logs()
    st = stop_stats(relay)
    assert (st["relayed"], st["deferred"]) == (len(sizes), 0), st
    assert re.search(rf"krelay stopped messages=0 bytes=0 fsyncs=0 dirsyncs=0 spool_failures=0 "
                     rf"interactive={len(sizes)} ", relay.logs()), relay.logs()[-500:]


def test_4xx_for_one_recipient_stores_it(relay_factory):
    """MaxRecipients=1 at the next hop: a@ is taken, b@ gets 452 4.5.3.  The
    message is made durable with a@ done; the client gets "queued as"; only
    b@ is retried."""
    peer = relay_factory("MaxRecipients=1\nDeliveryMode=queueonly\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n{MODE}")
    content = content_of(f"inter-4xx-{time.time_ns()}", b"two recipients\r\n")
    code, msg = submit(relay.port, ["a@example.com", "b@example.com"], content)
    assert code == 250 and re.fullmatch(rf"2\.0\.0 Ok: queued as {QID}", msg), msg
    qid = msg.split()[-1]
    assert accepted(relay, "queued") == [(qid, " mode=interactive")]
    wait_deliveries(relay, 3, timeout=15)
    wait_spool_empty(relay)
    lines = [(d["to"], d["status"], d["dsn"]) for d in wait_deliveries(relay, 3)]
    assert lines == [("a@example.com", "sent", "2.0.0"), ("b@example.com", "deferred", "4.5.3"),
                     ("b@example.com", "sent", "2.0.0")], lines
    copies = wait_peer(peer, 2)[msgid_of(content)]
    assert sorted(env["rcpt"] for _, _, env in copies) == [[("P", "a@example.com")],
                                                          [("P", "b@example.com")]]
    for _, wire, _ in copies:
        check_peer_copy(wire, content, qid)


def test_5xx_stores_and_bounces(relay_factory):
    peer = relay_factory("RelayClients=10.9.9.9/32\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n"
                          f"LogLevel=10\n{MODE}")
    code, msg = submit(relay.port, ["r@example.com"],
                       content_of(f"inter-5xx-{time.time_ns()}", b"refused\r\n"))
    assert code == 250 and "queued as" in msg, msg
    qid = msg.split()[-1]
    d = wait_deliveries(relay, 1)[0]
    assert (d["qid"], d["status"], d["dsn"]) == (qid, "bounced", "5.7.1"), d
    # the bounce is an ordinary queued message (from <> to the sender),
    # refused in turn by the same next hop, and never bounced itself
    bid = relay.wait_log(rf"{qid} bounce id=([0-9A-F]{{16}}) to=<s@example\.org> "
                         r"status=queued").group(1)
    b = wait_for(lambda: [x for x in deliveries(relay) if x["qid"] == bid], 10,
                 "the bounce's delivery")
    assert [(x["to"], x["status"], x["dsn"]) for x in b] == [("s@example.org", "bounced",
                                                              "5.7.1")], b
    relay.wait_log(rf"trace: message {bid} active -> removing")
    assert f"{bid} bounce id=" not in relay.logs()
    wait_spool_empty(relay)


def test_no_connection_stores_it(relay_factory):
    peer = relay_factory(start=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1s,2s\n{MODE}")
    content = content_of(f"inter-refused-{time.time_ns()}", b"later\r\n")
    code, msg = submit(relay.port, ["r@example.com"], content)
    assert code == 250 and "queued as" in msg, msg
    qid = msg.split()[-1]
    assert qid in spool_names(relay)
    first = wait_deliveries(relay, 1, "deferred")[0]
    assert "Connection refused" in first["reply"], first
    peer.start()
    assert wait_deliveries(relay, 1, "sent", timeout=10)[0]["qid"] == qid
    wait_spool_empty(relay)
    (_, wire, _), = wait_peer(peer, 1)[msgid_of(content)]
    check_peer_copy(wire, content, qid)


def test_timeout_stores_it(relay_factory, silent_peer):
    """The next hop never greets: after InteractiveTimeout (1s) the message
    is made durable and the client gets "queued as"; it is in queue/, with
    its recipient pending, and is still there after a restart."""
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{silent_peer}\nInteractiveTimeout=1s\n{MODE}")
    started = time.monotonic()
    code, msg = submit(relay.port, ["r@example.com"],
                       content_of(f"inter-slow-{time.time_ns()}", b"slow\r\n"))
    took = time.monotonic() - started
    assert code == 250 and "queued as" in msg, msg
    assert 0.9 < took < 5, took
    qid = msg.split()[-1]
    assert qid in spool_names(relay)
    assert accepted(relay, "queued") == [(qid, " mode=interactive")]
    relay.stop()
    relay.start()
    relay.wait_log(r"(?s)starting .*starting .* queued=1 ")


def test_client_leaving_while_it_waits(relay_factory, silent_peer):
    """The client sends the final dot and closes at once.  (krelay reads
    nothing more from a client while its message is on the way, so it
    learns that only when it answers.)  The message is made durable after
    InteractiveTimeout all the same (queue/ID) although no 250 reached
    anyone, and the session ends cleanly."""
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{silent_peer}\nInteractiveTimeout=1s\n{MODE}")
    content = content_of(f"inter-gone-{time.time_ns()}", b"bye\r\n")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as c:
        f = c.makefile("rb")
        assert f.readline().startswith(b"220")
        c.sendall(b"EHLO client.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        c.sendall(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n")
        for want in (b"250", b"250", b"354"):
            assert f.readline().startswith(want)
        c.sendall(content + b".\r\n")
        time.sleep(0.3)  # the body is in
        f.close()  # (else the socket's fd stays open after the with)
    ids = wait_for(lambda: [n for n in spool_names(relay) if re.fullmatch(QID, n)], 5,
                   "the message in queue/")
    assert len(ids) == 1
    assert env_states(relay, ids[0]) in (None, {"r@example.com": "P"})
    # the file can be seen before the worker's log lines of that turn are
    # written: the line is waited for, then must be exactly this one
    wait_for(lambda: accepted(relay, "queued"), 5, "the queued line")
    assert accepted(relay, "queued") == [(ids[0], " mode=interactive")]
    relay.wait_log(r"smtp disconnect client=127\.0\.0\.1 commands=\d+ messages=1 ")


def test_kill9_while_waiting_keeps_nothing(relay_factory, silent_peer):
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{silent_peer}\nInteractiveTimeout=60s\n"
                          f"LogLevel=10\n{MODE}")
    content = content_of(f"inter-kill-{time.time_ns()}", b"never acknowledged\r\n")
    c = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    f = c.makefile("rb")
    assert f.readline().startswith(b"220")
    c.sendall(b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\n"
              b"DATA\r\n")
    while not f.readline().startswith(b"354"):
        pass
    c.sendall(content + b".\r\n")
    # written, and being relayed (its reply would wait 60 s): the queue has it
    relay.wait_log(r"trace: interactive [0-9A-F]{16} none -> waiting")
    relay.wait_log(r"trace: message [0-9A-F]{16} opening -> active")
    relay.kill9()
    c.close()
    assert [n for n in spool_names(relay) if re.fullmatch(QID, n)] == []
    relay.start()
    relay.wait_log(r"(?s)starting .*starting .* queued=0 ")


def test_krelay_check_names_the_mode(relay_factory):
    relay = relay_factory(f"{MODE}InteractiveTimeout=2m\n", start=False)
    p = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "DeliveryMode=interactive" in p.stdout, p.stdout


def two_hops(relay_factory, tmp_path, second=""):
    """A relay whose recipients @one.test and @two.test go to two krelay
    next hops (the second with extra config lines)."""
    p1 = relay_factory("DeliveryMode=queueonly\n")
    p2 = relay_factory("DeliveryMode=queueonly\n" + second)
    table = tmp_path / "transport"
    table.write_text(f"one.test [127.0.0.1]:{p1.port}\ntwo.test [127.0.0.1]:{p2.port}\n")
    return p1, p2, relay_factory(f"TransportTable={table}\nRetrySchedule=1s,2s\nLogLevel=10\n"
                                 f"{MODE}")


def test_two_next_hops_both_take_it(relay_factory, tmp_path):
    """Recipients at two next hops (two transactions at once): relayed once
    both took theirs."""
    p1, p2, relay = two_hops(relay_factory, tmp_path)
    content = content_of(f"inter-two-{time.time_ns()}", b"two hops\r\n")
    code, msg = submit(relay.port, ["a@one.test", "b@two.test"], content)
    assert code == 250 and "relayed as" in msg, msg
    # both had it before the reply
    assert len(peer_messages(p1)[msgid_of(content)]) == 1
    assert len(peer_messages(p2)[msgid_of(content)]) == 1
    assert sorted(d["to"] for d in wait_deliveries(relay, 2, "sent")) == ["a@one.test",
                                                                         "b@two.test"]
    assert spool_names(relay) == []


def test_two_next_hops_one_refuses(relay_factory, tmp_path):
    """The second next hop refuses its recipient (550): the message is made
    durable with the first recipient done; the client gets "queued as"; the
    refused recipient is bounced (to the sender, at the first next hop),
    the other not sent again."""
    p1, p2, relay = two_hops(relay_factory, tmp_path, "RelayClients=10.9.9.9/32\n")
    content = content_of(f"inter-two-no-{time.time_ns()}", b"one of two\r\n")
    code, msg = submit(relay.port, ["a@one.test", "b@two.test"], content, sender="s@one.test")
    assert code == 250 and "queued as" in msg, msg
    qid = msg.split()[-1]
    wait_for(lambda: len([d for d in deliveries(relay) if d["qid"] == qid]) == 2, 15,
             "both deliveries")
    mine = {d["to"]: d["status"] for d in deliveries(relay) if d["qid"] == qid}
    assert mine == {"a@one.test": "sent", "b@two.test": "bounced"}, mine
    wait_spool_empty(relay)
    # out of the queue for good, and never set for a retry (its phases say so)
    relay.wait_log(rf"trace: message {qid} active -> removing")
    assert f"message {qid} active -> retry-save" not in relay.logs()
    assert len(peer_messages(p1)[msgid_of(content)]) == 1
    assert len(p1.queued()) == 2  # and the bounce
    assert accepted(relay, "queued") == [(qid, " mode=interactive")]


def test_starttls_and_bdat_inbound(relay_factory, certs):
    """A client over STARTTLS sending BDAT (exact bytes, a last line without
    CRLF): relayed before the reply, byte for byte."""
    peer = relay_factory("DeliveryMode=queueonly\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n{MODE}")
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    content = content_of(f"inter-bdat-{time.time_ns()}", make_body(20001, dots=True) + b"no EOL")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        open_tx(s, "s@example.org", ["r@example.com"])
        s.send(b"BDAT %d LAST\r\n" % len(content) + content)
        code, msg = s.getreply()
    assert code == 250 and re.fullmatch(rf"2\.0\.0 Ok: relayed as {QID}", msg.decode()), msg
    qid = msg.decode().split()[-1]
    (_, wire, _), = wait_peer(peer, 1)[msgid_of(content)]
    received, rest = split_received(wire, b"\r\n")
    assert len(received) == 2 and f"with ESMTPS id {qid}".encode() in received[1], received
    assert rest == content
    assert accepted(relay, "relayed") == [(qid, " mode=interactive")]


def test_postfix_client_into_interactive_krelay(relay_factory, postfix_relay_factory):
    """Postfix 3.7 as the client (STARTTLS, client certificate, pipelining)
    relays into an interactive krelay: Postfix logs status=sent with
    krelay's "relayed as ID" for each message, which the next hop holds."""
    peer = relay_factory("DeliveryMode=queueonly\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\n{MODE}")
    pf = postfix_relay_factory(relay.port)
    contents = [content_of(f"inter-pf-{n}-{time.time_ns()}", make_body(size, dots=True))
                for n, size in enumerate([10, 5000, 200000])]
    with smtplib.SMTP("127.0.0.1", pf.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        for c in contents:
            assert not s.sendmail("s@example.org", ["r@example.com"], c)
    pf.flush()

    def pf_sent():
        ids = re.findall(rf"status=sent \(250 2\.0\.0 Ok: relayed as ({QID})\)", pf.log())
        return ids if len(ids) == len(contents) else None
    sent = wait_for(pf_sent, 30, "Postfix's status=sent lines")
    got = wait_peer(peer, len(contents))
    assert sorted(sent) == sorted(q for q, _ in accepted(relay, "relayed"))
    assert len(got) == len(contents)
    assert spool_names(relay) == []


def test_under_load_both_ways(relay_factory):
    """Two krelay-bench sources at once, 60 sessions each, into one worker:
    one sends single-recipient messages (relayed before their reply), the
    other two-recipient ones that the next hop (MaxRecipients=1) takes only
    half of (made durable, the second recipient retried a second later).
    More messages wait at once than the worker keeps files in pool/ (64),
    so the pool fills and the other files are removed.  Every
    message is accepted; the next hop ends with exactly one copy per
    recipient; nothing is left in the relay's queue/."""
    peer = relay_factory("MaxRecipients=1\nDeliveryMode=queueonly\nMaxConnections=200\n",
                         tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"RetrySchedule=1s,2s\nMaxConnections=200\nWorkers=1\n{MODE}")
    n = 300

    def source(rcpts):
        return subprocess.Popen([BENCH, "source", "--to", f"127.0.0.1:{relay.port}",
                                 "--messages", str(n), "--size", "mix:2k=60,30k=30,300k=10",
                                 "--concurrency", "60", "--per-conn", "5", "--rcpts",
                                 str(rcpts), "--tls", "none", "--timeout", "60", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one, two = source(1), source(2)
    for p in (one, two):
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, (out, err[-2000:])
    wait_for(lambda: len(peer.queued()) >= 3 * n, 30, f"{3 * n} copies at the next hop")
    wait_spool_empty(relay)
    assert len(peer.queued()) == 3 * n
    relayed, queued = accepted(relay, "relayed"), accepted(relay, "queued")
    assert len(relayed) == n and len(queued) == n, (len(relayed), len(queued))
    # the worker's pool filled up (SPOOL_POOL_MAX files); the rest were removed
    assert len(list((relay.queue / "pool").iterdir())) == 64
    st = stop_stats(relay)
    assert (st["relayed"], st["deferred"], st["bounced"]) == (3 * n, n, 0), st


def test_timeout_while_the_next_hop_takes_it(relay_factory, raw_peer_factory):
    """The next hop takes 2.5 s to answer the final dot; InteractiveTimeout
    is 1 s: the client gets "queued as" after about a second (the message
    made durable while the transaction goes on), then the next hop's 250
    ends it like any queued delivery: status=sent, queue/ emptied, one copy."""
    peer = raw_peer_factory(final_delay=2.5)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"InteractiveTimeout=1s\nRetrySchedule=1s,2s\n{MODE}")
    content = content_of(f"inter-late-{time.time_ns()}", make_body(5000, dots=True))
    started = time.monotonic()
    code, msg = submit(relay.port, ["r@example.com"], content)
    took = time.monotonic() - started
    assert code == 250 and "queued as" in msg, msg
    assert 0.9 < took < 2.4, took
    qid = msg.split()[-1]
    assert qid in spool_names(relay)
    d = wait_deliveries(relay, 1, timeout=15)[0]
    assert (d["qid"], d["status"], d["reply"]) == (qid, "sent", "250 2.0.0 Ok: queued as RAW1"), d
    wait_spool_empty(relay)
    (_, _, body), = peer.messages()
    received, rest = split_received(body, b"\r\n")
    assert len(received) == 1 and rest == content
    assert accepted(relay, "queued") == [(qid, " mode=interactive")]


def test_commit_failure_after_timeout(relay_factory, raw_peer_factory):
    """The message cannot be made durable when InteractiveTimeout asks for
    it (queue/ is immutable, chattr +i: the rename fails): the client gets
    451 and keeps the message; the transaction under way still ends, and
    is only logged (nothing is recorded for a message nobody was told
    about)."""
    peer = raw_peer_factory(final_delay=3)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          f"InteractiveTimeout=1s\n{MODE}")
    qdir = relay.queue / "queue"
    if subprocess.run(["chattr", "+i", str(qdir)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i does not work on {qdir}'s file system")
    try:
        code, msg = submit(relay.port, ["r@example.com"],
                           content_of(f"inter-fail-{time.time_ns()}", b"no room\r\n"))
        assert (code, msg) == (451, "4.3.0 Error: queue file write error"), (code, msg)
        relay.wait_log(r"smtp spool error id=\S+ error=\"Operation not permitted\"")
        d = wait_deliveries(relay, 1, timeout=15)[0]
        assert (d["status"], d["reply"]) == ("sent", "250 2.0.0 Ok: queued as RAW1"), d
    finally:
        subprocess.run(["chattr", "-i", str(qdir)], check=True)
    assert spool_names(relay) == []
    assert len(peer.messages()) == 1
    assert accepted(relay, "queued") == accepted(relay, "relayed") == []
