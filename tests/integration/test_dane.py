"""DANE for SMTP (RFC 7672) against a signed zone served by a real nsd.

The zone dane.test is made and signed at test time (ldns-keygen,
ldns-signzone: dnssec_zones.py); nsd serves it on a loopback port, and
krelay's validating resolver (libunbound) forwards there with the zone's KSK
as its trust anchor (DNSServer, DNSSECTrustAnchorFile).  The MX hosts are
krelays on 127.0.0.x, one port, each keeping what it receives:

  127.0.0.2  the fixture's server certificate (CN relay.test, from certs.ca)
  127.0.0.3  a certificate for mx-ta.dane.test from a CA of its own, with
             that CA in the chain it sends
  127.0.0.4  an expired self-signed certificate (a krelay-bench sink: krelay
             itself refuses to start with one)
  127.0.0.5  no TLS at all
  127.0.0.8  a man in the middle in front of 127.0.0.2 that deletes
             STARTTLS from the EHLO reply

Each recipient domain has one MX host; what its records say, and what krelay
must do under TLSPolicy=dane, is in DOMAINS below.  Nothing may ever reach a
host in clear text (or with an unauthenticated peer) where DANE says it must
not: each such case checks the host kept nothing for its recipient.
"""
import re
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import KRELAY, MKCERTS, Relay
from dnssec_zones import Nsd, Zone, tlsa_rdata
from helpers import DELIVERY_RE, wait_for
from test_bench_tool import BENCH
from test_queue_routing import free_port_on, submit, wait_listening

ROOT = Path(__file__).resolve().parents[2]
DNSQ = ROOT / "build" / "test" / "dnsq"

# domain: (MX host, address, TLSA kind, what krelay does under TLSPolicy=dane)
#   TLSA kinds: ee (3 1 1 of the host's key), ta (2 0 1 of its CA), exp (3 1 1
#   of the expired key), wrong (3 1 1 of a key the host does not have), pkix
#   (1 1 1: unusable for SMTP), none, bogus (signature broken), servfail
DOMAINS = {
    "ee.dane.test": ("mx-ee.dane.test", "127.0.0.2", "ee", "dane-ee"),
    "ta.dane.test": ("mx-ta.dane.test", "127.0.0.3", "ta", "dane-ta"),
    "exp.dane.test": ("mx-exp.dane.test", "127.0.0.4", "exp", "dane-ee"),
    "pkix.dane.test": ("mx-pkix.dane.test", "127.0.0.2", "pkix", "encrypt"),
    "notlsa.dane.test": ("mx-notlsa.dane.test", "127.0.0.5", "none", "clear"),
    "wrong.dane.test": ("mx-wrong.dane.test", "127.0.0.2", "wrong", "defer"),
    # DANE-TA checks the name: the certificate is mx-ta's, the MX is not
    "taname.dane.test": ("mx-taname.dane.test", "127.0.0.3", "ta", "defer"),
    "strip.dane.test": ("mx-strip.dane.test", "127.0.0.8", "ee", "defer"),
    "bogus.dane.test": ("mx-bogus.dane.test", "127.0.0.5", "bogus", "defer"),
    "sf.dane.test": ("mx-sf.dane.test", "127.0.0.5", "servfail", "defer"),
}
# an unsigned zone below the signed one: its TLSA records count for nothing
INSECURE = ("mx.insecure.dane.test", "127.0.0.5")


def expired_cert(dir: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired.test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30)).not_valid_after(now - timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return write_pem(dir, "expired", key, cert)


def write_pem(dir: Path, name, key, cert):
    """DIR/NAME.crt and DIR/NAME.key (mode 600), PEM."""
    crt, k = dir / f"{name}.crt", dir / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return crt, k


class StripTls:
    """A man in the middle: forwards a connection to upstream, deleting the
    STARTTLS line from the server's EHLO reply."""

    def __init__(self, addr, port, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.stopped = False
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            u = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, src, dst, strip):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not strip:
                    dst.sendall(data)
                    continue
                buf += data
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                out = [ln for ln in lines if not re.fullmatch(rb"250[- ]STARTTLS", ln, re.I)]
                if out:
                    dst.sendall(b"".join(ln + b"\r\n" for ln in out))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopped = True
        self.sock.close()


# MTA-STS (RFC 8461): domain: (MX host, the policy served, or None for a
# policy host that does not answer, and the TXT id)
STS_ENFORCE = "version: STSv1\nmode: enforce\nmx: mx-ta.dane.test\nmax_age: 86400\n"
STS = {
    "sts-enf.dane.test": ("mx-ta.dane.test", STS_ENFORCE, "1"),
    # the policy does not name the MX host: not gone to
    "sts-badmx.dane.test": ("mx-ta.dane.test",
                            "version: STSv1\nmode: enforce\nmx: *.example.org\nmax_age: 600\n",
                            "1"),
    # the MX host's certificate is not from the CAs MTA-STS trusts
    "sts-badcert.dane.test": ("mx-ee.dane.test",
                              "version: STSv1\nmode: enforce\nmx: mx-ee.dane.test\n"
                              "max_age: 600\n", "1"),
    # the same in mode testing: delivered as before
    "sts-testing.dane.test": ("mx-ee.dane.test",
                              "version: STSv1\nmode: testing\nmx: mx-ee.dane.test\n"
                              "max_age: 600\n", "1"),
    # mode none: nothing changes (the certificate is not checked)
    "sts-none.dane.test": ("mx-ee.dane.test",
                           "version: STSv1\nmode: none\nmax_age: 600\n", "1"),
    # served with the wrong Content-Type: no policy
    "sts-ctype.dane.test": ("mx-ee.dane.test", STS_ENFORCE, "1"),
    # the policy host does not answer: a cached policy (seeded by the test)
    # stays in force; without one, there is no policy
    "sts-cached.dane.test": ("mx-ta.dane.test", None, "2"),
    "sts-down.dane.test": ("mx-ee.dane.test", None, "1"),
}


class StsWorld:
    """The HTTPS policy host (Python's http.server with ssl) on 127.0.0.9:443,
    with a certificate for every mta-sts.DOMAIN from the CA of mx-ta's
    certificate, which is also MTASTSCAFile; sts-*-down/cached resolve to
    127.0.0.10, where nothing listens."""

    def __init__(self, tmp: Path, ta: Path):
        import http.server
        import ssl
        from cryptography.x509.oid import ExtendedKeyUsageOID
        self.ca = ta / "ca.crt"
        ca_key = serialization.load_pem_private_key((ta / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(timezone.utc)
        names = [x509.DNSName(f"mta-sts.{d}") for d in STS] + [x509.DNSName("tlsrpt.dane.test")]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mta-sts")]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        crt, k = write_pem(tmp, "mta-sts", key, cert)
        self.fetches = []
        self.posts = []
        world = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = self.headers.get("Host", "").split(":")[0]
                dom = host.removeprefix("mta-sts.")
                world.fetches.append((dom, self.path))
                policy = STS.get(dom, (None, None, None))[1]
                if self.path != "/.well-known/mta-sts.txt" or policy is None:
                    self.send_error(404)
                    return
                body = policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if dom.startswith("sts-ctype")
                                 else "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                world.posts.append((self.headers.get("Host", ""), self.path,
                                    self.headers.get("Content-Type", ""), self.rfile.read(n)))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.9", 443), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, k)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def records(self):
        out = []
        for dom, (mx, _, txt_id) in STS.items():
            policy_addr = "127.0.0.10" if dom in ("sts-cached.dane.test", "sts-down.dane.test") \
                else "127.0.0.9"
            out += [f"{dom}. 300 IN MX 10 {mx}.",
                    f'_mta-sts.{dom}. 300 IN TXT "v=STSv1; id={txt_id};"',
                    f"mta-sts.{dom}. 300 IN A {policy_addr}"]
        # TLS reports for ee.dane.test: by mail (to a krelay peer) and HTTPS
        out += ['_smtp._tls.ee.dane.test. 300 IN TXT "v=TLSRPTv1; '
                'rua=mailto:tlsrpt@report.dane.test,https://tlsrpt.dane.test/v1/report"',
                "report.dane.test. 300 IN MX 10 mx-notlsa.dane.test.",
                "tlsrpt.dane.test. 300 IN A 127.0.0.9",
                '_smtp._tls.wrong.dane.test. 300 IN TXT "v=spf1 -all"']
        return out

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class World:
    """The MX hosts, the man in the middle and nsd with the signed zones."""

    def __init__(self, tmp: Path, certs):
        self.tmp = tmp
        self.port = free_port_on(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5",
                                   "127.0.0.8"])
        ta = tmp / "ta"
        subprocess.run([MKCERTS, str(ta), "--name", "mx-ta.dane.test"], check=True,
                       capture_output=True)
        chain = ta / "chain.crt"
        chain.write_bytes((ta / "server.crt").read_bytes() + (ta / "ca.crt").read_bytes())
        exp_crt, exp_key = expired_cert(tmp)
        other = tmp / "other"
        subprocess.run([MKCERTS, str(other), "--name", "other.test"], check=True,
                       capture_output=True)
        self.peers = {}
        self.sink = subprocess.Popen(
            [BENCH, "sink", "--listen", f"127.0.0.4:{self.port}", "--cert", str(exp_crt), "--key",
             str(exp_key), "--timeout", "900"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_listening("127.0.0.4", self.port)
        for addr, crt, key in [("127.0.0.2", certs.server_crt, certs.server_key),
                               ("127.0.0.3", chain, ta / "server.key"), ("127.0.0.5", None, None)]:
            conf = f"Listen={addr}:{self.port}\n"
            if crt:
                conf += f"ServerCertFile={crt}\nServerKeyFile={key}\n"
            p = Relay(tmp / f"peer-{addr}", certs, conf, tls=False)
            p.start()
            wait_listening(addr, self.port)
            self.peers[addr] = p
        self.mitm = StripTls("127.0.0.8", self.port, ("127.0.0.2", self.port))
        rdata = {
            "ee": tlsa_rdata(certs.server_crt.read_bytes(), 3, 1, 1),
            "ta": tlsa_rdata((ta / "ca.crt").read_bytes(), 2, 0, 1),
            "exp": tlsa_rdata(exp_crt.read_bytes(), 3, 1, 1),
            "wrong": tlsa_rdata((other / "server.crt").read_bytes(), 3, 1, 1),
            "pkix": tlsa_rdata(certs.server_crt.read_bytes(), 1, 1, 1),
            "bogus": tlsa_rdata(certs.server_crt.read_bytes(), 3, 1, 1),
        }
        recs, corrupt, zones = [], [], []
        for dom, (mx, addr, kind, _) in DOMAINS.items():
            recs += [f"{dom}. 300 IN MX 10 {mx}.", f"{mx}. 300 IN A {addr}"]
            tlsa = f"_{self.port}._tcp.{mx}."
            if kind in rdata:
                recs.append(f"{tlsa} 300 IN TLSA {rdata[kind]}")
            if kind == "bogus":
                corrupt.append((tlsa, "TLSA"))
            if kind == "servfail":
                zones.append(Zone(f"_tcp.{mx}.", servfail=True))
        ins_mx, ins_addr = INSECURE
        self.sts = StsWorld(tmp, ta)
        recs += self.sts.records()
        zones.insert(0, Zone("dane.test.", recs, corrupt=corrupt))
        zones.append(Zone("insecure.dane.test.", [
            f"insecure.dane.test. 300 IN MX 10 {ins_mx}.", f"{ins_mx}. 300 IN A {ins_addr}",
            f"_{self.port}._tcp.{ins_mx}. 300 IN TLSA {rdata['ee']}"], signed=False))
        self.nsd = Nsd(tmp, zones)
        self.transport = tmp / "transport"
        self.transport.write_text("".join(f"{d} {d}:{self.port}\n"
                                          for d in [*DOMAINS, "insecure.dane.test", *STS,
                                                    "report.dane.test"]))

    def relay_conf(self, extra=""):
        return (f"DNSServer={self.nsd.addr}\nDNSSECTrustAnchorFile={self.nsd.anchor}\n"
                f"TransportTable={self.transport}\nConnectTimeout=2s\nRetrySchedule=1h\n{extra}")

    def received(self, rcpt):
        """How many messages the MX hosts keep for rcpt."""
        n = 0
        for p in self.peers.values():
            for qid in p.queued():
                try:
                    env = p.message(qid)[1]
                except FileNotFoundError:
                    continue
                n += sum(1 for _, a in env["rcpt"] if a == rcpt)
        return n

    def stop(self):
        self.sts.stop()
        self.sink.kill()
        self.sink.wait()
        self.mitm.stop()
        self.nsd.stop()
        for p in self.peers.values():
            p.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    w = World(tmp_path_factory.mktemp("dane"), certs)
    yield w
    w.stop()


def outcome(relay, qid, timeout=15):
    def line():
        for d in DELIVERY_RE.finditer(relay.logs()):
            if d["qid"] == qid:
                return d.groupdict()
        if relay.proc.poll() is not None:
            raise AssertionError(f"krelay exited\n{relay.logs()[-3000:]}")
        return None
    try:
        return wait_for(line, timeout, f"a delivery line for {qid}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{relay.logs()[-4000:]}") from None


def send_each(relay, domains, user="u"):
    """One message to user@domain for each domain (each test its own user:
    the MX hosts keep what every test sent them)."""
    return {d: submit(relay.port, "s@example.org", [f"{user}@{d}"], d.split(".")[0])
            for d in domains}


def test_dane_authenticates_or_defers_each_host_as_its_records_say(relay_factory, world):
    relay = relay_factory(world.relay_conf("TLSPolicy=dane\n"))
    ids = send_each(relay, [*DOMAINS, "insecure.dane.test"])
    for dom, (mx, _, kind, want) in DOMAINS.items():
        d = outcome(relay, ids[dom])
        where = f"{dom} ({kind}): {d}"
        if want in ("dane-ee", "dane-ta"):
            assert d["status"] == "sent" and d["auth"] == want, where
            assert d["tls"].startswith("TLSv1."), where
        elif want == "encrypt":
            # only PKIX usages: TLS is still mandatory, unauthenticated
            assert d["status"] == "sent" and d["auth"] == "none" and d["tls"], where
        elif want == "clear":
            # secure proof of no TLSA records: as TLSPolicy=may
            assert d["status"] == "sent" and d["auth"] == "none" and d["tls"] == "", where
        else:
            assert d["status"] == "deferred", where
            assert world.received(f"u@{dom}") == 0, f"{dom}: reached its MX host: {d}"
    d = outcome(relay, ids["insecure.dane.test"])
    assert d["status"] == "sent" and d["auth"] == "none", d
    for dom in ("ee", "ta", "pkix", "notlsa"):  # (exp went to the sink, which keeps nothing)
        assert world.received(f"u@{dom}.dane.test") == 1, dom

    logs = relay.logs()
    # why each host went as it did, one line per host lookup
    for text in [r"ee\.dane\.test:\d+: DANE mx-ee\.dane\.test: auth \(usable TLSA records\)",
                 r"pkix\.dane\.test:\d+: DANE mx-pkix\.dane\.test: encrypt \(TLSA records, none "
                 r"usable\)",
                 r"notlsa\.dane\.test:\d+: DANE mx-notlsa\.dane\.test: none \(no TLSA records\)",
                 r"insecure\.dane\.test:\d+: DANE mx\.insecure\.dane\.test: none \(MX records not "
                 r"DNSSEC-signed\)",
                 r"bogus\.dane\.test:\d+: DANE mx-bogus\.dane\.test: defer \(TLSA records bogus "
                 r"\(DNSSEC validation failed\)\) why_bogus=\"[^\"]+\"",
                 r"sf\.dane\.test:\d+: DANE mx-sf\.dane\.test: defer \(TLSA lookup failed\)"]:
        assert re.search(text, logs), f"no line like {text}\n{logs[-4000:]}"
    replies = {dom: outcome(relay, ids[dom])["reply"] for dom in DOMAINS}
    assert "TLS is required and the server does not offer STARTTLS" in replies["strip"
                                                                               ".dane.test"]
    assert world.mitm.conns > 0
    assert "no MX host usable now: mx-bogus.dane.test: TLSA records bogus" in \
        replies["bogus.dane.test"], replies
    assert "no MX host usable now: mx-sf.dane.test: TLSA lookup failed" in \
        replies["sf.dane.test"], replies
    for dom in ("wrong.dane.test", "taname.dane.test"):
        assert "certificate verify failed" in replies[dom], replies[dom]
    assert "(no matching DANE TLSA records)" in replies["wrong.dane.test"], replies
    assert "(hostname mismatch)" in replies["taname.dane.test"], replies


def test_dane_connections_are_authenticated_every_time(relay_factory, world):
    """No TLS session resumption under DANE: a resumed session would skip the
    certificate (and the session kept might come from a connection that was
    not authenticated), so each connection matches the records again."""
    relay = relay_factory(world.relay_conf("TLSPolicy=dane\nMaxMessagesPerConnection=1\n"))
    for i in range(3):
        d = outcome(relay, submit(relay.port, "s@example.org", [f"again{i}@ee.dane.test"],
                                  f"again{i}"))
        assert d["status"] == "sent" and d["auth"] == "dane-ee" and d["resumed"] == "no", d


def test_dane_only_defers_hosts_without_secure_tlsa(relay_factory, world):
    relay = relay_factory(world.relay_conf("TLSPolicy=dane-only\n"))
    ids = send_each(relay, ["ee.dane.test", "notlsa.dane.test", "insecure.dane.test"], "only")
    assert outcome(relay, ids["ee.dane.test"])["auth"] == "dane-ee"
    for dom, why in [("notlsa.dane.test", "no TLSA records"),
                     ("insecure.dane.test", "MX records not DNSSEC-signed")]:
        d = outcome(relay, ids[dom])
        assert d["status"] == "deferred" and why in d["reply"], d
    assert world.received("only@insecure.dane.test") == 0
    assert world.received("only@notlsa.dane.test") == 0


def test_policy_table_turns_dane_on_per_destination(relay_factory, world, tmp_path):
    table = tmp_path / "tls_policy"
    table.write_text("ee.dane.test dane-only\nwrong.dane.test dane\n")
    relay = relay_factory(world.relay_conf(f"TLSPolicy=may\nTLSPolicyTable={table}\n"))
    ids = send_each(relay, ["ee.dane.test", "wrong.dane.test", "ta.dane.test"], "table")
    assert outcome(relay, ids["ee.dane.test"])["auth"] == "dane-ee"
    assert outcome(relay, ids["wrong.dane.test"])["status"] == "deferred"
    d = outcome(relay, ids["ta.dane.test"])  # may: TLS, nothing authenticated
    assert d["status"] == "sent" and d["auth"] == "none" and d["tls"], d
    assert " ta.dane.test:" not in relay.logs().replace("delivery to=", ""), \
        "a may destination was looked up for DANE"


def test_reload_turns_dane_on(relay_factory, world):
    relay = relay_factory(world.relay_conf("TLSPolicy=may\n"))
    d = outcome(relay, submit(relay.port, "s@example.org", ["u@wrong.dane.test"], "before"))
    assert d["status"] == "sent" and d["auth"] == "none", d
    text = relay.conf.read_text().replace("TLSPolicy=may", "TLSPolicy=dane")
    relay.conf.write_text(text)
    relay.proc.send_signal(1)
    relay.wait_log(r"reload", timeout=10)
    time.sleep(0.5)
    d = outcome(relay, submit(relay.port, "s@example.org", ["v@wrong.dane.test"], "after"))
    assert d["status"] == "deferred", d
    assert world.received("v@wrong.dane.test") == 0


def run_check(conf: Path):
    return subprocess.run([KRELAY, "check", "-C", str(conf)], capture_output=True, text=True,
                          timeout=60)


def test_check_reports_the_resolvers_dnssec_state(world, tmp_path, certs):
    conf = tmp_path / "krelay.conf"
    base = (f"QueueDirectory={tmp_path / 'q'}\nRunAsUser=root\nTLSPolicy=dane\n"
            f"DNSServer={world.nsd.addr}\n")
    conf.write_text(base + f"DNSSECTrustAnchorFile={world.nsd.anchor}\n")
    r = run_check(conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"^ok     DNSSECTrustAnchorFile {re.escape(str(world.nsd.anchor))}: 1 "
                     rf"record$", r.stdout, re.M), r.stdout
    assert re.search(rf"^ok     DNSSEC: resolver {world.nsd.addr}: the resolver's answers "
                     r"validate \(DNSKEY of dane\.test\. is secure\)$", r.stdout, re.M), r.stdout

    # no trust anchor: an error, and the relay does not start
    conf.write_text(base + f"DNSSECTrustAnchorFile={tmp_path / 'missing.key'}\n")
    r = run_check(conf)
    assert r.returncode == 1
    assert re.search(r"^error  DNSSECTrustAnchorFile \S+missing\.key: No such file or directory "
                     r"\(TLSPolicy dane needs a DNSSEC trust anchor\)$", r.stdout, re.M), r.stdout
    start = subprocess.run([KRELAY, "-C", str(conf)], capture_output=True, text=True, timeout=30)
    assert start.returncode != 0 and "missing.key" in start.stderr, start

    # a trust anchor for another key: the resolver's answers are bogus
    other = tmp_path / "other.ds"
    other.write_text("dane.test. 300 IN DS 12345 13 2 " + "ab" * 32 + "\n")
    conf.write_text(base + f"DNSSECTrustAnchorFile={other}\n")
    r = run_check(conf)
    assert r.returncode == 1
    assert re.search(r"^error  DNSSEC: resolver \S+: the DNSKEY records of dane\.test\. do not "
                     r"validate against the trust anchor", r.stdout, re.M), r.stdout

    # a resolver that does not answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        conf.write_text(base.replace(world.nsd.addr, f"127.0.0.1:{dead.getsockname()[1]}") +
                        f"DNSSECTrustAnchorFile={world.nsd.anchor}\n")
        r = run_check(conf)
    assert r.returncode == 1
    assert re.search(r"^error  DNSSEC: resolver \S+: no answer for the DNSKEY records of "
                     r"dane\.test\. \(rcode 2\): the resolver is unreachable or failing$",
                     r.stdout, re.M), r.stdout

    # without dane, nothing is asked
    conf.write_text(f"QueueDirectory={tmp_path / 'q'}\nRunAsUser=root\n")
    r = run_check(conf)
    assert "ok     DNSSEC: not used (no TLSPolicy dane or dane-only)" in r.stdout, r.stdout


def dnsq(world, what, name):
    r = subprocess.run([str(DNSQ), "--dnssec", str(world.nsd.anchor), world.nsd.addr, what, name],
                       capture_output=True, text=True, timeout=30)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def test_validating_resolver_says_what_was_validated(world, dnsq_built):
    p = world.port
    rc, out = dnsq(world, "mx", "ee.dane.test")
    assert rc == 0 and out == "status OK secure\nmx 10 mx-ee.dane.test\n", out
    rc, out = dnsq(world, "addr", "mx-ee.dane.test")
    assert rc == 0 and out == "status OK secure\naddr 127.0.0.2\n", out
    rc, out = dnsq(world, "tlsa", f"mx-ee.dane.test:{p}")
    assert rc == 0 and re.fullmatch(r"status OK secure\ntlsa 3 1 1 [0-9a-f]{64}\n", out), out
    rc, out = dnsq(world, "tlsa", f"mx-notlsa.dane.test:{p}")
    assert out == "status NXDOMAIN secure\n", out
    rc, out = dnsq(world, "mx", "insecure.dane.test")
    assert out == "status OK insecure\nmx 10 mx.insecure.dane.test\n", out
    rc, out = dnsq(world, "tlsa", f"mx-bogus.dane.test:{p}")
    assert out.startswith("status BOGUS insecure\nwhy_bogus "), out
    rc, out = dnsq(world, "tlsa", f"mx-sf.dane.test:{p}")
    assert out == "status TEMPFAIL insecure\n", out
    rc, out = dnsq(world, "cancel", "ee.dane.test")
    assert rc == 0 and out == "cancel mx TEMPFAIL\ncancel addr TEMPFAIL\n", out


@pytest.fixture(scope="module")
def dnsq_built():
    r = subprocess.run(["make", "-s", "build/test/dnsq"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def submit_requiretls(relay, certs, rcpts, tls=True):
    """A message sent with MAIL ... REQUIRETLS (RFC 8689) over STARTTLS by
    Python's smtplib; returns krelay's queue id and the EHLO keywords seen
    before and after STARTTLS."""
    import smtplib
    import ssl
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    msg = (f"From: <s@example.org>\r\nTo: {rcpts[0]}\r\nSubject: requiretls\r\n\r\n"
           "for authenticated TLS only\r\n")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        before = set(s.esmtp_features)
        s.starttls(context=ctx)
        s.ehlo()
        after = set(s.esmtp_features)
        code, reply = s.mail("s@example.org", ["REQUIRETLS"])
        assert code == 250, reply
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, reply = s.data(msg.encode())
        assert code == 250, reply
        qid = re.search(rb"queued as ([0-9A-F]{16})", reply).group(1).decode()
    return qid, before, after


def test_requiretls_goes_only_over_authenticated_tls(relay_factory, world, certs):
    relay = relay_factory(world.relay_conf("TLSPolicy=dane\n"))
    qid, before, after = submit_requiretls(relay, certs, ["rt@ee.dane.test"])
    assert "requiretls" not in before and "requiretls" in after, (before, after)
    assert re.search(rf"smtp from id={qid} from=<s@example\.org> size=0 requiretls=yes$",
                     relay.logs(), re.M), relay.logs()[-2000:]
    d = outcome(relay, qid)
    assert d["status"] == "sent" and d["auth"] == "dane-ee", d
    # the next hop (a krelay) took it with REQUIRETLS and keeps the flag
    peer = world.peers["127.0.0.2"]
    envs = [peer.message(q)[1] for q in peer.queued()]
    (env,) = [e for e in envs if ("P", "rt@ee.dane.test") in e["rcpt"]]
    assert env.get("requiretls") == "1", env


@pytest.mark.parametrize("dom, why", [
    ("exp.dane.test", "the server does not offer REQUIRETLS"),
    ("pkix.dane.test", "the next hop was not authenticated (TLSPolicy dane or verify needed)"),
    ("notlsa.dane.test", "the connection to the next hop is not encrypted"),
])
def test_requiretls_is_returned_when_the_path_is_not_good_enough(relay_factory, world, certs,
                                                                 dom, why):
    relay = relay_factory(world.relay_conf("TLSPolicy=dane\n"))
    qid, _, _ = submit_requiretls(relay, certs, [f"rt-{dom.split('.')[0]}@{dom}"])
    d = outcome(relay, qid)
    assert d["status"] == "bounced" and d["dsn"] == "5.7.30", d
    assert d["reply"] == f"550 5.7.30 REQUIRETLS support required: {why}", d
    assert world.received(f"rt-{dom.split('.')[0]}@{dom}") == 0
    # the report to the sender asks for REQUIRETLS too (RFC 8689 section 5)
    bounce = re.search(rf"{qid} bounce id=([0-9A-F]{{16}}) to=<s@example\.org> status=queued",
                       relay.logs())
    assert bounce, relay.logs()[-3000:]
    env = relay.message(bounce.group(1))[1]
    assert env["sender"] == "" and env.get("requiretls") == "1", env


def test_requiretls_needs_a_tls_session(relay):
    import smtplib
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert not s.has_extn("requiretls")
        code, reply = s.mail("s@example.org", ["REQUIRETLS"])
    assert code == 530 and reply == b"5.7.10 Error: REQUIRETLS needs a TLS session (STARTTLS " \
        b"first)", (code, reply)


def sts_conf(world, extra=""):
    return world.relay_conf(f"MTASTS=yes\nMTASTSCAFile={world.sts.ca}\n{extra}")


def test_mta_sts_enforce_testing_and_failures(relay_factory, world):
    relay = relay_factory(sts_conf(world, "TLSPolicy=may\n"), start=False)
    # a policy cached before (by an earlier run), id 1; the TXT record says
    # id 2 now and its policy host does not answer: the cached one stays
    cache = relay.queue / "sts"
    cache.mkdir(parents=True)
    (cache / "sts-cached.dane.test").write_text(
        f"krelay-sts 1 1 {int(time.time()) - 60}\n{STS_ENFORCE}")
    relay.start()
    ids = send_each(relay, list(STS), "sts")
    got = {dom: outcome(relay, ids[dom]) for dom in STS}
    logs = relay.logs()

    d = got["sts-enf.dane.test"]
    assert d["status"] == "sent" and d["auth"] == "mta-sts" and d["tls"], d
    assert re.search(r"sts-enf\.dane\.test:\d+: MTA-STS: policy id=1 mode=enforce max_age=86400 "
                     r"mx=1 \(fetched\)", logs), logs[-3000:]
    # kept on disk for the next time, as fetched
    text = (cache / "sts-enf.dane.test").read_text()
    assert re.match(r"krelay-sts 1 1 \d+\n", text) and text.endswith(STS_ENFORCE), text

    d = got["sts-badmx.dane.test"]
    assert d["status"] == "deferred" and "no MX host matches its MTA-STS policy" in d["reply"], d
    assert "sts-badmx.dane.test:" in logs and "mx-ta.dane.test is not in the policy: not used" \
        in logs

    d = got["sts-badcert.dane.test"]
    assert d["status"] == "deferred" and "certificate verify failed" in d["reply"], d
    assert world.received("sts@sts-badcert.dane.test") == 0

    d = got["sts-testing.dane.test"]  # the same failure, mode testing: sent
    assert d["status"] == "sent" and d["auth"] == "none", d
    assert re.search(r"sts-testing\.dane\.test:\d+: MTA-STS: policy id=1 mode=testing", logs)

    d = got["sts-none.dane.test"]
    assert d["status"] == "sent" and d["auth"] == "none", d
    assert re.search(r"sts-none\.dane\.test:\d+: MTA-STS: policy id=1 mode=none max_age=600 mx=0 "
                     r"\(fetched\)", logs), logs[-3000:]

    d = got["sts-ctype.dane.test"]
    assert d["status"] == "sent" and d["auth"] == "none", d
    assert re.search(r"sts-ctype\.dane\.test:\d+: MTA-STS: no policy \(HTTPS: Content-Type "
                     r"text/html, not text/plain\)", logs), logs[-3000:]

    d = got["sts-cached.dane.test"]
    assert d["status"] == "sent" and d["auth"] == "mta-sts", d
    assert re.search(r"sts-cached\.dane\.test:\d+: MTA-STS: policy id=1 mode=enforce .* "
                     r"\(cached, fetch failed\) why=\"HTTPS: ", logs), logs[-3000:]

    d = got["sts-down.dane.test"]
    assert d["status"] == "sent" and d["auth"] == "none", d
    assert re.search(r"sts-down\.dane\.test:\d+: MTA-STS: no policy \(HTTPS: ", logs)

    # each policy was asked for over HTTPS at its one path
    assert ("sts-enf.dane.test", "/.well-known/mta-sts.txt") in world.sts.fetches


def test_mta_sts_cache_is_used_without_fetching(relay_factory, world):
    relay = relay_factory(sts_conf(world, "TLSPolicy=may\n"))
    d = outcome(relay, submit(relay.port, "s@example.org", ["c1@sts-enf.dane.test"], "c1"))
    assert d["auth"] == "mta-sts", d
    n = len([f for f in world.sts.fetches if f[0] == "sts-enf.dane.test"])
    relay.proc.send_signal(1)  # a reload: destinations are looked up again
    relay.wait_log(r"reload", timeout=10)
    time.sleep(0.5)
    d = outcome(relay, submit(relay.port, "s@example.org", ["c2@sts-enf.dane.test"], "c2"))
    assert d["auth"] == "mta-sts", d
    assert len([f for f in world.sts.fetches if f[0] == "sts-enf.dane.test"]) == n, \
        "the policy was fetched again although the cached one has the TXT record's id"
    assert re.search(r"sts-enf\.dane\.test:\d+: MTA-STS: policy id=1 mode=enforce .*\(cached\)",
                     relay.logs()), relay.logs()[-3000:]


def test_dane_takes_precedence_over_mta_sts(relay_factory, world):
    relay = relay_factory(sts_conf(world, "TLSPolicy=dane\n"))
    # ta.dane.test has DANE-TA records and no MTA-STS; sts-enf.dane.test's MX
    # (mx-ta) has TLSA records too: DANE wins
    d = outcome(relay, submit(relay.port, "s@example.org", ["p@sts-enf.dane.test"], "p"))
    assert d["status"] == "sent" and d["auth"] == "dane-ta", d


def test_check_reports_mta_sts(world, tmp_path):
    conf = tmp_path / "krelay.conf"
    base = f"QueueDirectory={tmp_path / 'q'}\nRunAsUser=root\nMTASTS=yes\n"
    conf.write_text(base + f"MTASTSCAFile={world.sts.ca}\n")
    r = run_check(conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok     MTASTS: policies fetched over HTTPS and kept in {tmp_path / 'q'}/sts; MX " \
        f"hosts and policy hosts verified against {world.sts.ca}\n" in r.stdout, r.stdout
    conf.write_text(base + f"MTASTSCAFile={tmp_path / 'none.crt'}\n")
    r = run_check(conf)
    assert r.returncode == 1
    assert re.search(rf"^error  MTASTSCAFile {re.escape(str(tmp_path / 'none.crt'))}: ", r.stdout,
                     re.M), r.stdout
    conf.write_text(base.replace("MTASTS=yes", "MTASTS=maybe"))
    r = run_check(conf)
    assert r.returncode == 1 and "'maybe' is not yes or no" in r.stdout, r.stdout


# RFC 8460 section 4.4's report, written as a JSON Schema (draft 7): the
# fields it requires, their types, and the policy and result types it names.
RESULT_TYPES = ["starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid",
                "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                "sts-policy-invalid", "sts-webpki-invalid"]
TLSRPT_SCHEMA = {
    "type": "object",
    "required": ["organization-name", "date-range", "contact-info", "report-id", "policies"],
    "properties": {
        "organization-name": {"type": "string"},
        "date-range": {"type": "object", "required": ["start-datetime", "end-datetime"],
                       "properties": {"start-datetime": {"type": "string", "format": "date-time"},
                                      "end-datetime": {"type": "string",
                                                       "format": "date-time"}}},
        "contact-info": {"type": "string"},
        "report-id": {"type": "string"},
        "policies": {"type": "array", "items": {
            "type": "object", "required": ["policy", "summary"],
            "properties": {
                "policy": {"type": "object", "required": ["policy-type", "policy-domain"],
                           "properties": {
                               "policy-type": {"enum": ["tlsa", "sts", "no-policy-found"]},
                               "policy-string": {"type": "array", "items": {"type": "string"}},
                               "policy-domain": {"type": "string"},
                               "mx-host": {"type": "array", "items": {"type": "string"}}}},
                "summary": {"type": "object",
                            "required": ["total-successful-session-count",
                                         "total-failure-session-count"],
                            "properties": {
                                "total-successful-session-count": {"type": "integer",
                                                                   "minimum": 0},
                                "total-failure-session-count": {"type": "integer",
                                                                "minimum": 0}}},
                "failure-details": {"type": "array", "items": {
                    "type": "object", "required": ["result-type", "failed-session-count"],
                    "properties": {
                        "result-type": {"enum": RESULT_TYPES},
                        "sending-mta-ip": {"type": "string"},
                        "receiving-mx-hostname": {"type": "string"},
                        "receiving-mx-helo": {"type": "string"},
                        "receiving-ip": {"type": "string"},
                        "failed-session-count": {"type": "integer", "minimum": 1},
                        "additional-information": {"type": "string"},
                        "failure-reason-code": {"type": "string"}}}}}}}}}


def check_schema(report):
    import jsonschema
    jsonschema.validate(report, TLSRPT_SCHEMA, format_checker=jsonschema.FormatChecker())


def test_tlsrpt_records_each_session_and_reports_it(relay_factory, world, tmp_path):
    """TLSRPT=yes: each TLS session (and each failed policy lookup) toward a
    recipient domain is recorded; `krelay tlsrpt --show` sums the day up and
    `--report` writes RFC 8460's JSON report for a domain."""
    import json
    table = tmp_path / "tls_policy"
    table.write_text("".join(f"{d} dane\n" for d in ("ee.dane.test", "wrong.dane.test",
                                                      "bogus.dane.test", "strip.dane.test")) +
                     "insecure.dane.test dane-only\n")
    relay = relay_factory(sts_conf(world, f"TLSPolicy=may\nTLSPolicyTable={table}\nTLSRPT=yes\n"))
    doms = ["ee.dane.test", "wrong.dane.test", "bogus.dane.test", "strip.dane.test",
            "sts-enf.dane.test", "sts-badcert.dane.test", "sts-testing.dane.test",
            "notlsa.dane.test", "insecure.dane.test"]
    ids = send_each(relay, doms, "rpt")
    for dom in doms:
        outcome(relay, ids[dom])
    day = time.strftime("%Y-%m-%d", time.gmtime())
    show = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--show"],
                          capture_output=True, text=True, timeout=30)
    assert show.returncode == 0, show.stderr
    out = show.stdout
    for want in [r"^ee\.dane\.test tlsa successful=1 failed=0$",
                 r"^wrong\.dane\.test tlsa successful=0 failed=1\n    tlsa-invalid sessions=1 "
                 r"mx=mx-wrong\.dane\.test mx_ip=127\.0\.0\.2 sending_ip=127\.0\.0\.1$",
                 r"^bogus\.dane\.test tlsa successful=0 failed=1\n    dnssec-invalid sessions=1 "
                 r"mx=- mx_ip=- sending_ip=-$",
                 r"^strip\.dane\.test tlsa successful=0 failed=1\n    starttls-not-supported "
                 r"sessions=1 mx=mx-strip\.dane\.test",
                 r"^sts-enf\.dane\.test sts successful=1 failed=0$",
                 r"^sts-badcert\.dane\.test sts successful=0 failed=1\n    sts-webpki-invalid "
                 r"sessions=1 mx=mx-ee\.dane\.test",
                 # mode testing: delivered, and the certificate's fault reported
                 r"^sts-testing\.dane\.test sts successful=0 failed=1\n    sts-webpki-invalid "
                 r"sessions=1 mx=mx-ee\.dane\.test",
                 r"^notlsa\.dane\.test no-policy-found successful=0 failed=1\n    "
                 r"starttls-not-supported sessions=1",
                 # dane-only toward a zone without DNSSEC
                 r"^insecure\.dane\.test tlsa successful=0 failed=1\n    dane-required "
                 r"sessions=1 mx=- mx_ip=- sending_ip=-$"]:
        assert re.search(want, out, re.M), f"{want}\n{out}"
    # the day's file, as the README describes it
    lines = (relay.queue / "tlsrpt" / day).read_text().splitlines()
    assert all(re.fullmatch(r"v1 \d+ \S+ (sts|tlsa|no-policy-found) [a-z-]+ \S+ \S+ \S+", ln)
               for ln in lines), lines

    rep = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--report", day,
                          "sts-enf.dane.test"], capture_output=True, text=True, timeout=30)
    assert rep.returncode == 0, rep.stderr
    (report,) = [json.loads(ln) for ln in rep.stdout.splitlines()]
    check_schema(report)
    assert report["organization-name"] == "relay.test"
    assert report["date-range"] == {"start-datetime": f"{day}T00:00:00Z",
                                    "end-datetime": f"{day}T23:59:59Z"}
    assert report["contact-info"] == "postmaster@relay.test"
    assert report["report-id"] == f"{day}_sts-enf.dane.test@relay.test"
    (pol,) = report["policies"]
    assert pol["policy"] == {"policy-type": "sts",
                             "policy-string": STS_ENFORCE.strip().split("\n"),
                             "mx-host": ["mx-ta.dane.test"],
                             "policy-domain": "sts-enf.dane.test"}
    assert pol["summary"] == {"total-successful-session-count": 1,
                              "total-failure-session-count": 0}
    assert pol["failure-details"] == []
    rep = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--report", day,
                          "wrong.dane.test"], capture_output=True, text=True, timeout=30)
    (report,) = [json.loads(ln) for ln in rep.stdout.splitlines()]
    check_schema(report)
    (detail,) = report["policies"][0]["failure-details"]
    every = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--report", day],
                           capture_output=True, text=True, timeout=30)
    for line in every.stdout.splitlines():  # every domain's, every result type seen
        check_schema(json.loads(line))
    assert detail == {"result-type": "tlsa-invalid", "sending-mta-ip": "127.0.0.1",
                      "receiving-mx-hostname": "mx-wrong.dane.test",
                      "receiving-ip": "127.0.0.2", "failed-session-count": 1}, detail
    bad = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--report", "yesterday"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "'yesterday' is not a date (YYYY-MM-DD)" in bad.stderr


def test_tlsrpt_send_mails_and_posts_the_report(relay_factory, world, tmp_path):
    """`krelay tlsrpt --send DATE`: each domain with one TLSRPT record gets its
    report, gzip'd JSON, at each rua: by mail (queued by the relay like any
    message: here to a krelay peer) and by HTTPS POST; a domain without one
    gets none."""
    import base64
    import email
    import gzip
    import json
    table = tmp_path / "tls_policy"
    table.write_text("ee.dane.test dane\nwrong.dane.test dane\n")
    relay = relay_factory(sts_conf(world, f"TLSPolicy=may\nTLSPolicyTable={table}\nTLSRPT=yes\n"))
    ids = send_each(relay, ["ee.dane.test", "wrong.dane.test"], "send")
    for q in ids.values():
        outcome(relay, q)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    posts = len(world.sts.posts)
    r = subprocess.run([KRELAY, "tlsrpt", "-C", str(relay.conf), "--send", day],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ee.dane.test: mailto:tlsrpt@report.dane.test: sent\n" in r.stdout, r.stdout
    assert "ee.dane.test: https://tlsrpt.dane.test/v1/report: sent\n" in r.stdout, r.stdout
    assert "wrong.dane.test: no TLSRPT record at _smtp._tls.wrong.dane.test: not sent\n" \
        in r.stdout, r.stdout

    # the HTTPS POST: RFC 8460 section 5.4
    (host, path, ctype, body) = world.sts.posts[posts]
    assert (host, path, ctype) == ("tlsrpt.dane.test", "/v1/report", "application/tlsrpt+gzip")
    report = json.loads(gzip.decompress(body))
    check_schema(report)
    assert report["report-id"] == f"{day}_ee.dane.test@relay.test"
    (pol,) = report["policies"]
    assert pol["policy"]["policy-type"] == "tlsa" and pol["summary"] == {
        "total-successful-session-count": 1, "total-failure-session-count": 0}, pol

    # the mail: queued by the relay, relayed to report.dane.test's MX
    peer = world.peers["127.0.0.5"]

    def mailed():
        for q in peer.queued():
            try:
                body, env = peer.message(q)
            except FileNotFoundError:
                continue
            if ("P", "tlsrpt@report.dane.test") in env["rcpt"]:
                return body, env
        return None
    body, env = wait_for(mailed, 15, "the report at report.dane.test's MX")
    assert env["sender"] == "postmaster@relay.test"
    msg = email.message_from_bytes(body)
    assert msg["TLS-Report-Domain"] == "ee.dane.test"
    assert msg["TLS-Report-Submitter"] == "relay.test"
    assert msg["Subject"] == (f"Report Domain: ee.dane.test Submitter: relay.test Report-ID: "
                              f"<{day}_ee.dane.test@relay.test>")
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    (att,) = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert re.fullmatch(r"relay\.test!ee\.dane\.test!\d+!\d+\.json\.gz", att.get_filename())
    assert json.loads(gzip.decompress(base64.b64decode(att.get_payload()))) == report


def test_dane_with_a_resolver_that_does_not_answer_defers(relay_factory, world):
    """A validating resolver that cannot be reached is no reason to send in
    clear: the message waits (and `krelay check` says why, see above)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        conf = world.relay_conf("TLSPolicy=dane\n").replace(
            world.nsd.addr, f"127.0.0.1:{dead.getsockname()[1]}")
        relay = relay_factory(conf)
        d = outcome(relay, submit(relay.port, "s@example.org", ["dead@notlsa.dane.test"], "dead"),
                    timeout=60)
    assert d["status"] == "deferred" and "DNS MX lookup failed temporarily" in d["reply"], d
    assert world.received("dead@notlsa.dane.test") == 0
