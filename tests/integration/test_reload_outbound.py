"""SIGHUP reaches outbound delivery: once "reload ok" is logged, new
connections out use the new SmartHost, TransportTable, TLSPolicy,
TLSPolicyTable and client certificate (the queue used to keep the
configuration it started with until restart).  A connection kept open for
reuse was opened with the old settings: it is not used again.

Next hops are krelay-bench sinks: each counts what it was given.
"""
import signal

from conftest import free_port
from helpers import wait_for
from test_bench_tool import Sink
from test_queue_routing import queue_cmd
from test_relay import content_of, submit, wait_deliveries, wait_spool_empty


def reload(relay, old, new):
    text = relay.conf.read_text()
    assert old in text, (old, text)
    relay.conf.write_text(text.replace(old, new))
    n = relay.logs().count("reload ok")
    relay.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: relay.logs().count("reload ok") > n, 10, "reload ok")


def send(relay, tag):
    return submit(relay.port, "s@example.org", ["r@example.com"], content_of(tag))


def counts(*sinks):
    return [s.finish()["messages"] for s in sinks]


def test_smarthost(relay_factory, tmp_path):
    a, b = Sink(tmp_path), Sink(tmp_path)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{a.port}\nTLSPolicy=none\n")
    send(relay, "sh-1")
    wait_deliveries(relay, 1, status="sent")  # (its connection kept for reuse)
    reload(relay, f"SmartHost=[127.0.0.1]:{a.port}", f"SmartHost=[127.0.0.1]:{b.port}")
    send(relay, "sh-2")
    wait_deliveries(relay, 2, status="sent")
    assert counts(a, b) == [1, 1]


def test_transport_table(relay_factory, tmp_path):
    a, b = Sink(tmp_path), Sink(tmp_path)
    tt = tmp_path / "transport"
    tt.write_text(f"example.com [127.0.0.1]:{a.port}\n")
    relay = relay_factory(f"TransportTable={tt}\nTLSPolicy=none\n")
    send(relay, "tt-1")
    wait_deliveries(relay, 1, status="sent")
    tt.write_text(f"example.com [127.0.0.1]:{b.port}\n")
    reload(relay, "TLSPolicy=none", "TLSPolicy=none\n# transport table rewritten")
    send(relay, "tt-2")
    wait_deliveries(relay, 2, status="sent")
    assert counts(a, b) == [1, 1]


def test_tls_policy(relay_factory, tmp_path):
    """encrypt toward a next hop without STARTTLS defers; after a reload to
    none, the next queue run delivers."""
    a = Sink(tmp_path)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{a.port}\nTLSPolicy=encrypt\n"
                          "RetrySchedule=1h\n")
    send(relay, "pol-1")
    wait_deliveries(relay, 1, status="deferred")
    reload(relay, "TLSPolicy=encrypt", "TLSPolicy=none")
    assert queue_cmd(relay, "flush").returncode == 0
    wait_deliveries(relay, 1, status="sent")
    wait_spool_empty(relay)
    assert counts(a) == [1]


def test_tls_policy_table(relay_factory, tmp_path):
    a = Sink(tmp_path)
    table = tmp_path / "tls_policy"
    table.write_text("127.0.0.1 encrypt\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{a.port}\nTLSPolicy=may\n"
                          f"TLSPolicyTable={table}\nRetrySchedule=1h\n")
    send(relay, "ptab-1")
    wait_deliveries(relay, 1, status="deferred")
    table.write_text("127.0.0.1 none\n")
    reload(relay, "TLSPolicy=may", "TLSPolicy=may\n# policy table rewritten")
    assert queue_cmd(relay, "flush").returncode == 0
    wait_deliveries(relay, 1, status="sent")
    assert counts(a) == [1]


def test_client_certificate(relay_factory, certs, tmp_path):
    """A next hop that asks for a client certificate from its CA: refused
    with the rogue one (530), taken after a reload to the good one."""
    a = Sink(tmp_path, "--ca", str(certs.ca), "--verify-client", certs=certs)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{a.port}\nTLSPolicy=encrypt\n"
                          f"ClientCertFile={certs.rogue / 'client.crt'}\n"
                          f"ClientKeyFile={certs.rogue / 'client.key'}\n")
    send(relay, "cert-1")
    # refused (530): the message, then its bounce to the sender, both
    # before the reload (a bounce still on its way would go out with the
    # good certificate and count at the sink)
    wait_deliveries(relay, 2, status="bounced")
    assert "530" in relay.logs()
    reload(relay, f"ClientCertFile={certs.rogue / 'client.crt'}\n"
                  f"ClientKeyFile={certs.rogue / 'client.key'}",
           f"ClientCertFile={certs.client_crt}\nClientKeyFile={certs.client_key}")
    send(relay, "cert-2")
    wait_deliveries(relay, 1, status="sent")
    assert counts(a) == [1]


def test_restart_only_settings_are_named(relay_factory):
    """Listen, QueueDirectory, Workers and DNSServer cannot change on a
    reload: each one that changed is named in a warning (a Listen moved to
    another port counts, not only a different number of listeners), and the
    relay goes on with the running values."""
    relay = relay_factory("")
    old_port = relay.port
    new_port = free_port()
    reload(relay, f"Listen=127.0.0.1:{old_port}\n", f"Listen=127.0.0.1:{new_port}\n")
    relay.wait_log(r"warning: reload: Listen changed: it takes effect at restart; "
                   r"the running value stays")
    send(relay, "still-listening")  # on the old port
    reload(relay, "Workers=2", "Workers=1\nDNSServer=127.0.0.1:5399")
    relay.wait_log(r"warning: reload: Listen, Workers and DNSServer changed: they take "
                   r"effect at restart; the running values stay")
    reload(relay, "Workers=1\nDNSServer=127.0.0.1:5399", "Workers=2")
    # back to the running Workers and DNSServer: Listen is still changed
    assert relay.logs().count("warning: reload:") == 3
    reload(relay, f"Listen=127.0.0.1:{new_port}\n", f"Listen=127.0.0.1:{old_port}\n")
    assert relay.logs().count("warning: reload:") == 3  # all back: nothing to say
