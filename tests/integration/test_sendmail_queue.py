"""SendmailQueue= and `krelay queue import-sendmail`: krelay takes over
what the real Sendmail 8.17 (Debian's, unpacked: sendmail_peer.py) queued
with `sendmail -odq`, and delivers it to a Postfix sink: headers as
Sendmail's relay mailer would write them, the body byte for byte; a
concurrent `sendmail -q` delivers nothing twice; a partly delivered qf
sends only the recipients left; files that cannot be taken stay, are
logged once and listed; a crash at each step of the handover loses and
repeats nothing; the runner holds no privilege but CAP_DAC_OVERRIDE."""
import fcntl
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import KRELAY
from helpers import wait_for
from postfix_peer import postfix_sink  # noqa: F401 (fixture)
from sendmail_peer import Sendmail, sendmail_root  # noqa: F401 (fixture)
from test_runas import base, krelay_user, runas_relays  # noqa: F401 (fixtures)

ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
DATE = "Thu, 03 Dec 2026 12:00:00 +0000"


def krelay_queue(relay, *args, env=None):
    p = subprocess.run([KRELAY, "queue", "-C", str(relay.conf), *map(str, args)],
                       capture_output=True, text=True, timeout=120, env=env or ENV)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p


def message(tag, body=b"a line\n", extra=""):
    return (f"From: Alice <alice@client.lab.test>\nTo: bob@sink.example\nSubject: {tag}\n"
            f"Date: {DATE}\nMessage-Id: <{tag}@client.lab.test>\n{extra}\n").encode() + body


def expected_headers(qf: bytes):
    """The qf's headers as the relay mailer writes them: ?P? (Return-Path)
    and, with F b, Bcc: left out; LF line ends (the sink's form)."""
    flags = re.search(rb"^F(.*)$", qf, re.M)
    out = []
    for rec in re.split(rb"\n(?=[^ \t])", qf.decode("latin-1").encode("latin-1")):
        if not rec.startswith(b"H"):
            continue
        m = re.match(rb"H(?:\?([^?]*)\?)?(.*)", rec, re.S)
        cond, text = m.group(1) or b"", m.group(2)
        if cond and not any(chr(c) in "mDFMuXa" for c in cond):
            continue
        if flags and b"b" in flags.group(1) and text.lower().startswith(b"bcc:"):
            continue
        out.append(text.replace(b"\xff", b"") + b"\n")
    return b"".join(out)


def sink_deliveries(pf):
    """[(envelope text, message bytes)] of the sink's complete deliveries."""
    out = []
    for p in sorted(pf.outdir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(".eml"):
            continue
        try:
            env = p.with_suffix(".env").read_text()
            out.append((env, p.read_bytes()))
        except FileNotFoundError:
            pass
    return out


def without_postfix_received(data: bytes):
    """The sink's copy less the Received header its own Postfix added."""
    assert data.startswith(b"Received: "), data[:200]
    m = re.match(rb"Received: [^\n]*\n(?:[ \t][^\n]*\n)*", data)
    return data[m.end():]


def msgid(data):
    m = re.search(rb"^Message-Id: <([^>]+)>$", data, re.M | re.I)
    return m.group(1).decode() if m else None


@pytest.fixture
def sendmail(sendmail_root, tmp_path):
    def make(smart_port, name="sendmail"):
        return Sendmail(sendmail_root, tmp_path / name, smart_port)
    return make


def runner_relay(relay_factory, sm, smart_port, extra="", start=True):
    return relay_factory(f"SendmailQueue={sm.mqueue}\nSendmailQueueInterval=1s\n"
                         f"SmartHost=[127.0.0.1]:{smart_port}\n{extra}", start=start)


def test_runner_takes_what_sendmail_queued_bytes_identical(relay_factory, sendmail, postfix_sink):
    pf = postfix_sink
    sm = sendmail(pf.port)
    bodies = {
        # -t with a Bcc, dot lines, 8-bit text and a last line without LF
        "smq-t": (message("smq-t", b"one\n.dot line\n..two dots\n.\n\xc3\xa9t\xc3\xa9\nlast",
                          extra="Bcc: carol@sink.example\n"), ["-t", "-f", "alice@client.lab.test"]),
        # two recipients, 300 KiB of body
        "smq-two": (message("smq-two", b"".join(b"%06d 0123456789abcdef\n" % i
                                                 for i in range(13000))),
                    ["-f", "alice@client.lab.test", "bob@sink.example", "dave@sink.example"]),
        # the null sender
        "smq-null": (message("smq-null", b"bounce-like\n"), ["-f", "<>", "bob@sink.example"]),
    }
    qfs = {}
    for tag, (msg, args) in bodies.items():
        sid = sm.queue(msg, *args)
        qfs[tag] = ((sm.mqueue / f"qf{sid}").read_bytes(), (sm.mqueue / f"df{sid}").read_bytes())
    relay = runner_relay(relay_factory, sm, pf.port)
    wait_for(lambda: len(sink_deliveries(pf)) >= 3, 60, "3 deliveries at the Postfix sink")
    pf.wait_queue_empty()
    time.sleep(0.5)
    got = {msgid(data).split("@")[0]: (env, data) for env, data in sink_deliveries(pf)}
    assert sorted(got) == sorted(bodies), sorted(got)
    for tag, (qf, df) in qfs.items():
        env, data = got[tag]
        rest = without_postfix_received(data)
        head = expected_headers(qf)
        # Sendmail's own Received header first, then the client's headers
        assert rest.startswith(b"Received: (from root@localhost)\n\tby relay.lab.test"), rest[:300]
        assert b"Return-Path:" not in rest and b"Bcc:" not in rest
        assert rest == head + b"\n" + df + (b"" if df.endswith(b"\n") else b"\n"), (tag, rest[:500])
    assert "rcpt carol@sink.example" in got["smq-t"][0]  # the Bcc got its copy
    assert sorted(re.findall(r"rcpt (\S+)", got["smq-two"][0])) == ["bob@sink.example",
                                                                   "dave@sink.example"]
    assert "sender \n" in got["smq-null"][0] or "sender MAILER-DAEMON" in got["smq-null"][0]
    # Sendmail's queue is empty, krelay's too; each message logged where it came from
    assert sm.files() == []
    wait_for(lambda: relay.queued() == [], 20, "krelay's queue empty")
    logs = relay.logs()
    for qf, _ in qfs.values():
        sid = re.search(rb"id ([0-9A-Za-z]{14})", qf).group(1).decode()
        assert re.search(rf"[0-9A-F]{{16}}: from Sendmail queue {sm.mqueue} id={sid} ", logs), logs
    assert len(re.findall(r" status=sent ", logs)) == 5, logs  # 1 + (1 + 1) + 2 + 1


def test_concurrent_sendmail_q_delivers_nothing_twice(relay_factory, sendmail, postfix_sink):
    """40 messages queued; krelay's runner and three `sendmail -q` runs go
    at the same queue at once: every message reaches the sink exactly once,
    whoever delivered it."""
    pf = postfix_sink
    sm = sendmail(pf.port)
    tags = [f"race-{i}" for i in range(40)]
    for tag in tags:
        sm.queue(message(tag, b"race body\n" * 50), "-f", "alice@client.lab.test",
                 "bob@sink.example")
    relay = runner_relay(relay_factory, sm, pf.port, start=False)
    results = []

    def sendmail_q():
        results.append(sm.run("-q", timeout=120))

    threads = [threading.Thread(target=sendmail_q) for _ in range(3)]
    relay.start()
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in results), [p.stderr for p in results]
    wait_for(lambda: sm.qf_ids() == [] and relay.queued() == [], 60,
             f"both queues empty ({sm.files()[:6]} / {relay.queued()[:6]})")
    wait_for(lambda: len(sink_deliveries(pf)) >= 40, 60, "40 deliveries at the sink")
    pf.wait_queue_empty()
    time.sleep(1)
    ids = [msgid(data) for _, data in sink_deliveries(pf)]
    assert sorted(ids) == sorted(f"{t}@client.lab.test" for t in tags), sorted(ids)
    taken = len(re.findall(r": from Sendmail queue ", relay.logs()))
    print(f"krelay took {taken} of 40, sendmail -q delivered {40 - taken}")


def test_partly_delivered_qf_sends_only_the_recipients_left(relay_factory, sendmail,
                                                           postfix_sink):
    """A qf that Sendmail wrote back after delivering to bob (its R line
    gone, N1, a K time and an M status, as sendmail-facts.md measured):
    krelay sends to carol alone."""
    pf = postfix_sink
    sm = sendmail(pf.port)
    sid = sm.queue(message("partial"), "-f", "alice@client.lab.test", "bob@sink.example",
                   "carol@sink.example")
    qf = sm.mqueue / f"qf{sid}"
    text = qf.read_bytes()
    text = re.sub(rb"rRFC822; bob@sink.example\nR[A-Z]*:bob@sink.example\n", b"", text)
    text = text.replace(b"\nK0\n", b"\nK1796300000\n").replace(b"\nN0\n", b"\nN1\n")
    text = text.replace(b"\nS", b"\nMDeferred: 450 4.2.0 try later\nS", 1)
    assert b"bob@sink" not in text.split(b"\nH", 1)[0]
    qf.write_bytes(text)
    relay = runner_relay(relay_factory, sm, pf.port)
    wait_for(lambda: len(sink_deliveries(pf)) >= 1, 60, "the delivery at the sink")
    pf.wait_queue_empty()
    env, data = sink_deliveries(pf)[0]
    assert re.findall(r"rcpt (\S+)", env) == ["carol@sink.example"], env
    assert msgid(data) == "partial@client.lab.test"
    assert "to=<bob@sink.example>" not in relay.logs()
    assert re.search(r"from Sendmail queue \S+ id=\S+ from=<alice@client.lab.test> nrcpt=1 "
                     r"first_rcpt=<carol@sink.example> tries=1", relay.logs()), relay.logs()


def test_files_that_cannot_be_taken_stay_logged_once_and_listed(relay_factory, sendmail):
    """A qf with a record Sendmail would call bad, a qf whose df is gone, a
    qf for a local program and a qf somebody holds locked (flock) stay in
    place while a good one is taken; each of the first three is logged
    once however many passes see it, `krelay queue list` counts and names
    them; once the lock is let go, that one is taken too."""
    sm = sendmail(9)  # (Sendmail never delivers here)
    good = sm.queue(message("good"), "-f", "a@client.lab.test", "x@sink.example")
    corrupt = sm.queue(message("corrupt"), "-f", "a@client.lab.test", "x@sink.example")
    nodf = sm.queue(message("nodf"), "-f", "a@client.lab.test", "x@sink.example")
    local = sm.queue(message("local"), "-f", "a@client.lab.test", "x@sink.example")
    locked = sm.queue(message("locked"), "-f", "a@client.lab.test", "x@sink.example")
    q = sm.mqueue
    (q / f"qf{corrupt}").write_bytes((q / f"qf{corrupt}").read_bytes()
                                     .replace(b"\n.\n", b"\nWhat is this\n.\n"))
    (q / f"df{nodf}").unlink()
    (q / f"qf{local}").write_bytes(re.sub(rb"(\nR[A-Z]*:)x@sink.example", rb"\1|/bin/cat",
                                          (q / f"qf{local}").read_bytes()))
    holder = open(q / f"qf{locked}", "rb")
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        relay = runner_relay(relay_factory, sm, 9, "DeliveryMode=queueonly\n")
        relay.wait_log(rf"from Sendmail queue {q} id={good} ", timeout=20)
        time.sleep(3.5)  # three more passes
        logs = relay.logs()
        for sid, why in ((corrupt, "unknown record 'W'"), (nodf, f"its df{nodf}: No such file"),
                         (local, "is local")):
            lines = [ln for ln in logs.splitlines() if f"qf{sid}: left for Sendmail" in ln]
            assert len(lines) == 1 and why in lines[0], (sid, lines, logs[-3000:])
        assert f"qf{locked}" not in logs
        assert " delivery to=" not in logs  # DeliveryMode=queueonly: parked till a queue run
        assert sorted(sm.qf_ids()) == sorted([corrupt, nodf, local, locked])
        p = krelay_queue(relay, "list")
        assert p.returncode == 0, p.stderr
        assert (f"Sendmail queue {q}: 4 files (0 to be taken, 1 locked, 3 left for Sendmail: "
                "cannot be taken)") in p.stdout, p.stdout
        assert f"{q}/qf{locked}: locked" in p.stdout
        assert re.search(rf"{q}/qf{local}: line \d+: recipient '\|/bin/cat' is local", p.stdout)
        assert "1 message\n" in p.stdout  # the good one, in krelay's queue
        p = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                           text=True, timeout=60, env=ENV)
        assert (f"ok     SendmailQueue {q}: 4 queue files (0 to be taken, 1 locked, 3 that "
                "cannot be taken") in p.stdout, p.stdout
    finally:
        holder.close()
    relay.wait_log(rf"from Sendmail queue {q} id={locked} ", timeout=10)
    assert sorted(sm.qf_ids()) == sorted([corrupt, nodf, local])
    assert (q / f"df{corrupt}").exists() and (q / f"df{local}").exists()


@pytest.mark.parametrize("step", ["staged", "marked", "moved"])
def test_crash_at_each_step_of_the_handover(relay_factory, sendmail, step):
    """`krelay queue import-sendmail` killed (_exit) after each step; the
    next run finishes or undoes it: one message in krelay's queue, none
    left in Sendmail's, nothing staged."""
    sm = sendmail(9)
    sid = sm.queue(message(f"crash-{step}"), "-f", "a@client.lab.test", "x@sink.example")
    relay = relay_factory("DeliveryMode=queueonly\n", start=False)
    relay.queue.mkdir(mode=0o700)
    p = krelay_queue(relay, "import-sendmail", sm.mqueue,
                     env=dict(ENV, KRELAY_TEST_SMQ_CRASH=step))
    assert p.returncode == 86, (p.stdout, p.stderr)
    staged = sorted(x.name for x in (relay.queue / "import").iterdir() if x.name != ".lock")
    marker = [f for f in sm.files() if f.startswith("kf")]
    if step == "staged":
        assert len(staged) == 1 and marker == [] and f"qf{sid}" in sm.files()
    elif step == "marked":
        assert len(staged) == 1 and len(marker) == 1 and f"qf{sid}" not in sm.files()
    else:
        assert staged == [] and len(marker) == 1 and len(relay.queued()) == 1
    p = krelay_queue(relay, "import-sendmail", sm.mqueue)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert sm.files() == []
    assert [x.name for x in (relay.queue / "import").iterdir()] == [".lock"]
    assert len(relay.queued()) == 1
    body, env = relay.message(relay.queued()[0])
    assert f"Message-Id: <crash-{step}@client.lab.test>".encode() in body
    assert env["rcpt"] == [("P", "x@sink.example")]


def test_crash_before_the_rename_then_sendmail_delivered_it(relay_factory, sendmail):
    """Cut short after staging, the qf is still Sendmail's: if Sendmail
    delivers it meanwhile (its qf and df gone), the next pass throws the
    staged copy away instead of sending it a second time."""
    sm = sendmail(9)
    sid = sm.queue(message("gone"), "-f", "a@client.lab.test", "x@sink.example")
    relay = relay_factory("DeliveryMode=queueonly\n", start=False)
    relay.queue.mkdir(mode=0o700)
    p = krelay_queue(relay, "import-sendmail", sm.mqueue,
                     env=dict(ENV, KRELAY_TEST_SMQ_CRASH="staged"))
    assert p.returncode == 86
    (sm.mqueue / f"qf{sid}").unlink()
    (sm.mqueue / f"df{sid}").unlink()
    p = krelay_queue(relay, "import-sendmail", sm.mqueue)
    assert p.returncode == 0 and "0 messages taken" in p.stdout, p.stdout
    assert relay.queued() == []
    assert [x.name for x in (relay.queue / "import").iterdir()] == [".lock"]


def test_one_shot_import_into_a_running_relay(relay_factory, sendmail, postfix_sink):
    """A migration: `krelay queue import-sendmail DIR` against a relay that
    runs without SendmailQueue: it is told (SIGUSR2) and delivers at once."""
    pf = postfix_sink
    sm = sendmail(pf.port)
    for i in range(3):
        sm.queue(message(f"oneshot-{i}"), "-f", "a@client.lab.test", "x@sink.example")
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{pf.port}\n")
    p = krelay_queue(relay, "import-sendmail", sm.mqueue)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "3 messages taken" in p.stdout and "told krelay" in p.stdout, p.stdout
    wait_for(lambda: len(sink_deliveries(pf)) >= 3, 30, "3 deliveries at the sink")
    assert sm.files() == []
    p = krelay_queue(relay, "import-sendmail", "/nonexistent/mqueue")
    assert p.returncode == 1 and "/nonexistent/mqueue: No such file" in p.stderr
    relay.conf.write_text(relay.conf.read_text() + "SendmailQueue=/nonexistent/mqueue\n")
    p = subprocess.run([KRELAY, "check", "-C", str(relay.conf)], capture_output=True,
                       text=True, timeout=60, env=ENV)
    assert p.returncode == 1 and re.search(
        r"error  \S+:\d+: SendmailQueue /nonexistent/mqueue: No such file", p.stdout), p.stdout


def test_runner_keeps_only_cap_dac_override(runas_relays, sendmail, krelay_user):
    """Started as root with RunAsUser=krelay: the runner process is krelay
    with CAP_DAC_OVERRIDE alone (no_new_privs), and takes Sendmail's
    root-owned 0600 files."""
    r = runas_relays("DeliveryMode=queueonly\n", start=False)
    sm = sendmail(9)
    sid = sm.queue(message("caps"), "-f", "a@client.lab.test", "x@sink.example")
    assert (sm.mqueue / f"qf{sid}").stat().st_uid == 0
    r.conf.write_text(r.conf.read_text() + f"SendmailQueue={sm.mqueue}\nSendmailQueueInterval=1s\n")
    r.start()
    r.wait_log(rf"from Sendmail queue {sm.mqueue} id={sid} ", timeout=20)
    m = re.search(r"krelay\[(\d+)\]: sendmail queue runner pid=(\d+)", r.logs())
    pid = int(m.group(2))
    st = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        st[k] = v.split()
    assert st["Uid"] == [str(krelay_user.pw_uid)] * 4, st["Uid"]
    assert st["Gid"] == [str(krelay_user.pw_gid)] * 4, st["Gid"]
    assert st["CapPrm"] == ["0000000000000002"] and st["CapEff"] == ["0000000000000002"], st
    assert st["CapAmb"] == ["0000000000000000"] and st["NoNewPrivs"] == ["1"], st
    qid = r.queued()[0]
    assert os.stat(r.queue / "queue" / qid).st_uid == krelay_user.pw_uid


def test_split_queue_directories(relay_factory, sendmail):
    """A Sendmail queue with qf/ and df/ subdirectories (Sendmail splits its
    files when they exist) is read the same way."""
    sm = sendmail(9)
    sid = sm.queue(message("split"), "-f", "a@client.lab.test", "x@sink.example")
    for kind in ("qf", "df"):
        (sm.mqueue / kind).mkdir(mode=0o700)
        (sm.mqueue / f"{kind}{sid}").rename(sm.mqueue / kind / f"{kind}{sid}")
    relay = relay_factory("DeliveryMode=queueonly\n", start=False)
    relay.queue.mkdir(mode=0o700)
    p = krelay_queue(relay, "import-sendmail", sm.mqueue)
    assert p.returncode == 0 and "1 message taken" in p.stdout, (p.stdout, p.stderr)
    assert sorted(x.name for x in sm.mqueue.rglob("*")) == ["df", "qf"]
    body, env = relay.message(relay.queued()[0])
    assert b"Message-Id: <split@client.lab.test>" in body and body.endswith(b"\r\na line\r\n")


def test_df_in_another_queue_directory(relay_factory, sendmail, tmp_path):
    """A qf whose d record puts its df in another queue directory (Sendmail
    with several queues shares df files that way): read from there and
    removed from there; also when a crash left only the marker."""
    sm = sendmail(9)
    other = tmp_path / "mqueue2"
    other.mkdir(mode=0o700)
    relay = relay_factory("DeliveryMode=queueonly\n", start=False)
    relay.queue.mkdir(mode=0o700)
    for crash in (None, "moved"):
        sid = sm.queue(message(f"d-{crash}"), "-f", "a@client.lab.test", "x@sink.example")
        qf = sm.mqueue / f"qf{sid}"
        qf.write_bytes(qf.read_bytes().replace(b"\nT", f"\nd{other}\nT".encode(), 1))
        (sm.mqueue / f"df{sid}").rename(other / f"df{sid}")
        env = dict(ENV, KRELAY_TEST_SMQ_CRASH=crash) if crash else None
        p = krelay_queue(relay, "import-sendmail", sm.mqueue, env=env)
        assert p.returncode == (86 if crash else 0), (p.stdout, p.stderr)
        if crash:
            assert (other / f"df{sid}").exists()
            p = krelay_queue(relay, "import-sendmail", sm.mqueue)
            assert p.returncode == 0, (p.stdout, p.stderr)
        assert sm.files() == [] and list(other.iterdir()) == []
    assert len(relay.queued()) == 2
    for qid in relay.queued():
        body, _ = relay.message(qid)
        assert body.endswith(b"\r\n\r\na line\r\n"), body[-200:]
