"""A TLS scan (sslscan, Debian's package) of a running relay's STARTTLS and
implicit TLS (smtps) listeners: only TLS 1.2 and 1.3, only AEAD ciphers with
forward secrecy (ECDHE or DHE with AES-GCM or CHACHA20-POLY1305, and the
TLS 1.3 suites), and no findings (heartbleed, renegotiation, compression,
weak key exchange groups).  With an ECDSA certificate (the fixture's) and an
RSA one, since the cipher suites a server offers depend on its key.  The
scanner's XML output is parsed; a relay deliberately configured with CBC
ciphers shows that the check does fail."""
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.skipif(shutil.which("sslscan") is None,
                                reason="sslscan not installed (scripts/deps.sh)")

TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256"}
TLS12_AEAD_PFS = re.compile(
    r"(ECDHE|DHE)-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)")


def scan(port, starttls):
    args = ["sslscan", "--no-colour", "--xml=-", "--connect-timeout=5", "--timeout=5"]
    if starttls:
        args.append("--starttls-smtp")
    out = subprocess.run(args + [f"127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    xml = out[out.index("<?xml"):]
    tests = ET.fromstring(xml).findall("ssltest")
    assert len(tests) == 1, out[-2000:]
    return tests[0]


def findings(t):
    """What a scan found wrong, as short strings; [] when the scan is clean."""
    found = []
    for p in t.findall("protocol"):
        name = f"{p.get('type')}{p.get('version')}"
        want = "1" if name in ("tls1.2", "tls1.3") else "0"
        if p.get("enabled") != want:
            found.append(f"{name} enabled={p.get('enabled')}")
    if len(t.findall("protocol")) != 6:
        found.append("protocols not all scanned")
    for r in t.findall("renegotiation"):
        if r.get("supported") != "0":
            found.append(f"renegotiation supported (secure={r.get('secure')})")
    for h in t.findall("heartbleed"):
        if h.get("vulnerable") != "0":
            found.append(f"heartbleed {h.get('sslversion')}")
    for c in t.findall("compression"):
        if c.get("supported") != "0":
            found.append("compression")
    ciphers = [c for c in t.findall("cipher") if c.get("status") in ("accepted", "preferred")]
    if not ciphers:
        found.append("no cipher accepted")
    for c in ciphers:
        v, name = c.get("sslversion"), c.get("cipher")
        ok = (v == "TLSv1.3" and name in TLS13_SUITES) or \
             (v == "TLSv1.2" and TLS12_AEAD_PFS.fullmatch(name))
        if not ok or c.get("strength") not in ("strong", "acceptable"):
            found.append(f"cipher {v} {name} strength={c.get('strength')}")
    for g in t.findall("group"):
        if int(g.get("bits", "0")) < 112:
            found.append(f"group {g.get('name')} bits={g.get('bits')}")
    return found


@pytest.fixture(scope="module")
def rsa_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("rsa")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-keyout", str(d / "server.key"), "-out", str(d / "server.crt"),
                    "-subj", "/CN=relay.test", "-addext", "subjectAltName=DNS:relay.test"],
                   check=True, capture_output=True)
    return d


@pytest.mark.parametrize("key", ["ecdsa", "rsa"])
def test_scan_both_listeners(relay_factory, rsa_cert, key):
    conf = ""
    if key == "rsa":
        conf = f"ServerCertFile={rsa_cert / 'server.crt'}\nServerKeyFile={rsa_cert / 'server.key'}"
    relay = relay_factory(conf=conf)
    for port, starttls in ((relay.port, True), (relay.smtps_port, False)):
        t = scan(port, starttls)
        assert findings(t) == [], (port, starttls)
        versions = {c.get("sslversion") for c in t.findall("cipher")}
        assert versions == {"TLSv1.2", "TLSv1.3"}, versions
        names = {c.get("cipher") for c in t.findall("cipher")}
        kx = "RSA" if key == "rsa" else "ECDSA"
        assert f"ECDHE-{kx}-AES128-GCM-SHA256" in names, names
    # every probe reached krelay's TLS handshake
    assert re.search(r"smtp tls version=TLSv1\.2 cipher=ECDHE-", relay.logs())


def test_scan_flags_cbc_ciphers(relay_factory):
    """The check is real: CBC suites put in by CipherList are findings."""
    relay = relay_factory(conf="CipherList=ECDHE+AESGCM:ECDHE+AES256+SHA1")
    found = findings(scan(relay.smtps_port, False))
    assert any(re.fullmatch(r"cipher TLSv1\.2 ECDHE-ECDSA-AES256-SHA strength=\w+", f)
               for f in found), found
