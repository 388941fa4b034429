"""RunAsUser: krelay started as root becomes the user krelay (made by
scripts/deps.sh, as the package's postinst makes it) before it serves
anybody, and keeps root's files out of its reach: checked from
/proc/PID/status, from what it writes, and from what it refuses.

These relays live in a directory of their own under /tmp that the user
krelay can reach (pytest's own directories are root's alone)."""
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import ssl
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import KRELAY, Relay
from helpers import wait_for

# CapInh, CapPrm, CapEff, CapAmb: what the relay may use (CapBnd is only a limit)
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


@pytest.fixture
def krelay_user():
    try:
        pw = pwd.getpwnam("krelay")
    except KeyError:
        pytest.fail("no user krelay: scripts/deps.sh makes it")
    return pw


@pytest.fixture
def base(certs):
    """A directory the user krelay can reach, with a copy of the test
    certificates whose keys are root's alone (0600)."""
    d = Path(tempfile.mkdtemp(prefix="krelay-runas.", dir="/tmp"))
    os.chmod(d, 0o755)
    shutil.copytree(certs.dir, d / "certs")
    os.chmod(d / "certs", 0o755)
    for f in (d / "certs").iterdir():
        os.chmod(f, 0o600 if f.suffix == ".key" else 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def runas_relays(base, certs):
    made = []

    def make(conf="", start=True, name=None):
        r = Relay(base / (name or f"r{len(made)}"), certs, conf)
        os.chmod(r.tmp, 0o755)
        # the certificates from the reachable copy; RunAsUser as the test says
        text = r.conf.read_text().replace(str(certs.dir), str(base / "certs"))
        text = text.replace("RunAsUser=root\n", "", 1)  # (the fixture's, first)
        r.conf.write_text(text)
        made.append(r)
        return r.start() if start else r

    yield make
    for r in made:
        rc = r.stop()
        err = r.errors()
        assert "Sanitizer" not in err and "runtime error" not in err, err[-3000:]
        assert rc in (0, None, 1), err[-2000:]


def status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.split()
    return fields


def test_root_start_becomes_krelay(runas_relays, krelay_user):
    r = runas_relays()
    st = status(r.proc.pid)
    uid, gid = krelay_user.pw_uid, krelay_user.pw_gid
    assert st["Uid"] == [str(uid)] * 4, st["Uid"]  # real, effective, saved, fs
    assert st["Gid"] == [str(gid)] * 4, st["Gid"]
    assert st["Groups"] == [str(g) for g in os.getgrouplist("krelay", gid)] or \
        sorted(st["Groups"]) == sorted({str(g) for g in os.getgrouplist("krelay", gid)})
    for f in CAP_FIELDS:
        assert int(st[f][0], 16) == 0, (f, st[f])
    assert st["NoNewPrivs"] == ["1"]
    assert re.search(r"starting .* user=krelay group=krelay ", r.logs())
    # a message goes in; what the relay wrote is krelay's
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nbody\r\n")
    ids = r.queued()
    assert len(ids) == 1
    # first in a segment, then (its next hop refuses: deferred) in queue/
    wait_for(lambda: (r.queue / "queue" / ids[0]).exists(), 10, "queue/ID")
    segs = list((r.queue / "seg").iterdir())
    for p in [r.queue, r.queue / "queue", r.queue / "queue" / ids[0], r.queue / "seg",
              *segs, r.queue / "krelay.pid", r.log]:
        assert p.stat().st_uid == uid, p
    assert stat.S_IMODE(r.queue.stat().st_mode) == 0o700


def test_keys_unreadable_after_drop_keep_the_running_ones(runas_relays, base, krelay_user):
    r = runas_relays()
    r.proc.send_signal(signal.SIGHUP)
    m = r.wait_log(r"reload failed, keeping the running configuration: (.*)")
    assert "Permission denied" in m.group(1)
    assert "krelay runs as user krelay" in m.group(1) and "restart" in m.group(1)
    # STARTTLS still works with the key read at start
    ctx = ssl.create_default_context(cafile=str(base / "certs" / "ca.crt"))
    ctx.check_hostname = False  # (the chain is still verified)
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.starttls(context=ctx)
        assert s.noop()[0] == 250
    # `krelay check` says so beforehand
    out = subprocess.run([KRELAY, "check", "-C", str(r.conf)], capture_output=True,
                         text=True, timeout=30).stdout
    assert re.search(r"warn   ServerKeyFile \S+server.key: Permission denied as user krelay: "
                     r"a reload \(SIGHUP\) cannot re-read it", out), out
    # group krelay, 0640: the next reload reads it
    key = base / "certs" / "server.key"
    os.chown(key, 0, krelay_user.pw_gid)
    os.chmod(key, 0o640)
    r.proc.send_signal(signal.SIGHUP)
    r.wait_log(r"reload ok ")
    out = subprocess.run([KRELAY, "check", "-C", str(r.conf)], capture_output=True,
                         text=True, timeout=30).stdout
    assert re.search(r"ok     ServerKeyFile \S+ can be read by user krelay", out), out


def not_starting(r):
    r.start(wait=False)
    rc = r.proc.wait(30)
    r._err.close()
    assert rc == 1, r.errors()
    return re.findall(r"krelay: not starting: (.*)", r.errors())[-1]


def test_queue_the_user_cannot_write_refuses_to_start(runas_relays, krelay_user):
    # owned by root
    r = runas_relays(start=False)
    r.queue.mkdir(mode=0o700)
    why = not_starting(r)
    assert why == (f"QueueDirectory {r.queue} is owned by root, not by krelay, who the relay "
                   f"runs as: chown -R krelay:krelay {r.queue}")
    # the user's, but anybody may write there
    os.chown(r.queue, krelay_user.pw_uid, krelay_user.pw_gid)
    os.chmod(r.queue, 0o777)
    why = not_starting(r)
    assert why.startswith(f"QueueDirectory {r.queue} is writable by others (mode 0777)")
    os.chmod(r.queue, 0o770)
    assert "is writable by its group (mode 0770)" in not_starting(r)
    # the user's, but a part of it is root's (a run as root before)
    os.chmod(r.queue, 0o700)
    (r.queue / "queue").mkdir(mode=0o700)
    why = not_starting(r)
    assert why == f"QueueDirectory {r.queue}: Permission denied as user krelay", why
    assert r.logs().count("listening on") == 0  # nobody was served
    # made right: it starts
    shutil.chown(r.queue / "queue", "krelay", "krelay")
    r.start()


def test_unknown_user_and_root_by_choice(runas_relays):
    r = runas_relays("RunAsUser=nosuchuser\n", start=False)
    assert not_starting(r) == "RunAsUser: user nosuchuser does not exist"
    r = runas_relays("RunAsUser=krelay:nosuchgroup\n", start=False)
    assert not_starting(r) == "RunAsUser: group nosuchgroup does not exist"
    r = runas_relays("RunAsUser=root\n")
    assert status(r.proc.pid)["Uid"][1] == "0"
    assert "warning: running as root (RunAsUser=root)" in r.logs()
    r.stop()
    # an explicit group
    r = runas_relays("RunAsUser=krelay:nogroup\n")
    assert status(r.proc.pid)["Gid"] == [str(grp.getgrnam("nogroup").gr_gid)] * 4
    assert "user=krelay group=nogroup" in r.logs()


def test_started_as_the_user_stays_it(runas_relays, base, krelay_user):
    """A service manager's User=krelay: no change of user, and a RunAsUser
    naming somebody else is refused."""
    as_krelay = ["setpriv", "--reuid=krelay", "--regid=krelay", "--init-groups"]
    r = runas_relays(start=False)
    r.queue.mkdir(mode=0o700)
    shutil.chown(r.queue, "krelay", "krelay")
    os.chmod(r.tmp, 0o777)  # its log file
    r.prelude = as_krelay
    # a key it cannot read is an error at start (nothing read it before)
    assert not_starting(r) == (f"{r.conf}:10: ServerKeyFile {base}/certs/server.key: "
                               f"Permission denied")
    os.chown(base / "certs" / "server.key", 0, krelay_user.pw_gid)
    os.chmod(base / "certs" / "server.key", 0o640)
    r.start()
    assert status(r.proc.pid)["Uid"] == [str(krelay_user.pw_uid)] * 4
    assert "user=krelay" in r.logs()
    r.stop()
    r2 = runas_relays("RunAsUser=nobody\n", start=False)
    r2.queue.mkdir(mode=0o700)
    shutil.chown(r2.queue, "krelay", "krelay")
    os.chmod(r2.tmp, 0o777)
    r2.prelude = as_krelay
    assert not_starting(r2) == (f"RunAsUser=nobody: krelay was started as uid "
                                f"{krelay_user.pw_uid}, not root, and cannot become another user")


def test_queue_command_as_root_keeps_the_spool_krelays(runas_relays, krelay_user):
    """`krelay queue hold|release` run by root write into the spool as its
    owner: the relay (krelay) can still move and remove what they made."""
    r = runas_relays()
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nbody\r\n")
    qid = r.queued()[0]
    p = subprocess.run([KRELAY, "queue", "-C", str(r.conf), "hold", qid], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: (r.queue / "hold" / qid).exists(), 10, "the message held")
    for path in r.queue.rglob("*"):
        assert path.stat().st_uid == krelay_user.pw_uid, path
    p = subprocess.run([KRELAY, "queue", "-C", str(r.conf), "delete", qid],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: not (r.queue / "hold" / qid).exists(), 10, "the message deleted")
    for path in r.queue.rglob("*"):
        assert path.stat().st_uid == krelay_user.pw_uid, path
