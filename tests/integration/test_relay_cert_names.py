"""Relaying by a client certificate's names, as Sendmail's access map does
it (CertIssuer:DN RELAY; CertIssuer:DN SUBJECT with CertSubject:DN RELAY):
RelayClientIssuer and RelayClientSubject, the names in Sendmail's +HH form,
for a *verified* certificate only.  The client connects from 127.0.0.1,
which RelayClients here does not list."""
import re
import smtplib
import ssl
import subprocess

import pytest


def xtext(name: str) -> str:
    """Sendmail's form of an X509_NAME_oneline name."""
    return "".join(f"+{ord(c):02X}" if c <= " " or c >= "\x7f" or c in '+\\<>()"' else c
                   for c in name)


def oneline(crt, which):
    out = subprocess.run(["openssl", "x509", "-noout", f"-{which}", "-nameopt", "compat",
                          "-in", str(crt)], capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def try_relay(relay, ca, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.mail("a@example.org")
        return s.rcpt("b@elsewhere.example")[0]


@pytest.fixture
def names(certs):
    return {"issuer": xtext(oneline(certs.client_crt, "issuer")),
            "subject": xtext(oneline(certs.client_crt, "subject"))}


BASE = "RelayClients=10.255.255.0/24\nDeliveryMode=queueonly\n"


def test_issuer_relays_a_verified_certificate(relay_factory, certs, names):
    r = relay_factory(BASE + f"RelayClientIssuer={names['issuer']}\n")
    assert try_relay(r, certs.ca) == 550  # no certificate: no relaying
    assert try_relay(r, certs.ca, certs.client_crt, certs.client_key) == 250
    # the log names them as the option takes them
    m = r.wait_log(r"client_cert=verified fingerprint=\S+ subject=\"[^\"]*\" "
                   r"cert_issuer=(\S+) cert_subject=(\S+)")
    assert (m.group(1), m.group(2)) == (names["issuer"], names["subject"])
    # the rogue client certificate is not verified: its names do not count,
    # even when its issuer's name is the one listed
    r2 = relay_factory(BASE + "RelayClientIssuer=" +
                       xtext(oneline(certs.rogue / "client.crt", "issuer")) + "\n")
    assert try_relay(r2, certs.ca, certs.rogue / "client.crt", certs.rogue / "client.key") == 550


def test_issuer_and_subject(relay_factory, certs, names):
    r = relay_factory(BASE + f"RelayClientSubject={names['issuer']} {names['subject']}\n")
    assert try_relay(r, certs.ca, certs.client_crt, certs.client_key) == 250
    # same issuer, another subject (the server's certificate as a client one)
    assert try_relay(r, certs.ca, certs.server_crt, certs.server_key) == 550
    # case does not matter (Sendmail's map folds it)
    r2 = relay_factory(BASE + f"RelayClientSubject={names['issuer'].upper()} "
                       f"{names['subject'].lower()}\n")
    assert try_relay(r2, certs.ca, certs.client_crt, certs.client_key) == 250
    # a subject under an issuer that is not the certificate's
    r3 = relay_factory(BASE + f"RelayClientSubject=/CN=Some+20Other+20CA {names['subject']}\n")
    assert try_relay(r3, certs.ca, certs.client_crt, certs.client_key) == 550


def test_special_characters_as_sendmail_writes_them(relay_factory, certs, tmp_path):
    """A subject with a space, '+' and '(': krelay's form is Sendmail's
    (measured on 8.17: relay+client@lab.test in an emailAddress is
    relay+5C+2Bclient@lab.test), and that form in RelayClientSubject relays."""
    key, csr, crt = tmp_path / "c.key", tmp_path / "c.csr", tmp_path / "c.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", "/O=Relay Lab (test)/CN=client/emailAddress=relay\\+client@lab.test"],
                   check=True, capture_output=True)
    ext = tmp_path / "ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(certs.ca),
                    "-CAkey", str(certs.dir / "ca.key"), "-CAcreateserial", "-days", "2",
                    "-extfile", str(ext), "-out", str(crt)], check=True, capture_output=True)
    want = "/O=Relay+20Lab+20+28test+29/CN=client/emailAddress=relay+5C+2Bclient@lab.test"
    issuer = xtext(oneline(crt, "issuer"))
    r = relay_factory(BASE + f"RelayClientSubject={issuer} {want}\n")
    assert try_relay(r, certs.ca, crt, key) == 250
    m = r.wait_log(r"client_cert=verified .* cert_subject=(\S+)")
    assert m.group(1) == want
