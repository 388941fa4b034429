"""The queue as an operator sees it, and routing by MX, against the real relay.

  * `krelay queue -C CONF list|flush|hold|release|delete` on the spool of a
    running krelay (and of a stopped one): what `list` shows, that `hold`
    and `release` move the files, that `flush` makes the relay retry at once
    although RetrySchedule says 1h, that `delete` removes a message the relay
    still holds in memory; exit statuses and messages for bad input.
  * DeliveryMode=queueonly: nothing is relayed until `krelay queue flush`.
  * QueueLifetime: pending recipients expire with 4.4.7 and get one RFC 3464
    bounce to the sender (queued like any message, sender <>); mail from <>
    expires without a bounce.
  * MX routing against a private dnsmasq on a free loopback port: the most
    preferred exchanger, the fallback to the next one when it refuses the
    connection, the implicit MX (address records) of a domain without MX,
    NXDOMAIN and RFC 7505 null MX (both final: 5.x and a bounce).  A
    TransportTable line `domain domain:PORT` (MX lookup of domain, port PORT)
    routes the test domains past the fixture's SmartHost.
  * TLS session resumption towards a krelay next hop, one message per
    connection.
  * `krelay check` naming the file and line of SmartHost, TransportTable and
    TLSPolicyTable errors.

The next hops are other krelays (they keep what they receive in their own
spool, since their own relaying goes to a dead port).  Every krelay started
here is stopped by the relay_factory fixture, which fails the test if one
does not exit 0 on SIGTERM or printed a sanitizer report.
"""
import os
import re
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KRELAY, MKCERTS, segment_messages
from helpers import stop_process, wait_for

QID = r"[0-9A-F]{16}"
DNSMASQ = "/usr/sbin/dnsmasq"
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")

MSG_LINE = re.compile(
    r"^(?P<id>[0-9A-F]{16})(?P<held> HELD)? size=(?P<size>\d+) age=(?P<age>\d+[smhd]) "
    r"attempts=(?P<attempts>\d+) next=(?P<next>\S+(?: \S+)?) from=<(?P<sender>[^>]*)>$")
RCPT_LINE = re.compile(r"^    to=<(?P<addr>[^>]*)> (?P<state>.+)$")
ERR_LINE = re.compile(r"^    last error: (?P<error>.*)$")
COUNT_LINE = re.compile(r"^(\d+) messages?$")


# ---- helpers ----------------------------------------------------------------


def submit(port, sender, rcpts, tag="m", host="127.0.0.1"):
    """One message with DATA; returns krelay's queue id."""
    content = (f"From: <{sender or 'mailer-daemon@example.org'}>\r\nTo: {rcpts[0]}\r\n"
               f"Subject: queue test {tag}\r\nMessage-Id: <{tag}@example.org>\r\n\r\n"
               f"body of {tag}\r\n")
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as s:
        code, msg = s.ehlo()
        assert code == 250, msg
        code, msg = s.mail(sender)
        assert code == 250, msg
        for r in rcpts:
            code, msg = s.rcpt(r)
            assert code == 250, msg
        code, msg = s.data(content.encode())
        assert code == 250, msg
    m = re.search(rf"queued as ({QID})", msg.decode())
    assert m, msg
    return m.group(1)


def queue_cmd(relay, *args, conf=None):
    """`krelay queue -C CONF ARGS...`; checks it printed no sanitizer report."""
    p = subprocess.run([KRELAY, "queue", "-C", str(conf or relay.conf), *args],
                       capture_output=True, text=True, timeout=30, env=ENV)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def queue_list(relay):
    """Parses `krelay queue list`: ({id: info}, count from the last line)."""
    p = queue_cmd(relay, "list")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert lines, p.stdout
    m = COUNT_LINE.match(lines[-1])
    assert m, f"last line of list is not 'N messages': {p.stdout!r}"
    msgs, cur = {}, None
    for line in lines[:-1]:
        if (mm := MSG_LINE.match(line)):
            cur = dict(mm.groupdict(), held=bool(mm.group("held")), rcpts=[], error=None,
                       attempts=int(mm.group("attempts")), size=int(mm.group("size")))
            msgs[cur["id"]] = cur
        elif (mm := RCPT_LINE.match(line)) and cur is not None:
            cur["rcpts"].append((mm.group("addr"), mm.group("state")))
        elif (mm := ERR_LINE.match(line)) and cur is not None:
            cur["error"] = mm.group("error")
        else:
            raise AssertionError(f"unexpected line {line!r} in list output:\n{p.stdout}")
    assert int(m.group(1)) == len(msgs), p.stdout
    return msgs, int(m.group(1))


def wait_list(relay, pred, timeout, what):
    """Polls `krelay queue list` until pred(msgs) is true; returns msgs."""
    last = [None]

    def check():
        msgs, _ = queue_list(relay)
        last[0] = msgs
        return msgs if pred(msgs) else None
    try:
        return wait_for(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last list: {last[0]}\n{relay.logs()[-3000:]}") from None


def delivery_lines(relay, qid, status=None):
    """krelay's delivery log lines for one queue id (optionally one status)."""
    st = status or r"\w+"
    return re.findall(rf"^.* {qid} delivery to=<[^>]*> relay=\S+ .*status={st} .*$",
                      relay.logs(), re.M)


def wait_delivery(relay, qid, status, n=1, timeout=10):
    def enough():
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited {relay.proc.returncode}\n{relay.logs()[-3000:]}")
        got = delivery_lines(relay, qid, status)
        return got if len(got) >= n else None
    try:
        return wait_for(enough, timeout, f"{n} status={status} lines for {qid}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{relay.logs()[-4000:]}") from None


def spool_files(relay, sub="queue"):
    d = relay.queue / sub
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def wait_spool_empty(relay, timeout=10):
    """queue/ empty, and no message left in a segment (seg/)."""
    try:
        wait_for(lambda: not spool_files(relay) and not segment_messages(relay.queue), timeout,
                 "queue/ and segments to empty")
    except AssertionError as e:
        raise AssertionError(f"{e}: {spool_files(relay)} {sorted(segment_messages(relay.queue))}"
                             f"\n{relay.logs()[-4000:]}") from None


def wait_listening(host, port, timeout=10):
    def ok():
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(ok, timeout, f"something listening on {host}:{port}")


def free_port_on(hosts):
    """A TCP port free on every address in hosts."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no port free on {hosts}")


def peer_ids(peer):
    return peer.queued()


def peer_envelopes(peer):
    """{queue id: envelope} of what a krelay peer received and keeps."""
    out = {}
    for qid in peer.queued():
        try:
            out[qid] = peer.message(qid)[1]
        except FileNotFoundError:
            pass
    return out


# ---- 1. krelay queue: list, hold, release, flush, delete --------------------------


def test_queue_cli_on_a_running_relay(relay_factory):
    """A message deferred by a dead next hop (RetrySchedule=1h) is listed with
    its attempts, next attempt, sender, recipients and last error; hold and
    release move it; flush retries at once; once the next hop is up, flush
    delivers it although the next retry is an hour away; delete removes a
    second message the relay still holds in memory, so it is never sent."""
    peer = relay_factory(tls=False, start=False)  # its port, not listening yet
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nRetrySchedule=1h\n")
    rcpts = ["one@example.com", "two@example.net"]
    qid = submit(relay.port, "sender@example.org", rcpts, "a")
    wait_delivery(relay, qid, "deferred", n=2)
    msgs = wait_list(relay, lambda m: qid in m and m[qid]["attempts"] == 1, 5,
                     "attempts=1 in list")
    info = msgs[qid]
    body, env = relay.message(qid)
    assert info["size"] == int(env["size"]) == len(body), (info, env["size"], len(body))
    assert not info["held"], info
    assert info["sender"] == "sender@example.org", info
    m = re.fullmatch(r"in (\d+)([smh])", info["next"])
    assert m, info
    secs = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    assert 3300 <= secs <= 3600, f"next retry should be about an hour away: {info}"
    assert re.fullmatch(r"\d+s", info["age"]), info
    assert info["rcpts"] == [(r, "pending") for r in rcpts], info
    assert info["error"] is not None and \
        info["error"].startswith(f"connect to 127.0.0.1:{peer.port}"), info

    # hold: out of queue/, into hold/, listed as HELD
    p = queue_cmd(relay, "hold", qid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{qid}: held" in p.stdout, p.stdout
    assert qid in spool_files(relay, "hold"), spool_files(relay, "hold")
    assert qid not in spool_files(relay), spool_files(relay)
    msgs, n = queue_list(relay)
    assert n == 1 and msgs[qid]["held"] and msgs[qid]["next"] == "held", msgs
    assert msgs[qid]["rcpts"] == [(r, "pending") for r in rcpts], msgs
    # holding it twice: it is no longer in queue/
    p = queue_cmd(relay, "hold", qid)
    assert p.returncode == 1 and "no such message" in p.stderr, (p.stdout, p.stderr)

    # release: back in queue/, and the relay is asked for a queue run
    before = len(delivery_lines(relay, qid, "deferred"))
    p = queue_cmd(relay, "release", qid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{qid}: released" in p.stdout, p.stdout
    assert f"asked krelay (pid {relay.proc.pid}) for a queue run" in p.stdout, p.stdout
    assert qid in spool_files(relay) and qid not in spool_files(relay, "hold")
    wait_delivery(relay, qid, "deferred", n=before + 2, timeout=5)
    msgs = wait_list(relay, lambda m: qid in m and m[qid]["attempts"] >= 2, 5,
                     "attempts=2 after release")
    assert not msgs[qid]["held"], msgs

    # flush: an immediate retry (the schedule says in an hour)
    attempts = msgs[qid]["attempts"]
    before = len(delivery_lines(relay, qid, "deferred"))
    t0 = time.time()
    p = queue_cmd(relay, "flush")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"asked krelay (pid {relay.proc.pid}) for a queue run" in p.stdout, p.stdout
    wait_delivery(relay, qid, "deferred", n=before + 2, timeout=3)
    assert time.time() - t0 < 3
    wait_list(relay, lambda m: qid in m and m[qid]["attempts"] > attempts, 5,
              "attempts to grow after flush")

    # a second message, deleted while the relay holds it (deferred, in memory)
    qid2 = submit(relay.port, "sender@example.org", ["three@example.com"], "b")
    wait_delivery(relay, qid2, "deferred")
    wait_list(relay, lambda m: qid2 in m and m[qid2]["attempts"] == 1, 5, "second message")
    p = queue_cmd(relay, "delete", qid2)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{qid2}: deleted" in p.stdout, p.stdout
    assert not [f for f in spool_files(relay) if f.startswith(qid2)], spool_files(relay)
    msgs, n = queue_list(relay)
    assert n == 1 and list(msgs) == [qid], msgs
    p = queue_cmd(relay, "delete", qid2)
    assert p.returncode == 1 and f"{qid2}: no such message" in p.stderr, (p.stdout, p.stderr)

    # the next hop comes up: flush delivers at once
    peer.start()
    p = queue_cmd(relay, "flush")
    assert p.returncode == 0, (p.stdout, p.stderr)
    sent = wait_delivery(relay, qid, "sent", n=2, timeout=5)
    assert all(f"relay=127.0.0.1[127.0.0.1:{peer.port}]" in s for s in sent), sent
    wait_spool_empty(relay, 5)
    msgs, n = queue_list(relay)
    assert n == 0 and msgs == {}, msgs
    # the peer got the first message once, and never the deleted one: the
    # relay made no attempt of it after the delete (no delivery line since)
    envs = wait_for(lambda: peer_envelopes(peer), 5, "the message at the peer")
    assert len(envs) == 1, envs
    assert len(delivery_lines(relay, qid2)) == 1, delivery_lines(relay, qid2)
    (penv,) = envs.values()
    assert penv["sender"] == "sender@example.org", penv
    assert sorted(a for _, a in penv["rcpt"]) == sorted(rcpts), penv
    assert not delivery_lines(relay, qid2, "sent"), relay.logs()[-3000:]
    assert relay.proc.poll() is None, "krelay died"
    assert relay.stop() == 0, relay.errors()[-3000:]


def test_queue_cli_bad_input(relay_factory):
    """Bad IDs exit 1 with a message that says what is wrong; unknown verbs and
    wrong argument counts print the usage and exit 2."""
    relay = relay_factory()
    for verb in ("delete", "hold", "release"):
        for bad in ("nonsense", "0123", "0123456789ABCDEFG", "../../etc/passwd"):
            p = queue_cmd(relay, verb, bad)
            assert p.returncode == 1, (verb, bad, p.returncode, p.stdout, p.stderr)
            assert f"'{bad}' is not a queue ID" in p.stderr, (verb, bad, p.stderr)
            assert p.stdout == "", p.stdout
        p = queue_cmd(relay, verb, "0123456789ABCDEF")
        assert p.returncode == 1, (verb, p.returncode, p.stdout, p.stderr)
        assert "0123456789ABCDEF" in p.stderr and "no such message" in p.stderr, p.stderr
    for args in (["frobnicate"], [], ["list", "extra"], ["flush", "now"], ["delete"],
                 ["hold", "0123456789ABCDEF", "x"]):
        p = queue_cmd(relay, *args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("usage: krelay queue"), (args, p.stderr)
    assert relay.proc.poll() is None


def test_queue_cli_with_the_relay_stopped(relay_factory):
    """With krelay not running, list still reads the spool, and flush and
    release say that krelay is not running (exit 0)."""
    fresh = relay_factory(start=False)  # never started: no queue directory yet
    msgs, n = queue_list(fresh)
    assert n == 0 and msgs == {}
    p = queue_cmd(fresh, "flush")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "krelay is not running" in p.stdout, p.stdout

    relay = relay_factory("RetrySchedule=1h\n")
    qid = submit(relay.port, "sender@example.org", ["x@example.com"], "stopped")
    wait_delivery(relay, qid, "deferred")
    wait_list(relay, lambda m: qid in m and m[qid]["attempts"] == 1, 5, "attempts=1")
    assert relay.stop() == 0, relay.errors()[-3000:]
    assert not (relay.queue / "krelay.pid").exists(), "pid file left behind"
    msgs, n = queue_list(relay)
    assert n == 1 and msgs[qid]["attempts"] == 1, msgs
    assert msgs[qid]["rcpts"] == [("x@example.com", "pending")], msgs
    assert msgs[qid]["error"].startswith(f"connect to 127.0.0.1:{relay.dead_port}"), msgs
    p = queue_cmd(relay, "flush")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "krelay is not running" in p.stdout, p.stdout
    p = queue_cmd(relay, "hold", qid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = queue_cmd(relay, "release", qid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{qid}: released" in p.stdout and "krelay is not running" in p.stdout, p.stdout
    msgs, n = queue_list(relay)
    assert n == 1 and not msgs[qid]["held"], msgs


# ---- 2. DeliveryMode=queueonly ---------------------------------------------------


def test_stale_pid_file_is_never_signalled(relay_factory):
    """A relay killed with -9 leaves krelay.pid behind, naming a pid that
    may by now be another process's: `krelay queue flush` and `hold` signal
    only a pid whose file the running relay holds locked."""
    relay = relay_factory("RetrySchedule=1h\n")
    qid = submit(relay.port, "sender@example.org", ["x@example.com"], "stale")
    wait_delivery(relay, qid, "deferred")
    relay.kill9()
    pidfile = relay.queue / "krelay.pid"
    assert pidfile.exists()
    bystander = subprocess.Popen(["sleep", "60"])  # SIGUSR1 would kill it
    try:
        pidfile.write_text(f"{bystander.pid}\n")
        for args in (["flush"], ["hold", qid], ["release", qid]):
            p = queue_cmd(relay, *args)
            assert p.returncode == 0, (args, p.stdout, p.stderr)
            assert "krelay is not running" in p.stdout or "held" in p.stdout, (args, p.stdout)
            assert str(bystander.pid) not in p.stdout, (args, p.stdout)
        assert bystander.poll() is None, "the bystander was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_second_relay_on_one_queue_refuses_to_start(relay_factory):
    """Two relays on one QueueDirectory would deliver each other's messages:
    the second says which relay holds it and exits 1; the first goes on."""
    first = relay_factory()
    second = relay_factory(f"QueueDirectory={first.queue}\n", start=False)
    p = subprocess.run([KRELAY, "-C", str(second.conf)], capture_output=True, text=True,
                       timeout=30, env=ENV)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert (f"QueueDirectory {first.queue} is in use by another krelay "
            f"(pid {first.proc.pid})") in p.stderr, p.stderr
    assert "Sanitizer" not in p.stderr, p.stderr
    assert first.proc.poll() is None
    assert (first.queue / "krelay.pid").read_text() == f"{first.proc.pid}\n"


def test_queueonly_waits_for_flush(relay_factory):
    """Accepted messages stay queued (the next hop is up) until `krelay queue
    flush`; then they are relayed.  A message accepted after that flush waits
    for the next one."""
    peer = relay_factory(tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nDeliveryMode=queueonly\n"
                          "LogLevel=10\n")
    ids = [submit(relay.port, "s@example.org", [f"r{i}@example.com"], f"q{i}")
           for i in range(3)]
    # (the relay keeps them without starting them: no phase change at all)
    for i in ids:
        assert f"message {i} " not in relay.logs(), relay.logs()[-2000:]
    assert peer_ids(peer) == [], peer.logs()[-2000:]
    assert " delivery to=" not in relay.logs(), relay.logs()[-2000:]
    assert sorted(relay.queued()) == sorted(ids)
    msgs, n = queue_list(relay)
    assert n == 3 and all(msgs[i]["attempts"] == 0 and msgs[i]["next"] == "-" for i in ids), msgs

    p = queue_cmd(relay, "flush")
    assert p.returncode == 0 and "asked krelay" in p.stdout, (p.stdout, p.stderr)
    for i in ids:
        wait_delivery(relay, i, "sent", timeout=10)
    wait_spool_empty(relay, 5)
    wait_for(lambda: len(peer_ids(peer)) == 3, 5, "3 messages at the peer")

    late = submit(relay.port, "s@example.org", ["late@example.com"], "late")
    relay.wait_log(rf"smtp from id={late} from=<s@example\.org>")  # accepted and parked...
    assert f"message {late} " not in relay.logs()  # ...never started
    assert not delivery_lines(relay, late), relay.logs()[-2000:]
    assert relay.queued() == [late]
    assert len(peer_ids(peer)) == 3
    p = queue_cmd(relay, "flush")
    assert p.returncode == 0, (p.stdout, p.stderr)
    wait_delivery(relay, late, "sent", timeout=10)
    wait_spool_empty(relay, 5)
    wait_for(lambda: len(peer_ids(peer)) == 4, 5, "4 messages at the peer")


# ---- 3. QueueLifetime -----------------------------------------------------------


def test_expiry_bounces_to_the_sender(relay_factory):
    """QueueLifetime=2s with a dead next hop: the recipient expires (4.4.7),
    one bounce to the sender is queued (sender <>, multipart/report,
    Status: 4.4.7, Final-Recipient) and the original leaves the queue.  The
    bounce's own next hop is dead too: it expires in turn, from <>, so it
    gets no bounce of its own, and the queue ends empty."""
    relay = relay_factory("QueueLifetime=2s\nRetrySchedule=1s\n")
    qid = submit(relay.port, "sender@example.org", ["gone@example.com"], "exp")

    relay.wait_log(rf"{qid} delivery to=<gone@example\.com> status=expired dsn=4\.4\.7", 8)
    try:
        m = relay.wait_log(rf"{qid} bounce id=({QID}) to=<sender@example\.org> status=queued", 3)
    except AssertionError:
        env = relay.queue / "queue" / f"{qid}.env"
        state = env.read_text() if env.exists() else "(no queue/ID.env)"
        stop = relay.stop()
        raise AssertionError(
            f"{qid} expired but no bounce was queued within 3 s; its state file:\n{state}\n"
            f"krelay's stop line (exit {stop}): "
            f"{re.findall(r'krelay stopped .*', relay.logs())}") from None
    bid = m.group(1)
    # the bounce is in the queue (logged only once it is durable)
    body, env = relay.message(bid)
    assert env["sender"] == "", env
    assert env["rcpt"] == [("P", "sender@example.org")], env
    text = body.decode(errors="replace")
    assert re.search(r"^Content-Type: multipart/report;.*report-type=\"?delivery-status",
                     text, re.M | re.I | re.S), text[:3000]
    assert re.search(r"^Status: 4\.4\.7\r?$", text, re.M), text[:3000]
    assert re.search(r"^Final-Recipient: rfc822; ?gone@example\.com\r?$", text, re.M | re.I), \
        text[:3000]
    assert re.search(r"^Action: failed\r?$", text, re.M), text[:3000]
    assert "Subject: queue test exp" in text, "the original headers are returned"
    # the original leaves the queue
    wait_for(lambda: not [f for f in spool_files(relay) if f.startswith(qid)], 5,
             f"{qid} to leave the queue")
    # the bounce expires in turn, without a bounce of its own
    relay.wait_log(rf"{bid} delivery to=<sender@example\.org> status=expired dsn=4\.4\.7", 10)
    wait_spool_empty(relay, 8)
    logs = relay.logs()
    assert not re.search(rf"{bid} bounce", logs), logs[-3000:]
    assert len(re.findall(r" bounce id=", logs)) == 1, logs[-3000:]


def test_expiry_of_null_sender_mail_has_no_bounce(relay_factory):
    """Mail from <> that expires is dropped: no bounce, the queue ends empty."""
    relay = relay_factory("QueueLifetime=2s\nRetrySchedule=1s\nLogLevel=10\n")
    nul = submit(relay.port, "", ["nobody@example.com"], "expnull")
    relay.wait_log(rf"{nul} delivery to=<nobody@example\.com> status=expired dsn=4\.4\.7", 8)
    wait_spool_empty(relay, 5)
    # gone for good: removed without a bounce (it never went bouncing)
    relay.wait_log(rf"trace: message {nul} active -> removing")
    assert f"message {nul} active -> bouncing" not in relay.logs()
    logs = relay.logs()
    assert " bounce id=" not in logs, logs[-3000:]
    msgs, n = queue_list(relay)
    assert n == 0, msgs


# ---- 4. MX routing with a real DNS server ------------------------------------------


def free_dns_port():
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise AssertionError("no free port for dnsmasq")


class Dns:
    def __init__(self, tmp: Path):
        self.port = free_dns_port()
        self.log = tmp / "dnsmasq.log"
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--pid-file=", "--log-facility=-", "--log-queries",
                f"--port={self.port}", "--bind-interfaces", "--listen-address=127.0.0.1",
                "--local=/test/",
                "--mx-host=example.test,mx1.example.test,10",
                "--mx-host=example.test,mx2.example.test,20",
                "--host-record=mx1.example.test,127.0.0.2",
                "--host-record=mx2.example.test,127.0.0.3",
                "--host-record=nomx.test,127.0.0.4",
                "--mx-host=nullmx.test,.,0",
                "--txt-record=noaddr.test,no MX and no address"]
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        try:
            wait_listening("127.0.0.1", self.port)
        except AssertionError:
            self.stop()
            raise AssertionError(f"dnsmasq did not start:\n{self.log.read_text()}")

    def stop(self):
        stop_process(self.proc, self._out)


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    server = Dns(tmp_path_factory.mktemp("dnsmasq"))
    yield server
    server.stop()


def mx_relay(relay_factory, dns, tmp_path, table, extra=""):
    tt = tmp_path / "transport"
    tt.write_text(table)
    return relay_factory(f"DNSServer=127.0.0.1:{dns.port}\nTransportTable={tt}\n"
                         f"ConnectTimeout=2s\n{extra}")


def mx_peer(relay_factory, addr, port):
    peer = relay_factory(f"Listen={addr}:{port}\n", tls=False)
    wait_listening(addr, port)
    return peer


def test_mx_most_preferred_exchanger(relay_factory, dns, tmp_path):
    port = free_port_on(["127.0.0.2", "127.0.0.3"])
    mx1 = mx_peer(relay_factory, "127.0.0.2", port)
    mx2 = mx_peer(relay_factory, "127.0.0.3", port)
    relay = mx_relay(relay_factory, dns, tmp_path, f"example.test example.test:{port}\n")
    ids = [submit(relay.port, "s@example.org", [f"u{i}@example.test"], f"mx{i}")
           for i in range(3)]
    for qid in ids:
        (line,) = wait_delivery(relay, qid, "sent")
        assert f"relay=example.test[127.0.0.2:{port}]" in line, line
    wait_spool_empty(relay)
    wait_for(lambda: len(peer_ids(mx1)) == 3, 5, "3 messages at mx1")
    assert peer_ids(mx2) == [], "the less preferred MX got mail"


def test_mx_falls_back_when_the_first_refuses(relay_factory, dns, tmp_path):
    port = free_port_on(["127.0.0.2", "127.0.0.3"])
    mx2 = mx_peer(relay_factory, "127.0.0.3", port)  # nothing on 127.0.0.2:port
    relay = mx_relay(relay_factory, dns, tmp_path, f"example.test example.test:{port}\n")
    qid = submit(relay.port, "s@example.org", ["u@example.test"], "fallback")
    (line,) = wait_delivery(relay, qid, "sent", timeout=10)
    assert f"relay=example.test[127.0.0.3:{port}]" in line, line
    assert not delivery_lines(relay, qid, "deferred"), relay.logs()[-3000:]
    wait_spool_empty(relay)
    wait_for(lambda: len(peer_ids(mx2)) == 1, 5, "the message at mx2")


def test_verify_names_the_mx_it_falls_back_to(relay_factory, dns, tmp_path):
    """TLSPolicy=verify checks the certificate of the MX host it connects
    to: after the first MX refuses, the second is verified as
    mx2.example.test, not as the first (whose name its certificate lacks)."""
    pki = tmp_path / "mx2-pki"
    subprocess.run([str(MKCERTS), str(pki), "--name", "mx2.example.test"], check=True,
                   capture_output=True)
    port = free_port_on(["127.0.0.2", "127.0.0.3"])  # nothing on 127.0.0.2:port
    mx2 = relay_factory(f"Listen=127.0.0.3:{port}\nServerCertFile={pki}/server.crt\n"
                        f"ServerKeyFile={pki}/server.key\n", tls=False)
    wait_listening("127.0.0.3", port)
    relay = mx_relay(relay_factory, dns, tmp_path, f"example.test example.test:{port}\n",
                     f"TLSPolicy=verify\nCACertFile={pki}/ca.crt\n")
    qid = submit(relay.port, "s@example.org", ["u@example.test"], "verify-mx2")
    (line,) = wait_delivery(relay, qid, "sent", timeout=10)
    assert f"relay=example.test[127.0.0.3:{port}]" in line and "verified=yes" in line, line
    wait_for(lambda: len(peer_ids(mx2)) == 1, 5, "the message at mx2")


def test_no_mx_uses_the_address_record(relay_factory, dns, tmp_path):
    port = free_port_on(["127.0.0.4"])
    host = mx_peer(relay_factory, "127.0.0.4", port)
    relay = mx_relay(relay_factory, dns, tmp_path, f"nomx.test nomx.test:{port}\n")
    qid = submit(relay.port, "s@example.org", ["u@nomx.test"], "nomx")
    (line,) = wait_delivery(relay, qid, "sent", timeout=10)
    assert f"relay=nomx.test[127.0.0.4:{port}]" in line, line
    wait_spool_empty(relay)
    wait_for(lambda: len(peer_ids(host)) == 1, 5, "the message at nomx.test")


@pytest.mark.parametrize("domain,why", [("nosuch.test", "domain does not exist"),
                                        ("nullmx.test", "null MX"),
                                        ("noaddr.test", "no A/AAAA record")])
def test_unroutable_domains_bounce(relay_factory, dns, tmp_path, domain, why):
    """NXDOMAIN, null MX, and a domain with neither MX nor address are final:
    5.1.2, one bounce to the sender, and the message leaves the queue (the
    bounce stays: its own next hop is dead)."""
    relay = mx_relay(relay_factory, dns, tmp_path, f"{domain} {domain}:2525\n")
    qid = submit(relay.port, "sender@example.org", [f"u@{domain}"], domain.split(".")[0])
    (line,) = wait_delivery(relay, qid, "bounced", timeout=10)
    assert "dsn=5.1.2 " in line, line
    assert why in line, line
    m = relay.wait_log(rf"{qid} bounce id=({QID}) to=<sender@example\.org> status=queued", 5)
    bid = m.group(1)
    wait_for(lambda: relay.queued() == [bid], 5, "only the bounce left in the queue")
    body, env = relay.message(bid)
    assert env["sender"] == "" and env["rcpt"] == [("P", "sender@example.org")], env
    text = body.decode(errors="replace")
    assert re.search(rf"^Final-Recipient: rfc822; ?u@{re.escape(domain)}\r?$", text,
                     re.M | re.I), text[:3000]
    assert re.search(r"^Status: 5\.\d+\.\d+\r?$", text, re.M), text[:3000]
    assert re.search(r"^Content-Type: multipart/report;.*report-type=\"?delivery-status",
                     text, re.M | re.I | re.S), text[:3000]
    assert re.search(r"^Action: failed\r?$", text, re.M), text[:3000]
    assert why in text, text[:3000]
    assert f"Subject: queue test {domain.split('.')[0]}" in text, text[:3000]


def test_configured_host_without_address_is_retried(relay_factory, dns, tmp_path):
    """A next hop the configuration names ([host]: no MX lookup) that has
    no address is not the recipient's fault: deferred (4.4.3), kept."""
    relay = mx_relay(relay_factory, dns, tmp_path, "noaddr.test [noaddr.test]:2525\n")
    qid = submit(relay.port, "sender@example.org", ["u@noaddr.test"], "noaddr")
    (line,) = wait_delivery(relay, qid, "deferred", timeout=10)
    assert "dsn=4.4.3 " in line and "no A/AAAA record" in line, line
    assert relay.queued() == [qid]
    assert not delivery_lines(relay, qid, "bounced")


# ---- 5. TLS session resumption ------------------------------------------------------


def test_tls_sessions_are_resumed(relay_factory):
    """One message per connection (MaxMessagesPerConnection=1), TLS required:
    after the first handshake the relay resumes its session."""
    peer = relay_factory()
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=encrypt\n"
                          "MaxMessagesPerConnection=1\n")
    lines = []
    for i in range(10):
        qid = submit(relay.port, "s@example.org", [f"r{i}@example.com"], f"tls{i}")
        (line,) = wait_delivery(relay, qid, "sent", timeout=10)
        lines.append(line)
    for line in lines:
        assert re.search(r'tls="TLSv1\.[23] with cipher ', line), line
    resumed = [re.search(r" resumed=(yes|no) ", line) for line in lines]
    assert all(resumed), lines
    flags = [m.group(1) for m in resumed]
    assert flags[0] == "no", flags
    assert "yes" in flags[1:], f"no delivery resumed a TLS session: {flags}"
    wait_for(lambda: len(peer_ids(peer)) == 10, 5, "10 messages at the peer")
    # one connection per message
    connects = re.findall(r" smtp from id=", peer.logs())
    assert len(connects) == 10, connects


# ---- 6. krelay check: routing errors with file and line --------------------------


def run_check(conf):
    p = subprocess.run([KRELAY, "check", "-C", str(conf)], capture_output=True, text=True,
                       timeout=30, env=ENV)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def test_check_names_routing_errors(relay_factory, tmp_path):
    tt = tmp_path / "transport"
    tp = tmp_path / "tlspolicy"
    tt.write_text("good.test [127.0.0.1]:2525\nbad.test [127.0.0.1]:99999\n")
    tp.write_text("# comment\nexample.com encrypt\nexample.net sometimes\n")

    # each table alone
    r = relay_factory(f"TransportTable={tt}\n", start=False, tls=False)
    p = run_check(r.conf)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert re.search(rf"^error +{re.escape(str(tt))}:2: bad port '99999'", p.stdout, re.M), \
        p.stdout
    r = relay_factory(f"TLSPolicyTable={tp}\n", start=False, tls=False)
    p = run_check(r.conf)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert re.search(rf"^error +{re.escape(str(tp))}:3: 'sometimes' is not a TLS policy",
                     p.stdout, re.M), p.stdout

    # a bad SmartHost names the configuration file and its line; all three
    # errors are reported together
    r = relay_factory(f"TransportTable={tt}\nTLSPolicyTable={tp}\nSmartHost=[127.0.0.1]:0\n",
                      start=False, tls=False)
    conf_lines = r.conf.read_text().split("\n")
    sh_line = max(i for i, l in enumerate(conf_lines, 1) if l.startswith("SmartHost="))
    p = run_check(r.conf)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert re.search(rf"^error +{re.escape(str(r.conf))}:{sh_line}: SmartHost: bad port '0'",
                     p.stdout, re.M), p.stdout
    assert f"{tt}:2:" in p.stdout and f"{tp}:3:" in p.stdout, p.stdout
    assert "configuration: 3 errors" in p.stdout, p.stdout

    # krelay itself refuses to start with it, naming the same line
    proc = subprocess.Popen([KRELAY, "-C", str(r.conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"krelay started with a broken TransportTable:\n{out}")
    assert proc.returncode != 0, out
    assert f"{tt}:2" in out or f"{r.conf}:{sh_line}" in out, out

    # fixed, the same configuration checks clean
    tt.write_text("good.test [127.0.0.1]:2525\n.sub.test example.test:2526\n")
    tp.write_text("example.com encrypt\n.example.net verify\n")
    r = relay_factory(f"TransportTable={tt}\nTLSPolicyTable={tp}\n", start=False, tls=False)
    p = run_check(r.conf)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"ok     TransportTable {tt}" in p.stdout, p.stdout
    assert f"ok     TLSPolicyTable {tp}" in p.stdout, p.stdout
    assert "configuration: 0 errors" in p.stdout, p.stdout


def test_summary_counts_waiting_recipients_by_domain_and_age(relay_factory, tmp_path):
    """`krelay queue summary` (Postfix's qshape): the recipients still to be
    delivered, by domain (case folded) and age bucket, most first, both in
    queue/ and in segments; held messages are only mentioned; --json and
    --top."""
    import json
    relay = relay_factory("RetrySchedule=1h\n")  # next hop dead: everything waits
    for i in range(3):
        submit(relay.port, "s@example.org", [f"a{i}@big.example", f"b{i}@Small.Example"], f"s{i}")
    submit(relay.port, "s@example.org", ["c@big.example"], "s3")
    held = submit(relay.port, "s@example.org", ["h@held.example"], "held")
    wait_list(relay, lambda m: len(m) == 5 and all(x["attempts"] >= 1 for x in m.values()), 20,
              "five deferred messages")
    assert queue_cmd(relay, "hold", held).returncode == 0
    p = queue_cmd(relay, "summary")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280",
                                "1280+"], p.stdout
    assert lines[1].split() == ["TOTAL", "7", "7"] + ["0"] * 9, p.stdout
    assert lines[2].split() == ["big.example", "4", "4"] + ["0"] * 9, p.stdout
    assert lines[3].split() == ["small.example", "3", "3"] + ["0"] * 9, p.stdout
    assert lines[4] == "(and 1 held message: krelay queue list)", p.stdout
    p = queue_cmd(relay, "summary", "--json", "--top", "1")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["total"] == {"total": 7, "ages": [7] + [0] * 9}
    assert s["domains"] == [{"domain": "big.example", "total": 4, "ages": [4] + [0] * 9}]
    p = queue_cmd(relay, "summary", "--top", "x")
    assert p.returncode == 2 and "--top 'x' is not a number" in p.stderr, p.stderr
