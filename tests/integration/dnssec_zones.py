"""DNSSEC-signed test zones served by a real authoritative server (nsd).

Test support for DANE (RFC 7672): Nsd(tmp, zones) makes keys with
ldns-keygen (ECDSAP256SHA256, one KSK and one ZSK per signed zone), signs each
zone with ldns-signzone (NSEC; signatures valid from an hour ago to a week
ahead), writes an nsd.conf under tmp/nsd/ and runs nsd in the foreground on a
free loopback port, UDP and TCP. A validator (libunbound forwarding every query
to Nsd.addr, with Nsd.anchor as its trust anchor) then sees:

- names in a signed zone whose parent is not served (the "top") or whose
  parent is served and signed: secure;
- names in an unsigned zone below a signed one: insecure (the parent has the
  delegation, NS and glue, and its NSEC proves there is no DS);
- an RRset named in Zone.corrupt: bogus (its RRSIG no longer verifies);
- names in a Zone with servfail=True: SERVFAIL (nsd has the zone configured
  but could not load it, and answers SERVFAIL for every name in it).

Delegations are made automatically: for every served zone below another served
zone (the closest enclosing one is its parent), the parent gets
"<child> 300 IN NS ns.<child>" and the glue "ns.<child> 300 IN A 127.0.0.1",
unless the caller already put an NS record at <child> in the parent's records;
and, when the child is signed (and not servfail), "<child> 300 IN DS ..." for
the child's KSK, unless the parent already has a DS at <child>. Every zone
also gets, unless its records have them, an SOA and the apex NS record
"<zone> 300 IN NS ns.<zone>" with "ns.<zone> 300 IN A 127.0.0.1".

Use, e.g. as a pytest fixture:

    nsd = Nsd(tmp_path, [
        Zone("dane.test.", ["mx.dane.test. 300 IN A 127.0.0.1",
                            f"_25._tcp.mx.dane.test. 300 IN TLSA {tlsa_rdata(pem, 3, 1, 1)}"],
             corrupt=[("mx.dane.test.", "A")]),
        Zone("insecure.dane.test.", ["mx.insecure.dane.test. 300 IN A 127.0.0.1"],
             signed=False),
        Zone("_tcp.mx-sf.dane.test.", servfail=True)])
    yield nsd   # forward to nsd.addr, trust nsd.anchor
    nsd.stop()

For libunbound (1.17) as the validator: besides ub_ctx_set_fwd(ctx,
"127.0.0.1@PORT") and ub_ctx_add_ta_file(ctx, anchor), .test must be taken out
of unbound's default local zones (answered NXDOMAIN, never forwarded), e.g.
ub_ctx_set_option(ctx, "local-zone:", "test. transparent") (the same option
with "test. nodefault" returns 0 yet changes nothing; in a config file read by
ub_ctx_config, 'local-zone: "test." nodefault' works). A bogus answer comes
back as rcode 0, havedata 1, bogus 1; the servfail zone's as rcode 2.

Run this file (/usr/bin/python3 tests/integration/dnssec_zones.py) for a
self-check with drill that shows all four behaviours.
"""
import base64
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helpers import stop_process

NSD = "/usr/sbin/nsd"
LDNS_KEYGEN = "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = "/usr/bin/ldns-signzone"
ALGORITHM = "ECDSAP256SHA256"
TTL = 300
START_TIMEOUT = 5.0
# signature validity, relative to now: a clock a bit behind, or a long test
# run, must not see the zone as not yet valid or expired
INCEPTION_AGO = 3600
EXPIRATION_AHEAD = 7 * 86400

_CLASSES = {"IN", "CH", "HS", "CS"}


def tlsa_rdata(cert_pem: bytes, usage: int, selector: int, mtype: int) -> str:
    """'3 1 1 <hex>' for a certificate (selector 0: full DER cert, 1:
    SubjectPublicKeyInfo DER; mtype 0: raw, 1: sha256, 2: sha512)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    if selector == 0:
        data = cert.public_bytes(serialization.Encoding.DER)
    elif selector == 1:
        data = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raise ValueError(f"bad TLSA selector {selector}")
    if mtype == 0:
        digest = data.hex()
    elif mtype == 1:
        digest = hashlib.sha256(data).hexdigest()
    elif mtype == 2:
        digest = hashlib.sha512(data).hexdigest()
    else:
        raise ValueError(f"bad TLSA matching type {mtype}")
    return f"{usage} {selector} {mtype} {digest}"


def _fqdn(name: str, origin: str = ".") -> str:
    """name, lower case, absolute (relative names are taken below origin)."""
    name = name.lower()
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return f"{name}.{origin}" if origin != "." else f"{name}."


def _is_below(name: str, zone: str) -> bool:
    """True when name is zone or a name under it (both absolute)."""
    return zone == "." or name == zone or name.endswith("." + zone)


def _owner_type(line: str, origin: str):
    """(owner, TYPE) of a zone-file line that names its owner, else None."""
    if not line.strip() or line[0] in " \t;$":
        return None
    toks = line.split(";", 1)[0].split()
    i = 1
    while i < len(toks) and (toks[i].isdigit() or toks[i].upper() in _CLASSES):
        i += 1
    if i >= len(toks):
        return None
    return _fqdn(toks[0], origin), toks[i].upper()


@dataclass
class Zone:
    """One zone for Nsd to serve.

    name: the apex, e.g. "dane.test." (a trailing dot is added if missing).
    records: zone-file lines, one RR each, with the owner name written out
      (absolute, e.g. "mx-ee.dane.test. 300 IN A 127.0.0.1"; relative names
      and "@" are taken below name). SOA, apex NS and delegations to served
      child zones are added when missing (see the module docstring).
    signed: sign with a fresh KSK+ZSK (ECDSAP256SHA256, NSEC).
    corrupt: (owner, TYPE) pairs of RRsets in this signed zone whose RRSIG is
      damaged after signing (one bit of the signature flipped), so validators
      find that RRset bogus while the data itself, and the rest of the zone,
      stay as given. Any signed RRset can be named, e.g. ("x.dane.test.",
      "TLSA"), ("x.dane.test.", "A"), or a child's ("child.dane.test.", "DS").
    servfail: configure the zone in nsd but give it no zone file, so nsd
      answers SERVFAIL for every name in it (signed is then ignored, and its
      parent's delegation has no DS).
    """
    name: str
    records: list[str] = field(default_factory=list)
    signed: bool = True
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    servfail: bool = False

    def __post_init__(self):
        self.name = _fqdn(self.name)


def free_dns_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind((host, 0))
            port = t.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                s.bind((host, port))
                u.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError("no free port for nsd")


def dns_query(port: int, name: str, qtype: int = 6, host="127.0.0.1", timeout=0.2):
    """Sends one UDP query (no RD, no EDNS) and returns the reply's rcode, or
    None when nothing came back within timeout s. qtype 6 is SOA."""
    qid = os.getpid() & 0xFFFF
    qname = b"".join(bytes([len(lab)]) + lab.encode()
                     for lab in name.rstrip(".").split(".") if lab) + b"\0"
    pkt = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(pkt, (host, port))
            reply = s.recv(4096)
        except OSError:  # socket.timeout, or ICMP port unreachable
            return None
    if len(reply) < 12 or struct.unpack(">H", reply[:2])[0] != qid:
        return None
    return reply[3] & 0x0F


def _session_alive(sid: int) -> list[int]:
    """Processes of session sid that are not zombies."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] not in "ZX":
            pids.append(int(d))
    return pids


class Nsd:
    """nsd, authoritative for zones, on 127.0.0.1:port (UDP and TCP).

    addr: "127.0.0.1:PORT"; port: PORT.
    anchor: a file holding the DS RR (zone-file format, one line) of the KSK
      of the first signed zone whose parent is not also served (the "top"):
      a trust anchor for ub_ctx_add_ta_file, or for drill -k. None when no
      zone is signed.
    anchor_dnskey: the same KSK as a DNSKEY RR line, in a file.
    dir: the working directory (tmp/nsd): nsd.conf, zone files, keys, log.
    pid: the process started (nsd -d; once up it is nsd's xfrd, and the
      serving processes are its children), also their session and group id.
    """

    def __init__(self, tmp: Path, zones: list[Zone]):
        self.dir = Path(tmp) / "nsd"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zones = zones
        self.port = free_dns_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.anchor = None
        self.anchor_dnskey = None
        self.proc = None
        self.pid = None
        self._out = None
        names = [z.name for z in zones]
        assert len(set(names)) == len(names), f"zone served twice: {names}"
        self._build()
        self._start()

    # zones

    def parent(self, zone: Zone):
        """The closest served zone enclosing zone, or None."""
        best = None
        for z in self.zones:
            if z is not zone and z.name != zone.name and _is_below(zone.name, z.name):
                if best is None or len(z.name) > len(best.name):
                    best = z
        return best

    def _build(self):
        recs = {z.name: list(z.records) for z in self.zones}
        # the zone's own SOA and apex NS when missing
        for z in self.zones:
            have = {_owner_type(r, z.name) for r in recs[z.name]}
            if (z.name, "SOA") not in have:
                recs[z.name].insert(0, f"{z.name} {TTL} IN SOA ns.{z.name} hostmaster.{z.name} "
                                       f"1 3600 600 86400 {TTL}")
            if (z.name, "NS") not in have:
                recs[z.name] += [f"{z.name} {TTL} IN NS ns.{z.name}",
                                 f"ns.{z.name} {TTL} IN A 127.0.0.1"]
        # delegations, and children signed before parents (for their DS)
        keys = {}
        for z in sorted(self.zones, key=lambda z: -z.name.count(".")):
            if z.signed and not z.servfail:
                keys[z.name] = self._keys(z)
            p = self.parent(z)
            if p is None:
                continue
            have = {_owner_type(r, p.name) for r in recs[p.name]}
            if (z.name, "NS") not in have:
                recs[p.name] += [f"{z.name} {TTL} IN NS ns.{z.name}",
                                 f"ns.{z.name} {TTL} IN A 127.0.0.1"]
            if z.name in keys and (z.name, "DS") not in have:
                recs[p.name].append(f"{z.name} {TTL} IN DS {keys[z.name][2]}")
        for z in self.zones:
            if z.servfail:
                continue
            path = self.dir / f"{z.name}zone"
            path.write_text(f"$ORIGIN {z.name}\n$TTL {TTL}\n" + "\n".join(recs[z.name]) + "\n")
            if z.name in keys:
                self._sign(z, path, keys[z.name])
            elif z.corrupt:
                raise ValueError(f"{z.name}: corrupt needs a signed zone")
        for z in self.zones:
            if z.name in keys and self.parent(z) is None:
                ksk = keys[z.name][0]
                self.anchor = self.dir / "anchor.ds"
                self.anchor.write_text(Path(f"{ksk}.ds").read_text())
                self.anchor_dnskey = self.dir / "anchor.dnskey"
                self.anchor_dnskey.write_text(
                    Path(f"{ksk}.key").read_text().split(";", 1)[0].rstrip() + "\n")
                break

    def _keys(self, z: Zone):
        """(KSK base path, ZSK base path, DS rdata) for zone z."""
        out = []
        for role in ("ksk", "zsk"):
            # a directory each: a KSK and a ZSK may happen to share a key tag
            d = self.dir / "keys" / z.name / role
            d.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([LDNS_KEYGEN, "-a", ALGORITHM, *(["-k"] if role == "ksk" else []),
                                z.name], cwd=d, capture_output=True, text=True)
            assert r.returncode == 0, f"ldns-keygen for {z.name} failed:\n{r.stderr}"
            out.append(str(d / r.stdout.strip()))
        ds = Path(f"{out[0]}.ds").read_text().split()
        i = [t.upper() for t in ds].index("DS")
        return out[0], out[1], " ".join(ds[i + 1:])

    def _sign(self, z: Zone, path: Path, keys):
        now = int(time.time())
        signed = path.with_suffix(".signed")
        r = subprocess.run([LDNS_SIGNZONE, "-i", str(now - INCEPTION_AGO),
                            "-e", str(now + EXPIRATION_AHEAD), "-o", z.name,
                            "-f", str(signed), str(path), keys[0], keys[1]],
                           cwd=self.dir, capture_output=True, text=True)
        assert r.returncode == 0, f"ldns-signzone for {z.name} failed:\n{r.stdout}{r.stderr}"
        lines = signed.read_text().splitlines()
        for owner, rtype in z.corrupt:
            owner, rtype, hits = _fqdn(owner, z.name), rtype.upper(), 0
            for i, line in enumerate(lines):
                toks = line.split()
                # ldns writes "owner ttl class RRSIG covered alg labels
                # origttl expire incept keytag signer signature"
                if (len(toks) >= 13 and toks[3] == "RRSIG" and toks[0].lower() == owner
                        and toks[4].upper() == rtype):
                    sig = bytearray(base64.b64decode("".join(toks[12:])))
                    sig[len(sig) // 4] ^= 0x01
                    lines[i] = "\t".join(toks[:12] + [base64.b64encode(sig).decode()])
                    hits += 1
            if not hits:
                raise ValueError(f"{z.name}: no RRSIG over {owner} {rtype} to corrupt")
        path.write_text("\n".join(lines) + "\n")
        signed.unlink()

    # the server

    def _conf(self) -> Path:
        d = self.dir
        conf = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.port}",
            f"    port: {self.port}",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{d}"',
            f'    zonelistfile: "{d}/zone.list"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    xfrdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    logfile: "{d}/nsd.log"',
            "    verbosity: 1",
            "    server-count: 1",
            "    do-ip6: no",
            "    zonefiles-write: 0",
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "    control-enable: no",
        ]
        for z in self.zones:
            # a servfail zone's file is never written: nsd logs that it
            # cannot read it, starts, and answers SERVFAIL in that zone
            conf += ["zone:", f'    name: "{z.name}"', f'    zonefile: "{d}/{z.name}zone"']
        path = d / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def _start(self):
        for attempt in range(3):
            if attempt:  # another process took the port first
                self.port = free_dns_port()
                self.addr = f"127.0.0.1:{self.port}"
            if self._try_start():
                return
        raise AssertionError(f"nsd could not bind a port:\n{self.logs()}")

    def _try_start(self) -> bool:
        """Starts nsd and waits until it answers: True; False when it could
        not bind its port; AssertionError, with nsd's log, otherwise."""
        conf = self._conf()
        (self.dir / "nsd.log").write_bytes(b"")
        self._out = open(self.dir / "nsd.out", "wb")
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        # a zone nsd has loaded answers its SOA query with NOERROR
        probe = next((z.name for z in self.zones if not z.servfail), None)
        deadline = time.time() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.stop()
                if "already in use" in self.logs():
                    return False
                raise AssertionError(f"nsd exited with {rc}:\n{self.logs()}")
            rc = dns_query(self.port, probe or "invalid.", 6)
            if rc == 0 or (probe is None and rc is not None):
                break
            if rc is not None and "nsd started" in self.logs():
                break  # up, yet the zone did not load: no use waiting
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"nsd did not answer on {self.addr} within "
                                     f"{START_TIMEOUT}s (last rcode {rc}):\n{self.logs()}")
            time.sleep(0.02)
        # every zone but the servfail ones must have loaded
        bad = [z.name for z in self.zones if not z.servfail and dns_query(self.port, z.name) != 0]
        if bad:
            self.stop()
            raise AssertionError(f"nsd could not load zones {bad}:\n{self.logs()}")
        return True

    def stop(self):
        """Stops nsd (SIGTERM, then SIGKILL) and every process it forked, and
        returns once none of them runs any more (dead children that were
        handed to init may stay zombies until init reaps them)."""
        if self.proc is None:
            return
        stop_process(self.proc, self._out)
        self.proc = None
        deadline = time.time() + 2
        while True:
            try:  # every process nsd forked is in its session and group
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            left = _session_alive(self.pid)
            if not left:
                return
            if time.time() > deadline:
                raise AssertionError(f"nsd's processes {left} would not die")
            time.sleep(0.02)

    def logs(self) -> str:
        """nsd's log file and its stdout/stderr."""
        text = ""
        for name in ("nsd.log", "nsd.out"):
            p = self.dir / name
            if p.exists():
                text += p.read_text(errors="replace")
        return text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# self-check: /usr/bin/python3 tests/integration/dnssec_zones.py

def _drill(nsd: Nsd, *args, show=True):
    """drill against nsd; prints the command and its output, returns both."""
    cmd = ["drill", "-p", str(nsd.port), "@127.0.0.1", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    if show:
        print("$", " ".join(a.replace(str(nsd.dir), "$DIR") for a in cmd))
        print(out.rstrip() + "\n")
    return out


def _selfcheck():
    import tempfile
    from datetime import datetime, timedelta, timezone
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mx-ee.dane.test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    tlsa = tlsa_rdata(cert.public_bytes(serialization.Encoding.PEM), 3, 1, 1)
    zones = [
        Zone("dane.test.", [
            "dane.test. 300 IN MX 10 mx-ee.dane.test.",
            "mx-ee.dane.test. 300 IN A 127.0.0.1",
            f"_2525._tcp.mx-ee.dane.test. 300 IN TLSA {tlsa}",
            "mx-bad.dane.test. 300 IN A 127.0.0.1",
            f"_2525._tcp.mx-bad.dane.test. 300 IN TLSA {tlsa}",
            "mx-sf.dane.test. 300 IN A 127.0.0.1",
        ], corrupt=[("_2525._tcp.mx-bad.dane.test.", "TLSA")]),
        Zone("insecure.dane.test.", [
            "insecure.dane.test. 300 IN MX 10 mx.insecure.dane.test.",
            "mx.insecure.dane.test. 300 IN A 127.0.0.1",
            f"_2525._tcp.mx.insecure.dane.test. 300 IN TLSA {tlsa}",
        ], signed=False),
        Zone("signed.dane.test.", ["mx.signed.dane.test. 300 IN A 127.0.0.1"]),
        Zone("_tcp.mx-sf.dane.test.", servfail=True),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        nsd = Nsd(Path(tmp), zones)
        took = time.time() - t0
        pid = nsd.pid
        try:
            a = str(nsd.anchor)
            print(f"nsd on {nsd.addr}, up in {took:.3f}s; $DIR/anchor.ds:")
            print(nsd.anchor.read_text())
            # 1. secure, from the anchor
            out = _drill(nsd, "-k", a, "-S", "_2525._tcp.mx-ee.dane.test.", "TLSA")
            assert ";; Chase successful" in out and "flags: 257)" in out, out
            out = _drill(nsd, "-D", "_2525._tcp.mx-ee.dane.test.", "TLSA")
            assert "rcode: NOERROR" in out and "\tRRSIG\tTLSA 13 5 " in out, out
            for q in (["dane.test.", "MX"], ["mx-ee.dane.test.", "A"],
                      ["mx.signed.dane.test.", "A"]):
                out = _drill(nsd, "-k", a, "-S", *q, show=False)
                assert ";; Chase successful" in out and "Bogus" not in out, out
            # ... and not from some other key: the anchor matters
            wrong = Path(tmp) / "wrong.ds"
            wrong.write_text(re.sub(r"[0-9a-f]{64}", "0" * 64, nsd.anchor.read_text()))
            out = _drill(nsd, "-k", str(wrong), "-S", "_2525._tcp.mx-ee.dane.test.", "TLSA")
            assert ";; Chase failed" in out, out
            # 2. insecure: unsigned, and the signed parent proves there is no DS
            out = _drill(nsd, "-D", "mx.insecure.dane.test.", "A")
            assert "rcode: NOERROR" in out and "127.0.0.1" in out and "RRSIG" not in out, out
            out = _drill(nsd, "-k", a, "-S", "insecure.dane.test.", "DS")
            assert "Existence denied or verifiably insecure" in out, out
            assert ";; Chase successful" in out, out
            # 3. bogus: that RRset only
            out = _drill(nsd, "-k", a, "-S", "_2525._tcp.mx-bad.dane.test.", "TLSA")
            assert "Bogus DNSSEC signature" in out and ";; Chase failed" in out, out
            out = _drill(nsd, "-k", a, "-S", "mx-bad.dane.test.", "A")
            assert ";; Chase successful" in out and "Bogus" not in out, out
            # 4. SERVFAIL in the zone nsd could not load, not in its parent
            out = _drill(nsd, "_2525._tcp.mx-sf.dane.test.", "TLSA")
            assert "rcode: SERVFAIL" in out, out
            out = _drill(nsd, "_tcp.mx-sf.dane.test.", "DS", show=False)
            assert "rcode: SERVFAIL" in out, out
            out = _drill(nsd, "mx-sf.dane.test.", "A")
            assert "rcode: NOERROR" in out and "127.0.0.1" in out, out
            out = _drill(nsd, "-k", a, "-S", "mx-sf.dane.test.", "A", show=False)
            assert ";; Chase successful" in out, out
            print("nsd's log:\n" + nsd.logs())
        finally:
            nsd.stop()
        assert not _session_alive(pid), "nsd left processes behind"
    print(f"OK: nsd up in {took:.3f}s, nothing left running")


if __name__ == "__main__":
    _selfcheck()
