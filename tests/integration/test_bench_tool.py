"""krelay-bench: its sink against clients nobody here wrote (smtplib, swaks, a
raw BDAT session), its source against its sink (every TLS mode, sizes,
recipients, messages per connection, pipelining on and off, BDAT), the source
through the real relay into a verifying sink, client certificates, and its
errors.  Counts and checksums only: nothing here measures speed.

The binary is the ASan+UBSan build (build/test/krelay-bench, or
$KRELAY_BENCH_BIN); a sanitizer report or an unclean exit fails the test.
"""
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from helpers import stop_process, wait_for

BENCH = os.environ.get("KRELAY_BENCH_BIN", str(ROOT / "build" / "test" / "krelay-bench"))
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")

pytestmark = pytest.mark.skipif(not Path(BENCH).exists(), reason=f"{BENCH} not built")


def clean(stderr):
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr[-4000:]


class Sink:
    """krelay-bench sink on kernel-chosen loopback ports (--ready-file)."""

    def __init__(self, tmp: Path, *args, smtps=False, certs=None, expect=None, timeout=60):
        self.ready = tmp / f"sink-{time.monotonic_ns()}.ready"
        cmd = [BENCH, "sink", "--listen", "127.0.0.1:0", "--json", "--ready-file",
               str(self.ready), "--timeout", str(timeout)]
        if certs is not None:
            cmd += ["--cert", str(certs.server_crt), "--key", str(certs.server_key)]
        if smtps:
            cmd += ["--smtps", "127.0.0.1:0"]
        if expect is not None:
            cmd += ["--expect", str(expect)]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=ENV, text=True)
        wait_for(lambda: self.ready.exists() or self.proc.poll() is not None, 20, "sink ready")
        assert self.proc.poll() is None, self.proc.communicate()
        ports = dict(line.split() for line in self.ready.read_text().splitlines())
        self.port = int(ports["listen"].rsplit(":", 1)[1])
        self.smtps_port = int(ports["smtps"].rsplit(":", 1)[1]) if smtps else None
        self.result = None
        self.stderr = ""

    def finish(self, timeout=60, signal_it=True):
        """Stops the sink (SIGTERM unless it exits by itself) and returns its JSON."""
        if signal_it and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, self.stderr = self.proc.communicate()
            raise AssertionError(f"sink did not stop: {self.stderr[-2000:]}")
        clean(self.stderr)
        self.result = json.loads(out)
        return self.result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def sinks(tmp_path):
    made = []

    def make(*args, **kw):
        s = Sink(tmp_path, *args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def source(port, *args, messages=20, size="4k", concurrency=3, timeout=120, check=True):
    cmd = [BENCH, "source", "--to", f"127.0.0.1:{port}", "--messages", str(messages),
           "--size", size, "--concurrency", str(concurrency), "--json", "--timeout", "90",
           *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    clean(p.stderr)
    if check:
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p, (json.loads(p.stdout) if p.stdout.strip() else None)


def message(size="4k", seq=1):
    """One message as the source sends it (unstuffed, CRLF)."""
    p = subprocess.run([BENCH, "message", "--size", size, "--seq", str(seq)],
                       capture_output=True, env=ENV, timeout=30, check=True)
    clean(p.stderr.decode())
    return p.stdout


def corrupt(msg: bytes):
    """The same message with one body byte changed (its X-Bench now wrong)."""
    i = msg.index(b"\r\n\r\n") + 10
    return msg[:i] + (b"X" if msg[i:i + 1] != b"X" else b"Y") + msg[i + 1:]


def client_ctx(certs):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    return ctx


# ---- the sink, against other people's clients -----------------------------------

def test_sink_counts_smtplib_plain_starttls_smtps(sinks, certs):
    sink = sinks("--verify", certs=certs, smtps=True)
    msgs = [message("4k", 1), message("100k", 2), message("0", 3), message("1k", 4)]
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.ehlo()
        assert s.has_extn("pipelining") and s.has_extn("chunking") and s.has_extn("starttls")
        s.sendmail("a@example.org", ["b@example.com"], msgs[0])
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.starttls(context=client_ctx(certs))
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@example.org", ["b@example.com", "c@example.com"], msgs[1])
        s.sendmail("a@example.org", ["b@example.com"], msgs[2])
    with smtplib.SMTP_SSL("127.0.0.1", sink.smtps_port, timeout=30,
                          context=client_ctx(certs)) as s:
        s.sendmail("a@example.org", ["b@example.com"], msgs[3])
    r = sink.finish()
    assert r["messages"] == 4 and r["checksum_errors"] == 0
    assert r["bytes"] == sum(len(m) for m in msgs)
    assert r["connections"] == 3 and r["tls_connections"] == 2
    assert r["timed_out"] is False and sink.proc.returncode == 0
    # kTLS is counted, or (and only then) the sink says why the kernel could
    # not take it: never both, never neither.
    counted = r["ktls_rx_connections"] + r["ktls_tx_connections"]
    assert (counted > 0) != bool(r["ktls_why"]), r
    assert counted <= r["tls_connections"] * 2, r


def test_sink_verify_rejects_a_corrupted_body(sinks, certs):
    sink = sinks("--verify")
    good, bad = message("4k", 7), corrupt(message("4k", 8))
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.sendmail("a@example.org", ["b@example.com"], good)
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@example.org", ["b@example.com"], bad)
        assert e.value.smtp_code == 554 and b"checksum" in e.value.smtp_error
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@example.org", ["b@example.com"], b"Subject: no header\r\n\r\nhi\r\n")
        assert e.value.smtp_code == 554 and b"X-Bench" in e.value.smtp_error
        s.sendmail("a@example.org", ["b@example.com"], good)  # the session goes on
    r = sink.finish()
    assert r["messages"] == 2 and r["checksum_errors"] == 2
    assert "checksum mismatch: seq 8" in sink.stderr


def test_sink_discard_counts_without_checking(sinks):
    sink = sinks("--discard", "--expect", "1")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.sendmail("a@example.org", ["b@example.com"], corrupt(message("4k", 1)))
    r = sink.finish(signal_it=False)  # --expect 1 ends it
    assert r["messages"] == 1 and r["checksum_errors"] == 0 and sink.proc.returncode == 0


def stuffed(msg: bytes):
    return (b"." if msg.startswith(b".") else b"") + msg.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def test_sink_swaks_pipelining_and_starttls(sinks, certs, tmp_path):
    sink = sinks("--verify", certs=certs)
    msgs = [message("20k", 11), message("4k", 12)]
    for m, tls in zip(msgs, ([], ["--tls"])):
        data = tmp_path / "data.eml"
        data.write_bytes(stuffed(m))  # --no-data-fixup: sent as it is, with its "."
        p = subprocess.run(["swaks", "--server", f"127.0.0.1:{sink.port}", "--pipeline",
                            "--to", "b@example.com", "--from", "a@example.org",
                            "--no-data-fixup", "--data", f"@{data}", *tls],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "250 2.0.0 Ok: queued" in p.stdout
    r = sink.finish()
    assert r["messages"] == 2 and r["checksum_errors"] == 0
    assert r["bytes"] == sum(len(m) for m in msgs) and r["tls_connections"] == 1


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        assert line, "connection closed"
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def test_sink_bdat_chunks_pipelined(sinks):
    sink = sinks("--verify")
    m = message("50k", 21)
    with socket.create_connection(("127.0.0.1", sink.port), timeout=30) as s:
        f = s.makefile("rb")
        assert read_reply(f)[0].startswith(b"220")
        s.sendall(b"EHLO raw.test\r\n")
        assert b"250-CHUNKING\r\n" in read_reply(f)
        a, b = m[:1000], m[1000:]
        # MAIL, RCPT and two chunks (the last with LAST) in one write; then a
        # second message whose chunk is corrupted, and a zero-length LAST.
        s.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
                  + b"BDAT %d\r\n" % len(a) + a + b"BDAT %d LAST\r\n" % len(b) + b
                  + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
                  + b"BDAT %d\r\n" % len(m) + corrupt(m) + b"BDAT 0 LAST\r\n"
                  + b"BDAT 3 LAST\r\nabcQUIT\r\n")
        replies = [read_reply(f)[0][:3] for _ in range(10)]
        assert replies == [b"250"] * 7 + [b"554", b"503", b"221"], replies
    r = sink.finish()
    assert r["messages"] == 1 and r["checksum_errors"] == 1 and r["bytes"] == len(m)


def test_sink_no_chunking_and_bad_commands(sinks):
    sink = sinks("--no-chunking")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as s:
        s.ehlo()
        assert not s.has_extn("chunking") and not s.has_extn("starttls")
        assert s.docmd("BDAT 10 LAST")[0] == 502
        assert s.docmd("STARTTLS")[0] == 502
        assert s.docmd("DATA")[0] == 554
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 503
        assert s.docmd("FOO")[0] == 500
        assert s.noop()[0] == 250
    r = sink.finish()
    assert r["messages"] == 0 and r["connections"] == 1


# ---- the source, into the sink ----------------------------------------------------

CASES = [
    # tls, size, extra source args, messages, concurrency
    ("none", "4k", ["--per-conn", "10"], 40, 3),
    ("none", "0", ["--rcpts", "3", "--per-conn", "1", "--no-pipelining"], 12, 4),
    ("none", "mix:1k=50,20k=40,200k=10", ["--bdat", "--per-conn", "0"], 30, 2),
    ("starttls", "1m", ["--per-conn", "1"], 6, 2),
    ("starttls", "4k", ["--rcpts", "3", "--no-pipelining", "--bdat"], 20, 2),
    ("starttls", "64k", ["--tls-max", "1.2", "--bdat"], 10, 2),
    ("smtps", "mix:4k=70,100k=25,1m=5", ["--per-conn", "10", "--rcpts", "2"], 30, 3),
]


@pytest.mark.parametrize("tls,size,extra,n,conc", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'_'.join(c[2])}" for c in CASES])
def test_source_to_sink(sinks, certs, tls, size, extra, n, conc):
    sink = sinks("--verify", certs=certs, smtps=True, expect=n)
    port = sink.smtps_port if tls == "smtps" else sink.port
    tls_args = [] if tls == "none" else ["--tls", tls, "--ca", str(certs.ca)]
    _, r = source(port, *tls_args, *extra, messages=n, size=size, concurrency=conc)
    assert r["messages_ok"] == n and r["errors"] == 0 and r["error_samples"] == []
    assert r["tls"] == tls and r["concurrency"] == conc and r["size"] == size
    assert r["start_unix"] <= r["end_unix"] and r["seconds"] > 0
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"] \
        <= r["latency_ms"]["max"]
    assert r["cpu_s"] > 0 and r["cpu_us_per_msg"] > 0 and r["msgs_per_s"] > 0
    s = sink.finish(signal_it=False)  # --expect n ends it
    assert sink.proc.returncode == 0 and s["timed_out"] is False
    assert s["messages"] == n and s["checksum_errors"] == 0
    assert s["bytes"] == r["bytes"]
    per_conn = int(extra[extra.index("--per-conn") + 1]) if "--per-conn" in extra else 100
    if per_conn:
        assert r["connections"] >= -(-n // per_conn)
    assert s["connections"] == r["connections"]
    assert s["tls_connections"] == (0 if tls == "none" else s["connections"])
    if size == "0":
        assert s["bytes"] < n * 400  # headers only


def test_sink_threads_share_the_port(sinks, certs):
    n = 60
    sink = sinks("--verify", "--threads", "3", certs=certs, expect=n)
    _, r = source(sink.port, "--tls", "starttls", "--per-conn", "2", messages=n, size="3k",
                  concurrency=6)
    s = sink.finish(signal_it=False)
    assert s["threads"] == 3 and s["messages"] == n and s["checksum_errors"] == 0
    assert s["bytes"] == r["bytes"] and s["connections"] == r["connections"] >= n // 2


def test_source_human_output_and_progress(sinks):
    sink = sinks(expect=30)
    p = subprocess.run([BENCH, "source", "--to", f"127.0.0.1:{sink.port}", "--messages", "30",
                        "--size", "2k", "--concurrency", "2", "--progress"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    clean(p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"accepted 30, errors 0 in [0-9.]+ s", p.stdout), p.stdout
    assert "final reply latency: p50" in p.stdout and "us per message" in p.stdout
    assert re.search(r"30/30 done, 0 errors", p.stderr), p.stderr
    assert sink.finish(signal_it=False)["messages"] == 30


# ---- through the relay --------------------------------------------------------------

def test_source_through_krelay_to_verifying_sink(sinks, certs, relay_factory):
    n = 40
    sink = sinks("--verify", certs=certs, expect=n, timeout=120)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port}\nTLSPolicy=encrypt\n"
                          "MaxMessageSize=64m\n")
    _, r = source(relay.port, "--tls", "starttls", "--ca", str(certs.ca), "--rcpts", "2",
                  messages=n, size="mix:1k=40,4k=40,300k=20", concurrency=4)
    assert r["messages_ok"] == n and r["errors"] == 0
    s = sink.finish(timeout=90, signal_it=False)  # --expect n: everything arrived
    assert s["messages"] == n and s["checksum_errors"] == 0
    assert s["tls_connections"] >= 1 and s["tls_connections"] == s["connections"]
    assert s["bytes"] > r["bytes"]  # krelay's Received headers


# ---- client certificates -------------------------------------------------------------

def test_sink_verify_client_needs_a_verified_certificate(sinks, certs):
    sink = sinks("--verify", "--ca", str(certs.ca), "--verify-client", certs=certs,
                 smtps=True)
    p, r = source(sink.port, "--tls", "starttls", messages=3, concurrency=1, check=False)
    assert p.returncode == 1 and r["messages_ok"] == 0 and r["errors"] == 3
    assert any("MAIL: 530" in e for e in r["error_samples"]), r["error_samples"]
    # A certificate from a CA the sink does not trust is refused the same way.
    p, r = source(sink.smtps_port, "--tls", "smtps", "--cert", str(certs.rogue / "client.crt"),
                  "--key", str(certs.rogue / "client.key"), messages=2, concurrency=1,
                  check=False)
    assert p.returncode == 1 and r["errors"] == 2
    for tls, port in (("starttls", sink.port), ("smtps", sink.smtps_port)):
        _, r = source(port, "--tls", tls, "--ca", str(certs.ca), "--cert",
                      str(certs.client_crt), "--key", str(certs.client_key), messages=5,
                      concurrency=2)
        assert r["messages_ok"] == 5
    s = sink.finish()
    assert s["messages"] == 10 and s["checksum_errors"] == 0


# ---- errors ----------------------------------------------------------------------------

BAD_SOURCE = [
    ([], "--to HOST:PORT is required"),
    (["--to", "127.0.0.1"], "not HOST:PORT"),
    (["--to", "127.0.0.1:25", "--messages", "10", "--size", "4q", "--concurrency", "1"],
     "bad size \"4q\""),
    (["--to", "127.0.0.1:25", "--messages", "10", "--size", "mix:4k=x", "--concurrency", "1"],
     "bad size"),
    (["--to", "127.0.0.1:25", "--messages", "0", "--size", "4k", "--concurrency", "1"],
     "--messages: \"0\""),
    (["--to", "127.0.0.1:25", "--messages", "1", "--size", "4k", "--concurrency", "1",
      "--tls", "ssl"], "--tls: \"ssl\" is not none, starttls or smtps"),
    (["--to", "127.0.0.1:25", "--messages", "1", "--size", "4k", "--concurrency", "1",
      "--frobnicate"], "unknown option --frobnicate"),
    (["--to", "127.0.0.1:25", "--messages", "1", "--size", "4k", "--concurrency"],
     "--concurrency needs a value"),
    (["--to", "127.0.0.1:25", "--messages", "1", "--size", "4k", "--concurrency", "1",
      "--tls", "starttls", "--ca", "/nonexistent/ca.crt"], "CA file /nonexistent/ca.crt"),
]


@pytest.mark.parametrize("args,text", BAD_SOURCE, ids=[t for _, t in BAD_SOURCE])
def test_source_bad_arguments_exit_2(args, text):
    p = subprocess.run([BENCH, "source", *args], capture_output=True, text=True, env=ENV,
                       timeout=30)
    clean(p.stderr)
    assert p.returncode == 2 and text in p.stderr, (p.returncode, p.stderr)
    assert p.stdout == ""


def test_sink_bad_arguments_and_busy_port_exit_2(tmp_path, certs):
    cases = [
        ([], "--listen HOST:PORT (or --smtps HOST:PORT) is required"),
        (["--listen", "127.0.0.1:25", "--smtps", "127.0.0.1:465"], "needs --cert and --key"),
        (["--listen", "127.0.0.1:25", "--verify-client"], "--verify-client needs --ca"),
        (["--listen", "127.0.0.1:25", "--expect", "-3"], "--expect"),
        (["--listen", "nowhere"], "not HOST:PORT"),
        (["--listen", "127.0.0.1:25", "--cert", str(tmp_path / "missing.crt"), "--key",
          str(tmp_path / "missing.key")], "missing.crt"),
    ]
    for args, text in cases:
        p = subprocess.run([BENCH, "sink", *args], capture_output=True, text=True, env=ENV,
                           timeout=30)
        clean(p.stderr)
        assert p.returncode == 2 and text in p.stderr, (args, p.returncode, p.stderr)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([BENCH, "sink", "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, env=ENV, timeout=30)
    clean(p.stderr)
    assert p.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in p.stderr


def test_source_unreachable_target_exit_2():
    port = free_port()
    p = subprocess.run([BENCH, "source", "--to", f"127.0.0.1:{port}", "--messages", "5",
                        "--size", "4k", "--concurrency", "2", "--json"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    clean(p.stderr)
    assert p.returncode == 2
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in p.stderr
    assert p.stdout == ""


def test_sink_timeout_before_expect_exits_1(sinks):
    sink = sinks(expect=5, timeout=1)
    r = sink.finish(timeout=30, signal_it=False)
    assert sink.proc.returncode == 1 and r["timed_out"] is True and r["messages"] == 0


def test_source_timeout_counts_what_is_left_as_errors(tmp_path):
    # A server that greets and then says nothing more.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        p = subprocess.Popen([BENCH, "source", "--to", f"127.0.0.1:{port}", "--messages", "4",
                              "--size", "1k", "--concurrency", "2", "--json", "--timeout", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        conns = []
        for _ in range(2):
            c, _ = srv.accept()
            c.sendall(b"220 silent.test ESMTP\r\n")
            conns.append(c)
        out, err = p.communicate(timeout=60)
        for c in conns:
            c.close()
    clean(err)
    assert p.returncode == 1
    r = json.loads(out)
    assert r["messages_ok"] == 0 and r["errors"] == 4
    assert any("within --timeout 2 s" in e for e in r["error_samples"]), r["error_samples"]
