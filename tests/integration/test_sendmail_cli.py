"""Sendmail's command line: `krelay sendmail` (and krelay by the names
sendmail, mailq, newaliases) hands a program's message to the running
relay, as Sendmail's -t/-i/-f/-F/-bs/-bp/-q do, with sysexits.h codes."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import KRELAY
from helpers import wait_for

EX_USAGE, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL = 64, 65, 67, 75
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


def sendmail(relay, *args, stdin=b"", name=None, prelude=()):
    """Runs `krelay sendmail -C CONF ARGS`, or krelay by another name (a
    link called name) with the same arguments."""
    if name is None:
        cmd = [KRELAY, "sendmail", "-C", str(relay.conf), *args]
    else:
        link = relay.tmp / "bin" / name
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(KRELAY)
        cmd = [str(link), "-C", str(relay.conf), *args]
    p = subprocess.run([*prelude, *cmd], input=stdin, capture_output=True, timeout=60, env=ENV)
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr, p.stderr
    return p


@pytest.fixture
def queueing(relay_factory):
    """A relay that keeps what it takes (DeliveryMode=queueonly)."""
    return relay_factory("DeliveryMode=queueonly\n", tls=False)


def only_message(relay):
    wait_for(lambda: len(relay.queued()) == 1, 10, "one message queued")
    return relay.message(relay.queued()[0])


def test_dash_t_takes_recipients_from_the_headers(queueing):
    msg = (b"From: Alice <alice@example.org>\n"
           b"To: Bob <bob@example.org>, \"Carol, C.\" <carol@example.org>\n"
           b"Cc: dave (the admin)\n"
           b"Bcc: eve@example.net,\n\tfrank@example.net\n"
           b"Subject: -t\n\n"
           b"line one\n.leading dot\n.\nafter the dot\n")
    p = sendmail(queueing, "-ti", "ignored@example.com", stdin=msg.replace(b"\n.\n", b"\n"))
    assert p.returncode == 0, p.stderr
    body, env = only_message(queueing)
    assert [a for _, a in env["rcpt"]] == ["bob@example.org", "carol@example.org",
                                            "dave@relay.test", "eve@example.net",
                                            "frank@example.net"]
    # Bcc never goes; CRLF; dots kept (-ti: -t and -i together, as getopt)
    assert b"Bcc" not in body and b"frank" not in body
    assert body.endswith(b"\r\n\r\nline one\r\n.leading dot\r\nafter the dot\r\n"), \
        body[-200:]
    assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n", body)
    assert re.search(rb"\r\nMessage-ID: <[0-9a-f]+\.[0-9a-f]+\.krelay@relay\.test>\r\n", body)
    assert b"\r\nFrom: Alice <alice@example.org>\r\n" in body
    assert env["sender"] == "root@relay.test"  # who ran it, at Hostname


def test_a_line_with_a_dot_ends_the_message_without_i(queueing):
    p = sendmail(queueing, "-t", stdin=b"To: a@example.com\n\none\n.\nafter\n")
    assert p.returncode == 0, p.stderr
    body, env = only_message(queueing)
    assert body.endswith(b"\r\n\r\none\r\n") and b"after" not in body, body[-100:]


def test_dash_i_f_F_and_the_sendmail_link(queueing):
    p = sendmail(queueing, "-oi", "-f", "bounces@example.org", "-F", "Batch Job",
                 "ops@example.com", "root", stdin=b"Subject: i\n\nfirst\n.\nsecond\n",
                 name="sendmail")
    assert p.returncode == 0, p.stderr
    body, env = only_message(queueing)
    assert env["sender"] == "bounces@example.org"
    assert [a for _, a in env["rcpt"]] == ["ops@example.com", "root@relay.test"]
    assert b'\r\nFrom: "Batch Job" <bounces@example.org>\r\n' in body
    assert body.endswith(b"first\r\n.\r\nsecond\r\n"), body[-100:]  # -oi: "." is text
    assert b"X-Authentication-Warning" not in body  # root may name any sender


def test_mailq_and_bp_in_sendmails_layout(queueing):
    assert sendmail(queueing, "a@example.com", stdin=b"Subject: 1\n\nx\n").returncode == 0
    assert sendmail(queueing, "b@example.com", "c@example.com",
                    stdin=b"Subject: 2\n\ny\n").returncode == 0
    wait_for(lambda: len(queueing.queued()) == 2, 10, "two messages")
    for out in (sendmail(queueing, name="mailq").stdout.decode(),
                sendmail(queueing, "-bp").stdout.decode()):
        lines = out.splitlines()
        assert lines[0] == f"\t\t{queueing.queue} (2 requests)", lines
        assert lines[1] == ("-----Q-ID----- --Size-- -----Q-Time----- "
                            "------------Sender/Recipient-----------")
        assert lines[-1] == "\t\tTotal requests: 2"
        ids = re.findall(r"^([0-9A-F]{16})  +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d <root@relay\.test>$",
                         out, re.M)
        assert sorted(ids) == queueing.queued(), out
        assert sorted(re.findall(r"^\t\t\t\t\t <(\S+)>$", out, re.M)) == \
            ["a@example.com", "b@example.com", "c@example.com"]
    # held: marked X, with the way out
    qid = queueing.queued()[0]
    subprocess.run([KRELAY, "queue", "-C", str(queueing.conf), "hold", qid], check=True,
                   capture_output=True, env=ENV)
    out = sendmail(queueing, name="mailq").stdout.decode()
    assert re.search(rf"^{qid}X +\d+ ", out, re.M), out
    assert f"(held: krelay queue release {qid})" in out


def test_queue_list_json(queueing):
    import json
    assert sendmail(queueing, "-f", "", "a@example.com",
                    stdin="Subject: j\n\n\u00e9t\u00e9\n".encode()).returncode == 0
    wait_for(lambda: len(queueing.queued()) == 1, 10, "one message")
    out = subprocess.run([KRELAY, "queue", "-C", str(queueing.conf), "list", "--json"],
                         capture_output=True, text=True, env=ENV, check=True).stdout
    data = json.loads(out)
    assert len(data) == 1 and data[0]["id"] == queueing.queued()[0]
    assert data[0]["recipients"] == [{"address": "a@example.com", "state": "pending"}]
    assert data[0]["sender"] == "" and data[0]["held"] is False  # -f '': the null sender
    assert data[0]["attempts"] == 0 and data[0]["size"] > 0


def test_exit_codes(relay_factory, tmp_path):
    r = relay_factory("DeliveryMode=queueonly\nMaxMessageSize=2000\nMaxRecipients=1\n",
                      tls=False)
    # bad arguments, no recipients
    assert sendmail(r, "-bt").returncode == EX_USAGE
    p = sendmail(r, stdin=b"Subject: x\n\nb\n")
    assert p.returncode == EX_USAGE and b"no recipients" in p.stderr
    p = sendmail(r, "-t", stdin=b"Subject: x\n\nb\n")
    assert p.returncode == EX_USAGE and b"in To:, Cc: or Bcc:" in p.stderr
    p = sendmail(r, "-t", stdin=b"To: <broken@example.org\n\nb\n")
    assert p.returncode == EX_DATAERR and b"unbalanced '<'" in p.stderr
    # too big: 552, nothing queued
    p = sendmail(r, "a@example.com", stdin=b"Subject: big\n\n" + b"x" * 5000 + b"\n")
    assert p.returncode == EX_DATAERR, p.stderr
    assert b"the message was refused: 552" in p.stderr
    # one recipient too many: the first gets it, the exit says some did not
    p = sendmail(r, "a@example.com", "b@example.com", stdin=b"Subject: two\n\nb\n")
    assert p.returncode == EX_TEMPFAIL, p.stderr
    assert re.search(rb"<b@example\.com>: 452", p.stderr), p.stderr
    body, env = only_message(r)
    assert [a for _, a in env["rcpt"]] == ["a@example.com"]
    # the relay not running: EX_TEMPFAIL, said plainly
    r.stop()
    p = sendmail(r, "a@example.com", stdin=b"Subject: down\n\nb\n")
    assert p.returncode == EX_TEMPFAIL
    assert re.search(rb"cannot reach krelay at 127\.0\.0\.1:\d+: Connection refused \(is it "
                     rb"running\?\); the message was not taken", p.stderr), p.stderr


def test_bs_is_smtp_for_swaks(queueing):
    """-bs: an SMTP session on stdin/stdout, driven by swaks --pipe."""
    p = subprocess.run(["swaks", "--pipe", f"{KRELAY} sendmail -C {queueing.conf} -bs",
                        "--from", "pipe@example.org", "--to", "x@example.com",
                        "--header", "Subject: over -bs"],
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]{16}", p.stdout), p.stdout
    body, env = only_message(queueing)
    assert env["sender"] == "pipe@example.org" and b"Subject: over -bs" in body


def test_q_asks_the_relay_for_a_queue_run(relay_factory):
    r = relay_factory(tls=False)
    p = sendmail(r, "-q")
    assert p.returncode == 0, p.stderr
    r.wait_log(r"queue run requested \(krelay queue flush\)")
    assert sendmail(r, "-q30m").returncode == EX_USAGE
    p = sendmail(r, name="newaliases")
    assert p.returncode == 0 and b"no aliases" in p.stdout


def test_untrusted_user_setting_the_sender_is_flagged(relay_factory):
    """A user who is neither root nor the relay's may still use -f, and the
    message says so (Sendmail's X-Authentication-Warning)."""
    d = Path(tempfile.mkdtemp(prefix="krelay-sendmail.", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        exe = d / "krelay"
        shutil.copy(KRELAY, exe)
        os.chmod(exe, 0o755)
        r = relay_factory("DeliveryMode=queueonly\n", tls=False)
        conf = d / "k.conf"
        shutil.copy(r.conf, conf)
        os.chmod(conf, 0o644)
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            str(exe), "sendmail", "-C", str(conf), "-f", "ceo@example.org",
                            "all@example.com"], input=b"Subject: trust me\n\nb\n",
                           capture_output=True, timeout=60, env=ENV)
        assert p.returncode == 0, p.stderr
        body, env = only_message(r)
        assert env["sender"] == "ceo@example.org"
        # first after krelay's own Received header
        assert re.search(rb"^Received: [^\r]*\r\n(\t[^\r]*\r\n)+X-Authentication-Warning: "
                         rb"relay\.test: nobody set sender to ceo@example\.org using -f\r\n",
                         body), body[:400]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_make_install_sendmail_links(queueing, tmp_path):
    """make install-sendmail: sendmail, newaliases and mailq are krelay."""
    from conftest import ROOT
    dest = tmp_path / "stage"
    p = subprocess.run(["make", "-C", str(ROOT), "install-sendmail", f"DESTDIR={dest}"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for link, to in (("usr/sbin/sendmail", "krelay"), ("usr/sbin/newaliases", "krelay"),
                     ("usr/bin/mailq", "/usr/sbin/krelay")):
        assert os.readlink(dest / link) == to, link
    # the installed binary under its Sendmail names
    sm = dest / "usr/sbin/sendmail"
    p = subprocess.run([str(sm), "-C", str(queueing.conf), "-oi", "x@example.com"],
                       input=b"Subject: via the link\n\nb\n", capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: len(queueing.queued()) == 1, 10, "one message")
    mailq = dest / "usr/sbin/krelay"
    link = tmp_path / "mailq"
    link.symlink_to(mailq)
    p = subprocess.run([str(link), "-C", str(queueing.conf)], capture_output=True, text=True,
                       timeout=60)
    assert "Total requests: 1" in p.stdout, p.stdout
