"""krelay import-sendmail: the seed's own lines (sendmail.cf and .mc
forms), Debian's default sendmail.mc and the sendmail.cf m4 makes of it
(from Debian's sendmail packages, unpacked, never installed), and a
hardened .mc with an access map and a mailertable.  Every output passes
`krelay check`, and every Sendmail line is accounted for: imported after a
comment naming it, or named in a "not imported" comment."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import KRELAY
from sendmail_peer import m4_cf, sendmail_root  # noqa: F401 (fixture)

ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


def run(*args, cwd=None):
    p = subprocess.run([KRELAY, *map(str, args)], capture_output=True, text=True, timeout=120,
                       env=ENV, cwd=cwd)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def settings(conf_text):
    return [ln for ln in conf_text.splitlines() if ln and not ln.startswith("#")]


def check_ok(conf: Path, tmp_path):
    # (the queue where this test may make it; root keeps its files)
    text = conf.read_text() + f"\nQueueDirectory={tmp_path / 'q'}\nRunAsUser=root\n"
    conf.write_text(text)
    p = run("check", "-C", conf)
    assert p.returncode == 0 and "configuration: 0 errors" in p.stdout, p.stdout
    return p.stdout


def test_seed_lines_cf_and_mc(certs, tmp_path):
    d = certs.dir
    cf = tmp_path / "seed.cf"
    cf.write_text(f"O CACertPath={d}\nO CACertFile={certs.ca}\nO ServerCertFile={certs.server_crt}\n"
                  f"O ServerKeyFile={certs.server_key}\nO ClientKeyFile={certs.server_crt} \n")
    mc = tmp_path / "seed.mc"
    mc.write_text("dnl #\n"
                  f"define(`confCACERT_PATH', `{d}')dnl\n"
                  f"define(`confCACERT', `{certs.ca}')dnl\n"
                  f"define(`confSERVER_CERT', `{certs.server_crt}')dnl\n"
                  f"define(`confSERVER_KEY', `{certs.server_key}')dnl\n"
                  f"define(`confCLIENT_KEY', `{certs.server_crt}')dnl\n")
    want = [f"CACertPath={d}", f"CACertFile={certs.ca}", f"ServerCertFile={certs.server_crt}",
            f"ServerKeyFile={certs.server_key}", f"ClientKeyFile={certs.server_crt}"]
    for src in (cf, mc):
        out = tmp_path / f"{src.suffix[1:]}.conf"
        p = run("import-sendmail", "-o", out, src)
        assert p.returncode == 0, p.stderr
        assert "5 settings imported, 0 not imported" in p.stderr, p.stderr
        assert settings(out.read_text()) == want
        report = check_ok(out, tmp_path)
        # the seed's mistake, named as krelay names it (a warning, not an error)
        assert "ClientKeyFile without ClientCertFile" in report


def statement_lines(mc_text):
    """The line numbers that start an m4 statement (not dnl, #, blank, and
    not the continuation of a statement over several lines)."""
    lines, depth, out = mc_text.split("\n"), 0, []
    for i, ln in enumerate(lines, 1):
        code = re.sub(r"\bdnl\b.*", "", ln)
        if depth == 0 and code.strip() and not code.lstrip().startswith("#"):
            out.append(i)
        depth += code.count("(") - code.count(")")
    return out


def test_debian_default_mc_and_its_cf(sendmail_root, tmp_path):
    mc = sendmail_root / "usr/share/sendmail/cf/debian/sendmail.mc"
    out = tmp_path / "mc.conf"
    p = run("import-sendmail", "-o", out, mc)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert settings(text) == ["Listen=127.0.0.1:25"]
    assert "Port=submission, M=Ea, Addr=127.0.0.1') (M=a requires AUTH" in text
    assert "--access FILE" in p.stderr
    # never a silent drop: every statement of the .mc is named
    named = {int(n) for n in re.findall(rf"^# {re.escape(str(mc))}:(\d+): ", text, re.M)}
    missing = [n for n in statement_lines(mc.read_text()) if n not in named]
    assert not missing, (missing, text[-2000:])
    check_ok(out, tmp_path)

    cf = tmp_path / "sendmail.cf"
    cf.write_text(m4_cf(sendmail_root, mc.read_text(), tmp_path))
    out = tmp_path / "cf.conf"
    p = run("import-sendmail", "-o", out, cf)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert "Listen=127.0.0.1:25" in settings(text)
    # every line of the .cf that is not a comment is named, alone or in a block
    covered = set()
    for a, b in re.findall(rf"^# {re.escape(str(cf))}:(\d+)-(\d+): ", text, re.M):
        covered |= set(range(int(a), int(b) + 1))
    covered |= {int(n) for n in re.findall(rf"^# {re.escape(str(cf))}:(\d+): ", text, re.M)}
    body = cf.read_text().split("\n")
    missing = [i for i, ln in enumerate(body, 1)
               if ln.strip() and not ln.startswith("#") and i not in covered]
    assert not missing, [(i, body[i - 1]) for i in missing[:10]]
    check_ok(out, tmp_path)


HARDENED = """divert(-1)dnl
# the lab's hardened relay (sendmail-facts.md, relay.mc)
divert(0)dnl
include(`/usr/share/sendmail/cf/m4/cf.m4')dnl
OSTYPE(`debian')dnl
DOMAIN(`debian-mta')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA-v4, Port={port}, Addr=127.0.0.1')dnl
DAEMON_OPTIONS(`Family=inet, Name=TLSMTA, Port={sport}, Addr=127.0.0.1, M=s')dnl
define(`confCACERT_PATH', `{certdir}')dnl
define(`confCACERT', `{ca}')dnl
define(`confSERVER_CERT', `{crt}')dnl
define(`confSERVER_KEY', `{key}')dnl
define(`confCLIENT_CERT', `{ccrt}')dnl
define(`confCLIENT_KEY', `{ckey}')dnl
define(`confSERVER_SSL_OPTIONS', `+SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1 +SSL_OP_CIPHER_SERVER_PREFERENCE')dnl
define(`confCLIENT_SSL_OPTIONS', `+SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1')dnl
define(`confCIPHER_LIST', `ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL')dnl
define(`SMART_HOST', `relay:[smart.example.org]')dnl
FEATURE(`access_db')dnl
FEATURE(`mailertable', `hash -o {mt}.db')dnl
RELAY_DOMAIN(`example.org')dnl
MAILER(`local')dnl
MAILER(`smtp')dnl
LOCAL_CONFIG
O CipherSuites=TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256
"""

ACCESS = """# the access map's text
Connect:127.0.0.1\tRELAY
Connect:10.20\tRELAY
Connect:localhost\tRELAY
To:partner.example\tRELAY
TLS_Srv:mx.partner.example\tVERIFY:128
TLS_Srv:[smart.example.org]\tENCR:128
Try_TLS:old.example\tNO
CertIssuer:/C=XX/O=Relay+20Lab/CN=Relay+20Lab+20Test+20CA\tSUBJECT
CertSubject:/C=XX/O=Relay+20Lab/CN=client.lab.test\tRELAY
GreetPause:localhost\t0
"""


def test_hardened_mc_with_access_map_and_mailertable(sendmail_root, certs, tmp_path):
    mt = tmp_path / "mailertable"
    mt.write_text("partner.example\tesmtp:[mx.partner.example]\n.partner.example\trelay:gw.partner.example\n")
    access = tmp_path / "access"
    access.write_text(ACCESS)
    mc = tmp_path / "relay.mc"
    mc.write_text(HARDENED.format(port=2525, sport=4650, certdir=certs.dir, ca=certs.ca,
                                  crt=certs.server_crt, key=certs.server_key,
                                  ccrt=certs.client_crt, ckey=certs.client_key, mt=mt))
    out_dir = tmp_path / "etc"
    out_dir.mkdir()
    out = out_dir / "krelay.conf"
    p = run("import-sendmail", "--access", access, "-o", out, mc)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    got = settings(text)
    for want in ["Listen=127.0.0.1:2525", "Listen=127.0.0.1:4650 smtps",
                 f"CACertPath={certs.dir}", f"ServerKeyFile={certs.server_key}",
                 f"ClientCertFile={certs.client_crt}",
                 "ServerSSLOptions=+SSL_OP_NO_SSLv3 +SSL_OP_NO_TLSv1 +SSL_OP_NO_TLSv1_1 "
                 "+SSL_OP_CIPHER_SERVER_PREFERENCE",
                 "CipherList=ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL",
                 "CipherSuites=TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
                 "TLS_AES_128_GCM_SHA256",
                 "SmartHost=[smart.example.org]",
                 "RelayDomains=example.org,partner.example",
                 "RelayClients=127.0.0.0/8,::1/128,127.0.0.1/32,10.20.0.0/16",
                 f"TransportTable={out_dir / 'krelay-transport'}",
                 f"TLSPolicyTable={out_dir / 'krelay-tls-policy'}"]:
        assert want in got, (want, got)
    transport = settings((out_dir / "krelay-transport").read_text())
    assert transport == ["partner.example [mx.partner.example]",
                         ".partner.example gw.partner.example"]
    policy = settings((out_dir / "krelay-tls-policy").read_text())
    assert policy == ["mx.partner.example verify", "[smart.example.org] encrypt",
                      "old.example none"], policy
    # what has no equivalent is said, with the reason
    assert ("RelayClientSubject=/C=XX/O=Relay+20Lab/CN=Relay+20Lab+20Test+20CA "
            "/C=XX/O=Relay+20Lab/CN=client.lab.test") in got
    assert re.search(r"not imported: Connect:localhost RELAY \(RelayClients takes addresses",
                     text)
    assert re.search(r"not imported: GreetPause:localhost 0", text)
    report = check_ok(out, tmp_path)
    assert "ok     TLSPolicyTable" in report and "ok     TransportTable" in report
