"""Outbound implicit TLS: a next hop written "[host]:port smtps" (SmartHost,
TransportTable) is reached with TLS from the first byte, as Postfix's
smtp_tls_wrappermode does: the greeting comes over TLS, no STARTTLS is
sent, every TLSPolicy level still decides verification, and such a hop is
never spoken to in the clear."""
import re
import smtplib

from postfix_peer import Postfix
from helpers import wait_for
from test_relay import tls_client_conf, wait_sink, sink_files


def send(relay, rcpt="one@example.com", tag="smtps"):
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as s:
        s.sendmail("sender@example.org", [rcpt],
                   f"Subject: {tag}\r\nMessage-Id: <{tag}@example.org>\r\n\r\n{tag} body\r\n")


def delivery(relay, status="sent", timeout=20):
    return relay.wait_log(rf"delivery to=\S+ relay=(\S+) .*status={status}(.*)", timeout)


def test_smartHost_smtps_into_krelay_verified(relay_factory, certs):
    sink = relay_factory("DeliveryMode=queueonly\nRelayClientCerts=" +
                         certs.fingerprint(certs.client_crt) + "\n")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.smtps_port} smtps\n" +
                          tls_client_conf(certs, "verify"))
    send(relay)
    m = delivery(relay)
    assert m.group(1) == f"127.0.0.1[127.0.0.1:{sink.smtps_port}]", m.group(0)
    assert 'tls="TLSv1.3' in m.group(2) and "verified=yes" in m.group(2), m.group(0)
    # the sink saw a connection on its smtps listener, TLS first, our certificate
    sink.wait_log(rf"smtp connect client=127\.0\.0\.1 .* listener=127\.0\.0\.1:{sink.smtps_port} "
                  r"smtps=1")
    sink.wait_log(r"smtp tls version=TLSv1\.3 .*client_cert=verified")
    wait_for(lambda: len(sink.queued()) == 1, 10, "the message at the sink")
    assert "STARTTLS" not in sink.logs()
    assert relay.queued() == []


def test_smtps_hop_is_never_spoken_to_in_the_clear(relay_factory):
    """TLSPolicy=may, and the port speaks plain SMTP: the handshake fails,
    the message is deferred, and no SMTP command went out in the clear."""
    sink = relay_factory("DeliveryMode=queueonly\n", tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{sink.port} smtps\nTLSPolicy=may\n"
                          "RetrySchedule=1h\n")
    send(relay)
    m = delivery(relay, status="deferred")
    assert re.search(r'reply="TLS handshake: .*wrong version number \(the next hop is written '
                     r'smtps, but its port does not start with TLS\)"', m.group(0)), m.group(0)
    assert len(relay.queued()) == 1
    assert not re.search(r"smtp (helo|ehlo|from) ", sink.logs()), sink.logs()[-2000:]
    assert sink.queued() == []


def test_verify_over_smtps_checks_the_chain(relay_factory, certs, tmp_path):
    """TLSPolicy=verify applies to an smtps hop as to STARTTLS: with a CA
    that did not sign the sink's certificate, the message is deferred; with
    the right one (a reload), it goes, through a TransportTable entry."""
    sink = relay_factory("DeliveryMode=queueonly\n")
    table = tmp_path / "transport"
    table.write_text(f"example.com [127.0.0.1]:{sink.smtps_port} smtps\n")
    relay = relay_factory(f"TransportTable={table}\nTLSPolicy=verify\n"
                          f"CACertFile={certs.rogue / 'ca.crt'}\nRetrySchedule=1s\n")
    send(relay)
    m = delivery(relay, status="deferred")
    assert "verif" in m.group(0) or "certificate" in m.group(0), m.group(0)
    assert sink.queued() == []
    relay.conf.write_text(relay.conf.read_text().replace(str(certs.rogue / "ca.crt"),
                                                         str(certs.ca)))
    import signal
    relay.proc.send_signal(signal.SIGHUP)
    relay.wait_log(r"reload ok")
    m = delivery(relay, timeout=30)
    assert "verified=yes" in m.group(2), m.group(0)
    wait_for(lambda: len(sink.queued()) == 1, 10, "the message at the sink")


def test_transport_table_smtps_into_postfix_wrappermode(relay_factory, certs, tmp_path):
    """Postfix's own implicit-TLS smtpd (smtpd_tls_wrappermode=yes), reached
    through a TransportTable entry with the smtps flag; Postfix verifies
    our client certificate."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        wport = s.getsockname()[1]
    pf = Postfix(tmp_path / "pf", certs, role="sink", master_extra=(
        f"127.0.0.1:{wport} inet n - n - - smtpd\n"
        "  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n"))
    pf.start()
    try:
        table = tmp_path / "transport"
        table.write_text(f"example.com [127.0.0.1]:{wport}   smtps\n")
        relay = relay_factory(f"TransportTable={table}\n" + tls_client_conf(certs, "verify"))
        send(relay, tag="wrapped")
        m = delivery(relay)
        assert m.group(1) == f"127.0.0.1[127.0.0.1:{wport}]", m.group(0)
        assert "verified=yes" in m.group(2), m.group(0)
        wait_sink(pf, 1)
        (name, data), = sink_files(pf)
        assert b"wrapped body" in data
        log = pf.log()
        assert re.search(r"Trusted TLS connection established from localhost\[127\.0\.0\.1\]",
                         log) or re.search(r"TLS connection established from", log), log[-2000:]
    finally:
        pf.stop()
