"""MetricsListen: the Prometheus endpoint, scraped with Python's http.client
(a client nobody here wrote) during and after a krelay-bench run through
the relay into a krelay-bench sink.

- The counters agree exactly with what the source sent and what the sink
  counted, with DeliveryMode background and interactive: messages
  received, messages and recipients relayed,
  connections, TLS handshakes and kTLS on/off (each handshake counted
  once, on or off); the spool fsync histogram has counts and cumulative
  buckets.
- Every scrape is read by a strict parser: each sample line is
  `name{labels} value` with well-formed, escaped label values, each
  family has HELP and TYPE lines before its samples, no sample twice.
- The endpoint answers 404, 405 and 400 and closes; a client that says
  nothing keeps no scrape out and is closed after the read timeout; many
  such clients only push the oldest out; the head's size is bounded.
- A destination whose name has quotes, backslashes and a newline (a
  recipient domain in a queue file) appears escaped.
- A reload that changes MetricsListen says it takes effect at restart.
"""
import http.client
import json
import math
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import KRELAY, free_port
from helpers import wait_for
from test_bench_tool import BENCH, ENV, clean, sinks  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not Path(BENCH).exists(), reason=f"{BENCH} not built")

TIMEOUT_S = 10  # METRICS_SRV_TIMEOUT_S

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def unescape(v):
    return re.sub(r'\\([\\"n])', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad labels at {text[pos:]!r}"
        assert m.group(1) not in labels, f"label {m.group(1)} twice"
        labels[m.group(1)] = unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"bad labels: {text!r}"
            pos += 1
    return labels


def parse_exposition(text):
    """Strictly parses the text format 0.0.4: {(name, frozenset(labels)):
    value}, and {family: type}."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    helps, types, samples = {}, {}, {}
    for line in text[:-1].split("\n"):
        assert line, "no empty lines"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and help_, line
            assert name not in helps, f"HELP twice: {name}"
            helps[name] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name in helps, f"TYPE before HELP: {line}"
            assert typ in TYPES and name not in types, line
            types[name] = typ
            continue
        assert not line.startswith("#"), f"stray comment: {line}"
        m = SAMPLE_RE.match(line)
        assert m, f"not name{{labels}} value: {line!r}"
        name, labels, value = m.group(1), parse_labels(m.group(2) or ""), m.group(3)
        fam = name
        if fam not in types:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(base) == "histogram", f"no HELP/TYPE for {name}"
            fam = base
        assert name.startswith("krelay_"), name
        v = float(value)
        assert not math.isnan(v), line
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"sample twice: {line}"
        samples[key] = v
    assert set(helps) == set(types), "every HELP has its TYPE"
    return samples, types


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def check_histogram(samples, name):
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in samples.items()
                      if k[0] == name + "_bucket"))
    assert buckets and buckets[-1][0] == math.inf, buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"buckets not cumulative: {buckets}"
    assert buckets[-1][1] == get(samples, name + "_count")
    assert get(samples, name + "_sum") >= 0
    return get(samples, name + "_count")


def scrape(port, path="/metrics", method="GET", host="127.0.0.1"):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def metrics(port):
    status, headers, body = scrape(port)
    assert status == 200, (status, body)
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body.encode())
    return parse_exposition(body)[0]


def raw(port, data, wait=10):
    """Sends data, returns everything the endpoint says until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def metrics_relay(relay_factory, conf="", start=True, **kw):
    port = free_port()
    r = relay_factory(f"MetricsListen=127.0.0.1:{port}\n{conf}", start=start, **kw)
    r.metrics_port = port
    if start:
        r.wait_log(rf"metrics on http://127\.0\.0\.1:{port}/metrics")
    return r


def start_source(port, certs, n, rcpts):
    return subprocess.Popen([BENCH, "source", "--to", f"127.0.0.1:{port}", "--messages", str(n),
                             "--size", "mix:1k=50,4k=40,100k=10", "--concurrency", "4",
                             "--per-conn", "10", "--rcpts", str(rcpts), "--tls", "starttls",
                             "--ca", str(certs.ca), "--timeout", "120", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


COUNTERS = ["krelay_messages_received_total", "krelay_messages_relayed_total",
            "krelay_received_bytes_total", "krelay_relayed_bytes_total"]


@pytest.mark.parametrize("mode", ["background", "interactive"])
def test_counters_agree_with_source_and_sink(relay_factory, certs, sinks, mode):
    # interactive: each message relayed before its reply, never stored
    n, rcpts = 300, 2
    sink = sinks("--verify", certs=certs, timeout=180)
    relay = metrics_relay(relay_factory, f"SmartHost=[127.0.0.1]:{sink.port}\n"
                          f"TLSPolicy=encrypt\nMaxMessageSize=64m\nDeliveryMode={mode}\n")
    port = relay.metrics_port
    before = metrics(port)
    assert get(before, "krelay_up") == 1 and get(before, "krelay_workers") == 2
    assert abs(get(before, "krelay_start_time_seconds") - time.time()) < 120
    for name in COUNTERS:
        assert get(before, name) == 0, name

    src = start_source(relay.port, certs, n, rcpts)
    last, scrapes = before, 0
    while src.poll() is None or scrapes < 3:  # scrapes while the load runs
        s = metrics(port)  # parsed strictly, every time
        for name in COUNTERS:
            assert get(s, name) >= get(last, name), f"{name} went down"
        last, scrapes = s, scrapes + 1
        time.sleep(0.1)
    out, err = src.communicate(timeout=60)
    clean(err)
    r = json.loads(out)
    assert r["messages_ok"] == n and r["errors"] == 0, r
    # a delivery is counted once its outcome is durable, a moment after the
    # sink has it; its connections then wait 2 s for another message, seen
    # in the queue's picture (published once a second)
    wait_for(lambda: get(metrics(port), "krelay_messages_relayed_total") == n, 60,
             "the relayed counter to reach the messages sent")
    dest = f"[127.0.0.1]:{sink.port}"
    wait_for(lambda: get(metrics(port), "krelay_destination_connections", destination=dest),
             5, "connections open to the sink in the picture")
    res = sink.finish(timeout=60)
    assert res["checksum_errors"] == 0
    time.sleep(1.5)  # a queue picture without the messages, and nothing more counted
    s = metrics(port)
    assert get(s, "krelay_messages_received_total") == r["messages_ok"] == n
    assert get(s, "krelay_messages_relayed_total") == res["messages"] == n
    assert get(s, "krelay_recipients_total", outcome="relayed") == n * rcpts
    assert get(s, "krelay_recipients_total", outcome="deferred") == 0
    assert get(s, "krelay_recipients_total", outcome="bounced") == 0
    # the content as stored (with krelay's Received: line), each message
    # sent once as stored; the sink counts it without any dot-stuffing
    assert get(s, "krelay_received_bytes_total") > r["bytes"]
    assert get(s, "krelay_relayed_bytes_total") == get(s, "krelay_received_bytes_total")
    assert get(s, "krelay_relayed_bytes_total") >= res["bytes"] > r["bytes"]
    assert get(s, "krelay_connections_opened_total", direction="outbound") == \
        res["connections"]
    # the readiness check of the test harness connected once too
    assert get(s, "krelay_connections_opened_total", direction="inbound") >= r["connections"]
    # TLS both ways (the source's STARTTLS, TLSPolicy=encrypt to the sink);
    # kTLS on or off, each handshake once
    tls_in = sum(v for (name, labels), v in s.items()
                 if name == "krelay_tls_connections_total" and ("direction", "inbound") in labels)
    tls_out = sum(v for (name, labels), v in s.items()
                  if name == "krelay_tls_connections_total" and ("direction", "outbound") in labels)
    assert tls_in == r["connections"] and tls_out == res["tls_connections"] == res["connections"]
    for d, path, total in (("inbound", "tx", tls_in), ("inbound", "rx", tls_in),
                           ("outbound", "tx", tls_out)):
        on = get(s, "krelay_ktls_connections_total", direction=d, path=path, state="on")
        off = get(s, "krelay_ktls_connections_total", direction=d, path=path, state="off")
        assert on + off == total, (d, path, on, off, total)
    assert get(s, "krelay_connections_open", direction="inbound") == 0
    # the fsyncs that made the messages durable (interactive: none needed)
    fsyncs = check_histogram(s, "krelay_spool_fsync_seconds")
    assert fsyncs > 0 if mode == "background" else fsyncs >= 0
    # the queue is empty again
    assert get(s, "krelay_queue_messages") == 0 and get(s, "krelay_queue_recipients") == 0
    assert not [k for k in s if k[0] == "krelay_queue_destination_recipients"]
    # and it stays exact: no message was counted twice
    time.sleep(1)
    assert get(metrics(port), "krelay_messages_relayed_total") == n


def test_queue_by_destination_and_hostile_names(relay_factory):
    """Messages waiting at a next hop that refuses connections; then a
    queue file whose recipient domain has a quote, a backslash and a
    newline (no SMTP client can send one: it comes from a file)."""
    dead = free_port()
    relay = metrics_relay(relay_factory, "TransportTable=TABLE\nRetrySchedule=1h\n",
                          tls=False, start=False)
    table = relay.tmp / "transport"
    table.write_text(f"waiting.example [127.0.0.1]:{dead}\n")
    dns = free_port()
    text = relay.conf.read_text().replace("TABLE", str(table))
    # no smart host: the hostile domain is routed by itself (an MX lookup
    # from a DNS server that is not there fails at once)
    text = re.sub(r"(?m)^SmartHost=.*\n", "", text) + f"DNSServer=127.0.0.1:{dns}\n"
    relay.conf.write_text(text)
    relay.start()
    import smtplib
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as c:
        for i in range(3):
            c.sendmail("s@example.org", [f"r{k}@waiting.example" for k in range(i + 1)],
                       b"Subject: wait\r\n\r\nbody\r\n")
    dest = f"[127.0.0.1]:{dead}"

    def waiting():
        s = metrics(relay.metrics_port)
        return s if get(s, "krelay_queue_destination_recipients", destination=dest) == 6 else None

    s = wait_for(waiting, 20, "6 recipients waiting for the dead next hop")
    assert get(s, "krelay_queue_destination_messages", destination=dest) == 3
    assert 0 <= get(s, "krelay_queue_destination_oldest_age_seconds", destination=dest) < 60
    assert get(s, "krelay_queue_messages") == 3 and get(s, "krelay_queue_recipients") == 6
    assert get(s, "krelay_recipients_total", outcome="deferred") == 6

    # a queue file with a hostile recipient domain, found at start
    relay.stop()
    hostile = 'x@ev"il\\dom%0Aline.example'  # as the envelope writes it: %0A is a newline
    qid = "0D00000000BADBAD"
    body = b"Subject: hostile\r\n\r\nhi\r\n"
    env = (f"krelay-envelope 1\nid {qid}\narrival {int(time.time()) - 30}\nsize {len(body)}\n"
           "dotlines 0\ncrlf 1\n8bit 0\nsmtputf8 0\nbody -\nclient 127.0.0.1\nhelo t\ntls \n"
           f"clientcert \nsender s@example.org\nrcpt P {hostile}\nend\n").encode()
    trailer = b"\nKRELAY-ENV %016x %08x\n" % (len(body), len(env))
    (relay.queue / "queue" / qid).write_bytes(body + env + trailer)
    relay.start()
    name = 'ev"il\\dom\nline.example:25'
    escaped = 'ev\\"il\\\\dom\\nline.example:25'

    def hostile_there():
        status, _, text = scrape(relay.metrics_port)
        return text if f'destination="{escaped}"' in text else None

    text = wait_for(hostile_there, 20, "the hostile destination in a scrape")
    s, _ = parse_exposition(text)  # strict: the escaping keeps every line whole
    assert get(s, "krelay_queue_destination_recipients", destination=name) == 1
    assert get(s, "krelay_queue_destination_recipients", destination=dest) == 6
    assert 25 <= get(s, "krelay_queue_destination_oldest_age_seconds", destination=name) < 120
    # the raw line: quote, backslash and newline escaped, on one line
    assert f'krelay_queue_destination_messages{{destination="{escaped}"}} 1\n' in text


def test_http_answers(relay_factory):
    relay = metrics_relay(relay_factory, tls=False)
    port = relay.metrics_port
    status, headers, body = scrape(port, "/")
    assert status == 404 and headers["Connection"] == "close"
    assert scrape(port, "/metrics/x")[0] == 404
    assert scrape(port, "/metrics?name=krelay_up")[0] == 200
    status, headers, body = scrape(port, method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert scrape(port, method="PUT")[0] == 405
    status, headers, body = scrape(port, method="HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 1000
    # malformed: 400, then closed
    for bad in (b"garbage\r\n\r\n", b"GET /metrics HTTP/2.0\r\n\r\n", b"\x16\x03\x01\x02\x00",
                b"GET /metrics\r\n\r\n", b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n"):
        out = raw(port, bad)
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (bad, out)
    # a head over 8 KiB: 400 at the limit, without waiting for its end
    out = raw(port, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000)
    assert out.startswith(b"HTTP/1.1 400 "), out[:100]
    # an HTTP/1.0 request, bare LFs: fine
    out = raw(port, b"GET /metrics HTTP/1.0\n\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"\nkrelay_up 1\n" in out
    # the endpoint is only that: SMTP still works, and the scrape after all this
    assert get(metrics(port), "krelay_up") == 1


def test_silent_clients_do_not_block_scrapes(relay_factory):
    relay = metrics_relay(relay_factory, tls=False)
    port = relay.metrics_port
    silent = socket.create_connection(("127.0.0.1", port))
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /metr")
    t0 = time.monotonic()
    for _ in range(3):
        assert get(metrics(port), "krelay_up") == 1
    assert time.monotonic() - t0 < 3
    # sixteen at a time: more only push the oldest silent ones out
    crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    assert get(metrics(port), "krelay_up") == 1
    for s in [silent, partial] + crowd:
        s.settimeout(TIMEOUT_S + 5)
    assert silent.recv(100) == b"" and partial.recv(100) == b""  # the oldest went first
    assert time.monotonic() - t0 < TIMEOUT_S - 2

    # and the read timeout: one that says nothing is closed after it
    late = socket.create_connection(("127.0.0.1", port))
    late.settimeout(TIMEOUT_S + 10)
    t1 = time.monotonic()
    assert late.recv(100) == b""
    waited = time.monotonic() - t1
    assert TIMEOUT_S - 1 <= waited <= TIMEOUT_S + 5, waited
    for s in [silent, partial, late] + crowd:
        s.close()
    assert get(metrics(port), "krelay_up") == 1


def test_ipv6_reload_and_check(relay_factory):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port()
    relay = relay_factory(f"MetricsListen=[::1]:{port}\n", tls=False)
    c = http.client.HTTPConnection("::1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and b"krelay_up 1" in r.read()
    c.close()
    # krelay check says where; one that takes the SMTP port is an error
    out = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                         text=True)
    assert f"ok     MetricsListen: Prometheus metrics at http://[::1]:{port}/metrics" in out.stdout
    bad = relay.tmp / "bad.conf"
    bad.write_text(relay.conf.read_text() + f"MetricsListen=127.0.0.1:{relay.port}\n")
    out = subprocess.run([KRELAY, "check", "-C", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"MetricsListen=127.0.0.1:{relay.port} takes the port of Listen=127.0.0.1:" \
        f"{relay.port}" in out.stdout
    # a reload that changes it: said, and the running endpoint stays
    other = free_port()
    relay.conf.write_text(relay.conf.read_text().replace(f"[::1]:{port}", f"127.0.0.1:{other}"))
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(r"reload: MetricsListen changed: it takes effect at restart; "
                   r"the running value stays")
    relay.wait_log(r"reload ok")
    c = http.client.HTTPConnection("::1", port, timeout=10)
    c.request("GET", "/metrics")
    assert c.getresponse().status == 200
    c.close()
