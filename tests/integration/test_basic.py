"""The everyday path: a real client submits over STARTTLS and implicit TLS,
and the message lands in the spool in final wire form."""
import smtplib
import ssl


def tls_ctx(certs):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    return ctx


def test_starttls_message_is_queued_in_wire_form(relay, certs):
    body = "Subject: hi\r\n\r\nline one\r\n.leading dot\r\n"
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test") as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=tls_ctx(certs))
        s.ehlo()
        assert not s.has_extn("starttls")
        code, msg = s.docmd("MAIL FROM:<a@example.org>")
        assert code == 250
        assert s.docmd("RCPT TO:<b@example.com>")[0] == 250
        code, msg = s.data(body)
    assert code == 250
    qid = msg.decode().rsplit(" ", 1)[1]
    assert relay.queued() == [qid]
    wire, env = relay.message(qid)
    assert wire.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n")
    assert b"with ESMTPS id " + qid.encode() in wire
    assert b"(using TLSv1.3 with cipher " in wire
    assert wire.endswith(b"\r\n\r\nline one\r\n.leading dot\r\n")
    assert env["dotlines"] == "1"
    assert env["sender"] == "a@example.org"
    assert env["rcpt"] == [("P", "b@example.com")]
    assert env["size"] == str(len(wire))
    relay.wait_log(rf"smtp queued id={qid} from=<a@example.org> size={len(wire)}")


def test_implicit_tls_on_smtps_listener(relay, certs):
    with smtplib.SMTP_SSL("127.0.0.1", relay.smtps_port, context=tls_ctx(certs)) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
    log = relay.wait_log(r"smtp tls version=(TLSv1\.[23]) cipher=\S+ ktls_tx=(on|off) ktls_rx=(on|off)")
    assert log.group(1) == "TLSv1.3"
    assert len(relay.queued()) == 1


def test_open_file_limit_raised_to_hard_limit(relay_factory):
    """The soft RLIMIT_NOFILE (often 1024, below what MaxConnections=1000
    needs) goes up to the hard limit, and the start line says what it is."""
    relay = relay_factory(prelude=["prlimit", "--nofile=256:8192", "--"])
    relay.wait_log(r"starting .* nofile=8192 ")
    assert "open-file limit" not in relay.logs()


def test_open_file_limit_too_low_is_reported(relay_factory):
    relay = relay_factory("MaxConnections=1000\n", prelude=["prlimit", "--nofile=300:300", "--"])
    relay.wait_log(r"starting .* nofile=300 ")
    relay.wait_log(r"warning: open-file limit 300 is below the \d+ that MaxConnections=1000, "
                   r"DestinationConcurrency=20 and 2 workers may use at their busiest: raise "
                   r"the hard limit \(ulimit -Hn; systemd: LimitNOFILE=\)")
