"""LogLevel (Sendmail's option): at 9, the default, no trace line; from 10
up every state change of a session, a message, a destination and a
connection out is traced as "trace: <what> <name> <old> -> <new>", so a
message's way through the queue can be read in the log."""
import re

from conftest import free_port
from test_bench_tool import Sink
from test_relay import content_of, submit, wait_deliveries


def traces(relay):
    return re.findall(r"trace: (.*)", relay.logs())


def test_default_level_traces_nothing(relay_factory, tmp_path):
    sink = Sink(tmp_path)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=none\n")
    submit(relay.port, "s@example.org", ["r@example.com"], content_of("quiet"))
    wait_deliveries(relay, 1, status="sent")
    assert traces(relay) == []
    sink.finish()


def test_delivery_traced(relay_factory, tmp_path):
    sink = Sink(tmp_path)
    hop = f"[127.0.0.1]:{sink.port}"
    relay = relay_factory(f"SmartHost={hop}\nTLSPolicy=none\nLogLevel=10\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("traced"))
    wait_deliveries(relay, 1, status="sent")
    t = traces(relay)
    for line in [f"message {qid} new -> opening", f"message {qid} opening -> active",
                 f"message {qid} active -> removing", f"destination {hop} made",
                 f"destination {hop} unresolved -> resolving",
                 f"destination {hop} resolving -> resolved",
                 f"connection {hop}#1 opening", f"connection {hop}#1 connecting -> sending",
                 f"connection {hop}#1 sending -> idle"]:
        assert line in t, (line, t)
    # the inbound session that brought it, in order
    by_id = {}
    for x in t:
        if x.startswith("session "):
            _, sid, change = x.split(" ", 2)
            by_id.setdefault(sid, []).append(change)
    want = ["handshake -> greeting", "greeting -> cmd", "cmd -> opening", "opening -> data",
            "data -> commit", "commit -> cmd"]
    assert any(v[:len(want)] == want for v in by_id.values()), by_id
    sink.finish()


def test_retry_traced(relay_factory, tmp_path):
    """A next hop that refuses connections: the attempt ends, its state is
    saved, and the retry timer waits."""
    port = free_port()
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{port}\nTLSPolicy=none\nLogLevel=12\n"
                          "RetrySchedule=1h,2h\n")
    qid = submit(relay.port, "s@example.org", ["r@example.com"], content_of("retry"))
    wait_deliveries(relay, 1, status="deferred")
    relay.wait_log(f"message {qid} retry-save -> retry-wait")
    t = traces(relay)
    assert t.index(f"message {qid} active -> retry-save") < \
        t.index(f"message {qid} retry-save -> retry-wait"), t
    assert any(re.fullmatch(rf"connection \[127\.0\.0\.1\]:{port}#1 connecting -> quitting", x)
               for x in t), t
