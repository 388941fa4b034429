"""relay/dns.c and relay/route.c against a real DNS server.

A private dnsmasq on a free loopback port serves a few zones; tests/tools/dnsq
(built with ASan+UBSan, like every test binary) looks names up through c-ares
driven by an io_uring ring, and must exit 0 with no sanitizer report (it frees
everything, the resolver included, before it exits).
"""
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
DNSQ = ROOT / "build" / "test" / "dnsq"
DNSQ_SRCS = ["tests/tools/dnsq.c", "relay/dns.c", "relay/dns_ub.c", "relay/route.c",
             "kernel/ring.c", "kernel/wheel.c"]
DNSQ_DEPS = DNSQ_SRCS + ["relay/dns.h", "relay/dns_int.h", "relay/route.h", "kernel/ring.h"]
CFLAGS = ["-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-Wshadow",
          "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wno-unused-parameter", "-O1", "-g",
          "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
          "-fno-sanitize-recover=undefined", "-Ikernel", "-Irelay"]
DNSMASQ = "/usr/sbin/dnsmasq"
LONG_MX = [f"a-rather-long-mail-exchanger-name-number-{i:02d}.many.test" for i in range(1, 21)]


@pytest.fixture(scope="session")
def dnsq():
    """build/test/dnsq, rebuilt when missing or older than its sources."""
    newest = max((ROOT / p).stat().st_mtime for p in DNSQ_DEPS)
    if not DNSQ.exists() or DNSQ.stat().st_mtime < newest:
        DNSQ.parent.mkdir(parents=True, exist_ok=True)
        tmp = DNSQ.with_name(f"dnsq.tmp{os.getpid()}")
        r = subprocess.run(["cc", *CFLAGS, "-o", str(tmp), *DNSQ_SRCS, "-lcares", "-lunbound", "-luring"],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f"building dnsq failed:\n{r.stdout}{r.stderr}"
        os.replace(tmp, DNSQ)
    return DNSQ


def v6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_dns_port(hosts):
    """A port free for both UDP and TCP on every address in hosts."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        socks = []
        try:
            for h in hosts:
                fam = socket.AF_INET6 if ":" in h else socket.AF_INET
                for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(fam, typ)
                    socks.append(s)
                    s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port for dnsmasq")


class DnsServer:
    def __init__(self, tmp: Path):
        self.hosts = ["127.0.0.1"] + (["::1"] if v6_loopback() else [])
        self.port = free_dns_port(self.hosts)
        self.addr = f"127.0.0.1:{self.port}"
        self.log = tmp / "dnsmasq.log"
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--pid-file=", "--log-facility=-", "--log-queries",
                f"--port={self.port}", "--bind-interfaces",
                *[f"--listen-address={h}" for h in self.hosts],
                # authoritative for .test: unknown names are NXDOMAIN,
                # known names without the asked type are NODATA
                "--local=/test/",
                "--mx-host=example.test,mx1.example.test,10",
                "--mx-host=example.test,mx2.example.test,20",
                "--host-record=mx1.example.test,127.0.0.2",
                "--host-record=mx2.example.test,127.0.0.3,::1",
                "--host-record=nomx.test,127.0.0.4",
                # one IPv4 and one IPv6 address per --host-record
                "--host-record=multi.test,127.0.0.5,::5",
                "--host-record=multi.test,127.0.0.6,::6",
                "--host-record=v6only.test,::7",
                # RFC 7505 null MX, two ways: dnsmasq's own syntax and the
                # raw record (preference 0, the root name)
                "--mx-host=nullmx.test,.,0",
                "--dns-rr=nullrr.test,15,000000",
                # TXT: one record of two strings (joined), and a second one
                "--txt-record=_mta-sts.example.test,v=STSv1; ,id=20261204",
                "--txt-record=_mta-sts.example.test,other",
                "--mx-host=eq.test,a.eq.test,10",
                "--mx-host=eq.test,b.eq.test,10",
                "--mx-host=eq.test,backup.eq.test,50",
                "--host-record=a.eq.test,127.0.1.1",
                "--host-record=b.eq.test,127.0.1.2",
                "--host-record=backup.eq.test,127.0.1.3",
                # an answer too big for 512-byte UDP: truncated, then TCP
                *[f"--mx-host=many.test,{h},{i}" for i, h in enumerate(LONG_MX, 1)],
                # more exchangers than DNS_MX_MAX (32), least preferred first
                *[f"--mx-host=big.test,mx{i}.big.test,{i}" for i in range(40, 0, -1)]]
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dnsmasq exited {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError(f"dnsmasq did not start:\n{self.logs()}")
                time.sleep(0.05)

    def logs(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        stop_process(self.proc, self._out)


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    server = DnsServer(tmp_path_factory.mktemp("dnsmasq"))
    yield server
    server.stop()


def run(dnsq, server, what, name):
    """Runs dnsq; returns its output lines and how long it took."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    t0 = time.monotonic()
    p = subprocess.run([str(dnsq), server, what, name], capture_output=True, text=True,
                       timeout=30, env=env)
    elapsed = time.monotonic() - t0
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr[-4000:]
    assert p.returncode == 0, f"dnsq exited {p.returncode}:\n{p.stdout}{p.stderr}"
    assert p.stderr == "", p.stderr
    return p.stdout.splitlines(), elapsed


def test_mx_records_as_answered(dnsq, dns):
    out, _ = run(dnsq, dns.addr, "mx", "example.test")
    assert out[0] == "status OK"
    assert sorted(out[1:]) == ["mx 10 mx1.example.test", "mx 20 mx2.example.test"]
    # case and a trailing dot make no difference
    out, _ = run(dnsq, dns.addr, "mx", "EXAMPLE.Test.")
    assert sorted(out[1:]) == ["mx 10 mx1.example.test", "mx 20 mx2.example.test"]


def test_route_orders_mx_by_preference_and_resolves_each(dnsq, dns):
    for _ in range(5):
        out, _ = run(dnsq, dns.addr, "route", "example.test")
        assert out == ["status OK",
                       "mx 10 mx1.example.test", "addr 127.0.0.2",
                       "mx 20 mx2.example.test", "addr ::1", "addr 127.0.0.3"]


def test_addresses_ipv6_first(dnsq, dns):
    out, _ = run(dnsq, dns.addr, "addr", "mx2.example.test")
    assert out == ["status OK", "addr ::1", "addr 127.0.0.3"]
    out, _ = run(dnsq, dns.addr, "addr", "multi.test")
    assert out[0] == "status OK"
    assert sorted(out[1:3]) == ["addr ::5", "addr ::6"]
    assert sorted(out[3:]) == ["addr 127.0.0.5", "addr 127.0.0.6"]
    assert run(dnsq, dns.addr, "addr", "mx1.example.test")[0] == ["status OK", "addr 127.0.0.2"]
    assert run(dnsq, dns.addr, "addr", "v6only.test")[0] == ["status OK", "addr ::7"]


def test_addresses_need_no_lookup_for_literals_and_hosts_file(dnsq, dns):
    assert run(dnsq, dns.addr, "addr", "127.0.0.9")[0] == ["status OK", "addr 127.0.0.9"]
    assert run(dnsq, dns.addr, "addr", "2001:db8::1")[0] == ["status OK", "addr 2001:db8::1"]
    # dnsmasq (no upstream, --no-hosts) cannot answer localhost: the
    # answer is /etc/hosts's, IPv6 first
    v6, v4 = [], []
    for line in Path("/etc/hosts").read_text().splitlines():
        f = line.split("#", 1)[0].split()
        if len(f) >= 2 and "localhost" in (n.lower() for n in f[1:]):
            lst = v6 if ":" in f[0] else v4
            if f"addr {f[0]}" not in lst:
                lst.append(f"addr {f[0]}")
    assert v4 or v6, "/etc/hosts has no localhost line"
    out, _ = run(dnsq, dns.addr, "addr", "localhost")
    assert out[0] == "status OK"
    assert sorted(out[1:1 + len(v6)]) == sorted(v6)
    assert sorted(out[1 + len(v6):]) == sorted(v4)


def test_no_mx_falls_back_to_address_records(dnsq, dns):
    assert run(dnsq, dns.addr, "mx", "nomx.test")[0] == ["status NODATA"]
    out, _ = run(dnsq, dns.addr, "route", "nomx.test")
    assert out == ["status NODATA", "implicit nomx.test", "addr 127.0.0.4"]


def test_txt_records(dnsq, dns):
    out, _ = run(dnsq, dns.addr, "txt", "_mta-sts.example.test")
    assert out[0] == "status OK"
    assert sorted(out[1:]) == ["txt other", "txt v=STSv1; id=20261204"], out
    out, _ = run(dnsq, dns.addr, "txt", "mx1.example.test")
    assert out == ["status NODATA"], out
    out, _ = run(dnsq, dns.addr, "txt", "nothing.example.test")
    assert out == ["status NXDOMAIN"], out


def test_nxdomain_and_nodata(dnsq, dns):
    assert run(dnsq, dns.addr, "mx", "nosuch.test")[0] == ["status NXDOMAIN"]
    assert run(dnsq, dns.addr, "addr", "nosuch.test")[0] == ["status NXDOMAIN"]
    assert run(dnsq, dns.addr, "route", "nosuch.test")[0] == ["status NXDOMAIN"]
    assert run(dnsq, dns.addr, "mx", "a.b.nosuch.test")[0] == ["status NXDOMAIN"]
    # the name exists (it has MX records) but has no address
    assert run(dnsq, dns.addr, "addr", "example.test")[0] == ["status NODATA"]
    # c-ares refuses the name before sending anything: the answer still
    # comes from the ring, not from inside dns_query_* (dnsq checks)
    assert run(dnsq, dns.addr, "mx", "bad..name")[0] == ["status NXDOMAIN"]
    assert run(dnsq, dns.addr, "addr", "bad..name")[0] == ["status NXDOMAIN"]


def test_null_mx(dnsq, dns):
    for domain in ("nullmx.test", "nullrr.test"):
        assert run(dnsq, dns.addr, "mx", domain)[0] == ["status OK", "mx 0 ."]
        assert run(dnsq, dns.addr, "route", domain)[0] == ["status OK", "nullmx"]


def test_equal_preferences_are_shuffled(dnsq, dns):
    orders = {}
    for _ in range(30):
        out, _ = run(dnsq, dns.addr, "route", "eq.test")
        hosts = [line.split()[2] for line in out if line.startswith("mx ")]
        addrs = [line.split()[1] for line in out if line.startswith("addr ")]
        assert sorted(hosts[:2]) == ["a.eq.test", "b.eq.test"]
        assert hosts[2] == "backup.eq.test"
        assert addrs == [{"a.eq.test": "127.0.1.1", "b.eq.test": "127.0.1.2",
                          "backup.eq.test": "127.0.1.3"}[h] for h in hosts]
        orders[tuple(hosts)] = orders.get(tuple(hosts), 0) + 1
        if len(orders) == 2:
            break
    assert len(orders) == 2, f"30 runs, always {orders}"


def test_large_answer_retried_over_tcp(dnsq, dns):
    before = len(re.findall(r"query\[MX\] many\.test", dns.logs()))
    out, _ = run(dnsq, dns.addr, "mx", "many.test")
    assert out[0] == "status OK"
    assert sorted(out[1:]) == sorted(f"mx {i} {h}" for i, h in enumerate(LONG_MX, 1))
    # once over UDP (truncated), once over TCP
    deadline = time.time() + 5
    while len(re.findall(r"query\[MX\] many\.test", dns.logs())) < before + 2:
        assert time.time() < deadline, dns.logs()[-2000:]
        time.sleep(0.05)


def test_more_exchangers_than_fit_keeps_the_most_preferred(dnsq, dns):
    out, _ = run(dnsq, dns.addr, "mx", "big.test")
    assert out[0] == "status OK"
    assert sorted(out[1:]) == sorted(f"mx {i} mx{i}.big.test" for i in range(1, 33))


def test_literal_domains_need_no_mx(dnsq, dns):
    out, _ = run(dnsq, dns.addr, "route", "[127.0.0.5]")
    assert out == ["status OK", "implicit 127.0.0.5", "addr 127.0.0.5"]
    out, _ = run(dnsq, dns.addr, "route", "[IPv6:::1]")
    assert out == ["status OK", "implicit ::1", "addr ::1"]


def test_server_forms(dnsq, dns):
    if "::1" in dns.hosts:
        out, _ = run(dnsq, f"[::1]:{dns.port}", "addr", "mx1.example.test")
        assert out == ["status OK", "addr 127.0.0.2"]
    # a list works too: the first server does not answer, the second does
    out, _ = run(dnsq, f"127.0.0.1:{free_dns_port(['127.0.0.1'])},{dns.addr}", "addr",
                 "mx1.example.test")
    assert out == ["status OK", "addr 127.0.0.2"]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99")
    for bad, why in [("not a server!", "bad IPv4 address"), ("127.0.0.1:99999", "bad port"),
                     ("127.0.0.1:0", "bad port"), ("[::1]:", "bad port"),
                     ("[::1", "missing ']'"), ("[127.0.0.1]:53", "bad IPv6 address"),
                     ("127.0.0.1,", "empty address")]:
        p = subprocess.run([str(dnsq), bad, "mx", "example.test"], capture_output=True,
                           text=True, timeout=10, env=env)
        assert p.returncode == 1, (bad, p.stdout, p.stderr)
        assert p.stderr == f"dnsq: DNSServer '{bad}': {why}\n"


def test_tempfail_when_nothing_listens(dnsq, dns):
    port = free_dns_port(["127.0.0.1"])
    for what in ("mx", "addr", "route"):
        out, elapsed = run(dnsq, f"127.0.0.1:{port}", what, "example.test")
        assert out == ["status TEMPFAIL"]
        assert elapsed < 10


def test_tempfail_when_the_server_never_answers(dnsq, dns):
    # A bound UDP socket nobody reads: no ICMP, so c-ares's own timeouts
    # (the timerfd on the ring) end the query: 2 s, then 4 s.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        out, elapsed = run(dnsq, "127.0.0.1:%d" % hole.getsockname()[1], "mx", "example.test")
    assert out == ["status TEMPFAIL"]
    assert 1.5 < elapsed < 10


def test_dns_free_cancels_outstanding_queries(dnsq, dns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        out, elapsed = run(dnsq, "127.0.0.1:%d" % hole.getsockname()[1], "cancel",
                           "example.test")
    # both callbacks, with TEMPFAIL, from the ring after dns_free returned
    assert sorted(out) == ["cancel addr TEMPFAIL", "cancel mx TEMPFAIL"]
    assert elapsed < 3
