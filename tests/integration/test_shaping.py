"""Traffic shaping (ShapingTable): limits per egress source x site.

- The message rate, measured at a krelay-bench sink over 30 s: within
  +-10% of the configured one, for two recipient domains whose MX hosts
  are the same set (one site: they share the limit, the sum is held).
- max_connections and max_deliveries_per_connection, seen by the next hop.
- Reply rules: a "421 4.7.0" suspends the source x site, nothing goes to
  the peer until the suspension ends, then deliveries resume; a
  "451 4.7.28" lowers the message rate for a while.
- Egress sources and a weighted pool: connections come from the sources'
  addresses (127.0.0.11, 127.0.0.12), in the pool's proportions, each with
  its source's EHLO name; a source of the wrong address family defers.
- A reload under load changes the limits and loses nothing; a table with
  an error is refused at start, by `krelay check`, and at a reload.

The next hops: krelay-bench's sink (which reports the time of its first
and last message), and a small SMTP server on raw sockets that records
what each connection was (peer address, EHLO name, time, messages).
"""
import datetime
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import KRELAY, free_port
from helpers import deliveries, wait_for
from test_bench_tool import BENCH, ENV, Sink
from test_queue_routing import DNSMASQ, free_dns_port, queue_cmd, wait_listening
from test_metrics import get, metrics
from test_relay import submit, wait_deliveries, wait_spool_empty


def source(relay, n, domain, concurrency=4):
    return subprocess.Popen([BENCH, "source", "--to", f"127.0.0.1:{relay.port}", "--messages",
                             str(n), "--size", "2k", "--concurrency", str(concurrency),
                             "--per-conn", "50", "--tls", "none", "--rcpt-domain", domain,
                             "--timeout", "120", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(p):
    import json
    out, err = p.communicate(timeout=180)
    assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]
    return json.loads(out) if out.strip() else {}


class Dns:
    """dnsmasq: a.test and b.test both have mx1/mx2.shared.test (one site)."""

    def __init__(self, tmp):
        self.port = free_dns_port()
        self.log = tmp / "dnsmasq.log"
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--pid-file=", "--log-facility=-",
                f"--port={self.port}", "--bind-interfaces", "--listen-address=127.0.0.1",
                "--local=/test/",
                "--mx-host=a.test,mx1.shared.test,10", "--mx-host=a.test,mx2.shared.test,20",
                "--mx-host=b.test,mx2.shared.test,20", "--mx-host=b.test,mx1.shared.test,10",
                "--mx-host=c.test,mx.other.test,10",
                "--host-record=mx1.shared.test,127.0.0.1",
                "--host-record=mx2.shared.test,127.0.0.1",
                "--host-record=mx.other.test,127.0.0.1"]
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        wait_listening("127.0.0.1", self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self._out.close()


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dns(tmp_path_factory.mktemp("shaping-dns"))
    yield d
    d.stop()


class Peer:
    """A next hop that records each connection: the peer's address, its
    EHLO name, when it came, its messages; and the most connections open at
    once.  rcpt_replies: replies given, in order, to the first RCPT commands
    (then 250); final_delay: seconds before the reply to the final ".".

    One thread, one selector: in each turn the input of open connections is
    read before new ones are accepted, so a QUIT the relay wrote before it
    connected again is counted first (the relay closes without waiting for
    the 221, and with a thread per connection the new one could be counted
    before the old one's thread read its QUIT)."""

    def __init__(self, rcpt_replies=(), final_delay=0.0, host="127.0.0.1"):
        self.rcpt_replies = list(rcpt_replies)
        self.final_delay = final_delay
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sessions = []
        self.open = self.most_open = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, None)
        later = []  # (when, conn, session, text): replies held back
        while not self.stopping:
            now = time.time()
            for item in [x for x in later if x[0] <= now]:
                later.remove(item)
                self._say(item[1], item[2], item[3])
            wait = min([x[0] for x in later], default=now + 0.1) - now
            events = sel.select(max(0.0, min(wait, 0.1)))
            # the open connections' input first, then the new ones
            for key, _ in sorted(events, key=lambda e: e[0].data is None):
                if key.data is None:
                    try:
                        conn, addr = self.sock.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    s = {"addr": addr[0], "ehlo": None, "start": time.time(), "end": None,
                         "messages": [], "replies": [], "buf": b"", "state": "cmd",
                         "rcpts": 0, "open": True}
                    with self.lock:
                        self.sessions.append(s)
                        self.open += 1
                        self.most_open = max(self.most_open, self.open)
                    sel.register(conn, selectors.EVENT_READ, s)
                    self._say(conn, s, "220 peer.test ESMTP")
                    continue
                self._input(sel, key.fileobj, key.data, later)
        sel.close()

    def _end(self, sel, conn, s):
        if s["open"]:
            with self.lock:
                self.open -= 1
            s["open"] = False
            s["end"] = time.time()
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _say(self, conn, s, text):
        try:
            conn.sendall(text.encode() + b"\r\n")
        except OSError:
            pass

    def _input(self, sel, conn, s, later):
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._end(sel, conn, s)
            return
        s["buf"] += data
        while b"\r\n" in s["buf"] and s["open"]:
            line, s["buf"] = s["buf"].split(b"\r\n", 1)
            if s["state"] == "data":
                if line == b".":
                    s["state"] = "cmd"
                    s["messages"].append(time.time() + self.final_delay)
                    later.append((time.time() + self.final_delay, conn, s, "250 2.0.0 Ok"))
                continue
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                s["ehlo"] = line.split()[1].decode()
                self._say(conn, s, "250-peer.test\r\n250 8BITMIME")
            elif verb == b"MAIL":
                s["rcpts"] = 0
                self._say(conn, s, "250 2.1.0 Ok")
            elif verb == b"RCPT":
                with self.lock:
                    r = self.rcpt_replies.pop(0) if self.rcpt_replies else "250 2.1.5 Ok"
                s["replies"].append((time.time(), r))
                s["rcpts"] += r.startswith("2")
                self._say(conn, s, r)
                if r.startswith("421"):
                    self._end(sel, conn, s)
            elif verb == b"DATA":
                if not s["rcpts"]:
                    self._say(conn, s, "554 5.5.1 no valid recipients")
                    continue
                s["state"] = "data"
                self._say(conn, s, "354 go on")
            elif verb == b"QUIT":
                self._say(conn, s, "221 2.0.0 Bye")
                self._end(sel, conn, s)
            else:
                self._say(conn, s, "250 2.0.0 Ok")

    def messages(self):
        with self.lock:
            return sorted(t for s in self.sessions for t in s["messages"])

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def peers():
    made = []

    def make(**kw):
        made.append(Peer(**kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


def submit_at_once(relay, n):
    """n messages, each on its own connection, all at once."""
    threads = [threading.Thread(target=submit, args=(relay.port, "s@example.org",
                                                     [f"r{i}@example.com"], f"m{i}"))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def shaped_relay(relay_factory, tmp_path, table, conf=""):
    path = tmp_path / "shaping"
    path.write_text(table)
    return relay_factory(f"ShapingTable={path}\nTLSPolicy=none\nRetrySchedule=1s,1s\n{conf}"), \
        path


# ---- rates and sites -----------------------------------------------------------


def test_message_rate_per_site_holds_across_two_domains(relay_factory, dns, tmp_path):
    """a.test and b.test share their MX hosts: one site, one limit of 20/s.
    660 messages (330 each, queued at once) arrive at the sink at 20/s
    +-10% over 33 s: the two destinations (in two workers) count together
    (alone, each would go at 20/s and the sum at 40/s)."""
    n = 660
    sink = Sink(tmp_path, "--verify", expect=n, timeout=150)
    tt = tmp_path / "transport"
    tt.write_text(f"a.test a.test:{sink.port}\nb.test b.test:{sink.port}\n")
    relay, _ = shaped_relay(relay_factory, tmp_path,
                            "site:*.shared.test max_message_rate=20/s\n",
                            f"DNSServer=127.0.0.1:{dns.port}\nTransportTable={tt}\n"
                            "MaxConnections=100\n")
    srcs = [source(relay, n // 2, "a.test"), source(relay, n // 2, "b.test")]
    for p in srcs:
        assert finish(p).get("messages_ok") == n // 2
    sink.proc.wait(150)
    r = sink.finish(signal_it=False)
    assert r["messages"] == n and r["checksum_errors"] == 0, r
    rate = (r["messages"] - 1) / (r["last_unix"] - r["first_unix"])
    print(f"two domains, one site at 20/s: {rate:.2f}/s at the sink")
    assert 18.0 <= rate <= 22.0, f"{rate:.2f} messages/s, configured 20/s"
    wait_spool_empty(relay, timeout=30)
    sent = [d for d in deliveries(relay) if d["status"] == "sent"]
    assert len(sent) == n and not [d for d in deliveries(relay) if d["status"] != "sent"]
    # the domains were limited together, as one site
    assert {d["to"].split("@")[1] for d in sent} == {"a.test", "b.test"}


def test_connections_and_deliveries_per_connection(relay_factory, peers, tmp_path):
    """max_connections=2 for the whole relay (2 workers, DestinationConcurrency
    20): the peer never sees more than 2 at once; each connection carries at
    most 3 messages."""
    peer = peers(final_delay=0.2)
    relay, _ = shaped_relay(relay_factory, tmp_path,
                            "default max_connections=2 max_deliveries_per_connection=3\n",
                            f"SmartHost=[127.0.0.1]:{peer.port}\nDestinationConcurrency=20\n")
    submit_at_once(relay, 24)
    wait_deliveries(relay, 24, status="sent", timeout=60)
    assert len(peer.messages()) == 24
    assert peer.most_open == 2, peer.most_open
    assert max(len(s["messages"]) for s in peer.sessions) <= 3
    assert len([s for s in peer.sessions if s["messages"]]) >= 8


# ---- reply rules ------------------------------------------------------------------


def test_421_suspends_the_site_then_deliveries_resume(relay_factory, peers, tmp_path):
    peer = peers(rcpt_replies=["421 4.7.0 Too many messages from your IP, slow down"])
    mport = free_port()
    relay, path = shaped_relay(relay_factory, tmp_path,
                               'default reply="^421 4\\.7\\." suspend=4s\n',
                               f"SmartHost=[127.0.0.1]:{peer.port}\n"
                               f"MetricsListen=127.0.0.1:{mport}\n")
    submit(relay.port, "s@example.org", ["r@example.com"], "first")
    relay.wait_log(r"shaping: 127\.0\.0\.1 suspended for 4s: the reply \"421 4\.7\.0 Too "
                   r"many messages from your IP, slow down\" matched " + re.escape(str(path)) +
                   r" line 1")
    t_421 = peer.sessions[0]["replies"][0][0]
    # the metrics endpoint shows it
    samples = metrics(mport)
    site = {"source": "-", "site": "127.0.0.1"}
    assert get(samples, "krelay_shaping_suspended", **site) == 1
    assert get(samples, "krelay_shaping_suspensions_total", **site) == 1
    # more mail meanwhile: it waits with the first one's retry
    submit(relay.port, "s@example.org", ["r2@example.com"], "second")
    sent = wait_deliveries(relay, 2, status="sent", timeout=20)
    assert len(sent) == 2
    later = [s["start"] for s in peer.sessions[1:]]
    assert later and min(later) >= t_421 + 3.9, (later, t_421)
    assert len(peer.messages()) == 2
    samples = metrics(mport)
    assert get(samples, "krelay_shaping_suspended", **site) == 0
    assert get(samples, "krelay_shaping_delays_total", **site) >= 1
    # one deferral (the 421), logged as such
    assert [d["status"] for d in deliveries(relay)].count("deferred") == 1


def test_rate_lowered_by_a_reply(relay_factory, peers, tmp_path):
    """451 4.7.28 lowers the site's message rate to 2/s for a minute: the
    next 10 messages take at least 4 s (two at once, then one per 0.5 s)."""
    peer = peers(rcpt_replies=["451 4.7.28 rate limited, try later"])
    relay, _ = shaped_relay(relay_factory, tmp_path,
                            'default reply="^4[0-9][0-9] 4\\.7\\.28" rate=2/s for=1m\n',
                            f"SmartHost=[127.0.0.1]:{peer.port}\n")
    submit(relay.port, "s@example.org", ["first@example.com"], "first")
    relay.wait_log(r"shaping: 127\.0\.0\.1 message rate lowered to 2/1s for 60s: the reply "
                   r"\"451 4\.7\.28 rate limited, try later\"")
    wait_deliveries(relay, 1, status="sent", timeout=10)
    submit_at_once(relay, 10)
    wait_deliveries(relay, 11, status="sent", timeout=30)
    times = peer.messages()[-10:]
    assert times[-1] - times[0] >= 3.8, [round(t - times[0], 2) for t in times]


# ---- egress sources and pools --------------------------------------------------------


def test_egress_pool_binds_its_sources_by_weight(relay_factory, peers, tmp_path):
    peer = peers()
    relay, _ = shaped_relay(
        relay_factory, tmp_path,
        "source one 127.0.0.11 ehlo=mta1.relay.test\n"
        "source two 127.0.0.12 ehlo=mta2.relay.test\n"
        "pool out one:3 two:1\n"
        "default pool=out max_deliveries_per_connection=1\n",
        f"SmartHost=[127.0.0.1]:{peer.port}\nWorkers=1\n")
    for i in range(16):
        submit(relay.port, "s@example.org", [f"r{i}@example.com"], f"m{i}")
    wait_deliveries(relay, 16, status="sent", timeout=30)
    used = [s for s in peer.sessions if s["messages"]]
    names = {s["addr"]: set() for s in used}
    for s in used:
        names[s["addr"]].add(s["ehlo"])
    assert names == {"127.0.0.11": {"mta1.relay.test"}, "127.0.0.12": {"mta2.relay.test"}}
    count = {a: sum(len(s["messages"]) for s in used if s["addr"] == a) for a in names}
    # one worker: the smooth weighted round robin gives exactly 3:1
    assert count == {"127.0.0.11": 12, "127.0.0.12": 4}, count


def test_source_of_the_wrong_family_defers(relay_factory, peers, tmp_path):
    peer = peers()
    relay, _ = shaped_relay(relay_factory, tmp_path,
                            "source v6 ::1\npool p v6\ndefault pool=p\n",
                            f"SmartHost=[127.0.0.1]:{peer.port}\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], "v6")
    (d,) = wait_deliveries(relay, 1, timeout=10)
    assert d["qid"] == qid and d["status"] == "deferred", d
    assert d["reply"].startswith("451 4.4.0 egress source v6 (::1) has no address of the "
                                 "family of 127.0.0.1"), d
    assert peer.sessions == []


# ---- operating it -----------------------------------------------------------------


def test_reload_under_load_changes_the_limit(relay_factory, tmp_path):
    """5/s, then a reload to 500/s while 200 messages wait: the rest goes
    at once; every message arrives once (the sink checks each body)."""
    n = 200
    sink = Sink(tmp_path, "--verify", expect=n, timeout=120)
    relay, path = shaped_relay(relay_factory, tmp_path, "default max_message_rate=5/s\n",
                               f"SmartHost=[127.0.0.1]:{sink.port}\n")
    assert finish(source(relay, n, "example.com")).get("messages_ok") == n
    time.sleep(2)
    path.write_text("default max_message_rate=500/s max_connections=4\n")
    t0 = time.time()
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(r"new connections out use the reloaded configuration")
    sink.proc.wait(60)
    took = time.time() - t0
    r = sink.finish(signal_it=False)
    assert r["messages"] == n and r["checksum_errors"] == 0, r
    assert took < 20, f"{took:.1f}s after the reload (5/s would take {(n - 10) / 5:.0f}s)"
    wait_spool_empty(relay, timeout=30)


def test_bad_tables_are_refused(relay_factory, tmp_path):
    path = tmp_path / "shaping"
    path.write_text("default max_message_rate=20/s\nsite:*.x.test max_connections=many\n")
    relay = relay_factory(f"ShapingTable={path}\n", start=False)
    p = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert f"error  {path}:2: max_connections=many: a number from 1" in p.stdout, p.stdout
    relay.start(wait=False)
    assert relay.proc.wait(20) != 0
    assert f"{path}:2: max_connections=many: a number from 1" in relay.errors()
    # a good one starts; a bad one at a reload is refused, the old one stays
    path.write_text("default max_message_rate=20/s\n")
    p = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                       text=True, timeout=30)
    assert f"ok     ShapingTable {path}: 0 egress sources" in p.stdout, p.stdout
    relay.start()
    path.write_text('default reply="(" suspend=1m\n')
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(re.escape(f"{path}:1: reply=\"(\":"))
    assert relay.proc.poll() is None


# ---- several nodes: ThrottleStore=redis:// --------------------------------------------

REDIS = shutil.which("redis-server")


class Redis:
    """A real redis-server on a loopback port, no persistence."""

    def __init__(self, tmp, port=None):
        self.tmp = tmp
        self.port = port or free_port()
        self.start()

    def start(self):
        self.out = open(self.tmp / "redis.log", "ab")
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        wait_listening("127.0.0.1", self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.out.close()


STAMP = re.compile(r"^(\S+)Z krelay\[\d+\]: [0-9A-F]{16} delivery .* status=sent ", re.M)


def sent_times(relays):
    """When each message was relayed (all the nodes' delivery lines)."""
    out = []
    for r in relays:
        for m in STAMP.finditer(r.logs()):
            out.append(datetime.datetime.fromisoformat(m.group(1)).replace(
                tzinfo=datetime.timezone.utc).timestamp())
    return sorted(out)


def rate_between(relays, t0, t1):
    return sum(1 for t in sent_times(relays) if t0 <= t < t1) / (t1 - t0)


@pytest.mark.skipif(not REDIS, reason="redis-server not installed")
def test_three_nodes_share_one_rate_through_redis(relay_factory, tmp_path):
    """Three krelays (each its own QueueDirectory) share max_message_rate=30/s
    through one redis-server: together they relay at 30/s +-10%.  Redis
    killed: each falls back to its own 30/s (never no limit: the sum stays
    at most 3 x 30/s), no message is lost; Redis back: 30/s together again.
    A reload then lifts the limit and the queues drain; the sink (--verify)
    gets every message once."""
    per_node = 600
    total = 3 * per_node
    sink = Sink(tmp_path, "--verify", expect=total, timeout=300)
    redis = Redis(tmp_path)
    table = tmp_path / "shaping"
    table.write_text("default max_message_rate=30/s\n")
    nodes = [relay_factory(f"ShapingTable={table}\nThrottleStore=redis://127.0.0.1:{redis.port}/\n"
                           f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=none\n"
                           "RetrySchedule=1s,1s\nMaxConnections=100\n")
             for _ in range(3)]
    for n in nodes:
        n.wait_log(r"ThrottleStore redis://127\.0\.0\.1:\d+/: connected: limits are now")
    try:
        srcs = [source(n, per_node, "example.com") for n in nodes]
        for p in srcs:
            assert finish(p).get("messages_ok") == per_node
        first = wait_for(lambda: sent_times(nodes)[:1], 30, "a first delivery")[0]
        # shared: 30/s for the three together
        time.sleep(max(0.0, first + 13 - time.time()))
        shared = rate_between(nodes, first + 2, first + 12)
        redis.kill()
        t_kill = time.time()
        for n in nodes:
            n.wait_log(r"ThrottleStore redis://127\.0\.0\.1:\d+/: unreachable \(")
        time.sleep(max(0.0, t_kill + 8 - time.time()))
        alone = rate_between(nodes, t_kill + 2, t_kill + 8)
        redis.start()
        t_back = time.time()
        for n in nodes:
            n.wait_log(r"connected: limits are again the cluster's", timeout=15)
        time.sleep(max(0.0, t_back + 9 - time.time()))
        again = rate_between(nodes, t_back + 3, t_back + 9)
        # done measuring: lift the limit, the rest goes at once
        table.write_text("default max_message_rate=1000/s\n")
        for n in nodes:
            n.proc.send_signal(signal.SIGHUP)
        sink.proc.wait(120)
        r = sink.finish(signal_it=False)
    finally:
        if redis.proc.poll() is None:
            redis.kill()
    print(f"cluster of 3 at 30/s: shared {shared:.1f}/s, without redis {alone:.1f}/s, "
          f"redis back {again:.1f}/s")
    assert r["messages"] == total and r["checksum_errors"] == 0, r
    assert 27.0 <= shared <= 33.0, f"shared {shared:.1f}/s, configured 30/s for the cluster"
    assert 60.0 <= alone <= 99.0, f"without redis {alone:.1f}/s (3 nodes, 30/s each)"
    assert 27.0 <= again <= 33.0, f"redis back: {again:.1f}/s"
    for n in nodes:
        wait_spool_empty(n, timeout=30)


@pytest.mark.skipif(not REDIS, reason="redis-server not installed")
def test_three_nodes_share_max_connections_through_redis(relay_factory, peers, tmp_path):
    """max_connections=2 for the cluster: three nodes with messages for one
    next hop never hold more than 2 connections to it at once."""
    peer = peers(final_delay=0.3)
    redis = Redis(tmp_path)
    table = tmp_path / "shaping"
    table.write_text("default max_connections=2 max_deliveries_per_connection=2\n")
    mport = free_port()
    try:
        nodes = [relay_factory(f"ShapingTable={table}\n"
                               f"ThrottleStore=redis://127.0.0.1:{redis.port}/\n"
                               f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                               "DeliveryMode=queueonly\n" +
                               (f"MetricsListen=127.0.0.1:{mport}\n" if i == 0 else ""))
                 for i in range(3)]
        for n in nodes:
            n.wait_log(r"connected: limits are now the cluster's")
            submit_at_once(n, 8)
        for n in nodes:  # all three start at once
            assert subprocess.run([KRELAY, "queue", "-C", str(n.conf), "flush"],
                                  capture_output=True, timeout=30).returncode == 0
        for n in nodes:
            wait_deliveries(n, 8, status="sent", timeout=60)
        samples = metrics(mport)
        assert get(samples, "krelay_throttle_store_clients_up") == 2  # its two workers
        p = subprocess.run([KRELAY, "check", "-C", str(nodes[0].conf)], capture_output=True,
                           text=True, timeout=30)
        assert f"ok     ThrottleStore redis://127.0.0.1:{redis.port}/: answers PING" in p.stdout
    finally:
        redis.kill()
    assert len(peer.messages()) == 24
    assert peer.most_open == 2, peer.most_open
    p = subprocess.run([KRELAY, "check", "-C", str(nodes[0].conf)], capture_output=True,
                       text=True, timeout=30)
    assert (f"warn   ThrottleStore redis://127.0.0.1:{redis.port}/: Connection refused: each "
            "node's own limits apply until it answers") in p.stdout, p.stdout


def test_hold_and_delete_of_messages_waiting_on_a_suspended_site(relay_factory, peers, tmp_path):
    """Messages waiting at a suspended site (an hour) are held or deleted
    at once when the operator asks, not after the suspension."""
    peer = peers(rcpt_replies=["421 4.7.0 go away for now"])
    relay, _ = shaped_relay(relay_factory, tmp_path, 'default reply="^421" suspend=1h\n',
                            f"SmartHost=[127.0.0.1]:{peer.port}\n")
    a = submit(relay.port, "s@example.org", ["a@example.com"], "a")
    relay.wait_log(r"suspended for 3600s")
    b = submit(relay.port, "s@example.org", ["b@example.com"], "b")
    time.sleep(1.5)  # a's retry and b: both wait at the destination now
    assert queue_cmd(relay, "hold", a).returncode == 0
    assert queue_cmd(relay, "delete", b).returncode == 0
    relay.wait_log(rf"{a}: held \(krelay queue hold\)", timeout=5)
    relay.wait_log(rf"{b}: deleted \(krelay queue delete\)", timeout=5)
    assert (relay.queue / "hold" / a).exists()
    assert len(peer.sessions) == 1  # nothing went to the peer meanwhile
