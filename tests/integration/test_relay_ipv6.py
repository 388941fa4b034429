"""Relaying to an IPv6 next hop ([::1]) and accepting over IPv6."""
import smtplib
import socket

import pytest

from conftest import free_port


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_relay_to_ipv6_smart_host(relay_factory):
    v6port = free_port()
    peer = relay_factory(conf=f"Listen=[::1]:{v6port}\nDeliveryMode=queueonly", tls=False)
    relay = relay_factory(conf=f"SmartHost=[::1]:{v6port}\nTLSPolicy=may", tls=False)
    body = b"Subject: v6\r\n\r\nover IPv6\r\n"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as s:
        s.sendmail("a@example.org", ["b@example.com"], body)
    line = relay.wait_log(r"delivery to=<b@example.com> relay=(\S+) .*status=(\w+)")
    assert line.group(2) == "sent", relay.logs()[-2000:]
    assert "[[::1]:%d]" % v6port in line.group(1)
    peer.wait_log(r"smtp connect client=::1 ")
    queued = peer.queued()
    assert len(queued) == 1
    wire, env = peer.message(queued[0])
    assert wire.endswith(body)
    assert env["client"] == "::1"
