"""Where the log goes: the journal when stderr is systemd's journal stream
($JOURNAL_STREAM), syslog when nobody reads stderr (a daemon's /dev/null)
or when LogFile=syslog[:SOCKET] says so; the same key=value text
everywhere, each line at its priority."""
import os
import re
import signal
import socket
import subprocess

import pytest

# syslog(3)'s facility and priorities: mail = 2 << 3
MAIL_INFO, MAIL_WARNING = 2 * 8 + 6, 2 * 8 + 4


class SyslogCatcher:
    """A syslog daemon's socket: collects the datagrams sent to it."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines = []

    def wait(self, pattern, timeout=10):
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            for ln in self.lines:
                m = re.search(pattern, ln)
                if m:
                    return m
            try:
                self.lines.append(self.sock.recv(8192).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"syslog never got {pattern!r}: {self.lines[-10:]}")

    def close(self):
        self.sock.close()


@pytest.fixture
def catcher(tmp_path):
    c = SyslogCatcher(tmp_path / "log.sock")
    yield c
    c.close()


def break_config_and_reload(relay):
    relay.conf.write_text(relay.conf.read_text() + "NoSuchOption=1\n")
    relay.proc.send_signal(signal.SIGHUP)


def test_journal_stream_gets_priorities_and_the_same_text(relay_factory, monkeypatch):
    r = relay_factory(start=False, tls=False)
    r.stderr.touch()
    st = os.stat(r.stderr)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    r.start()
    break_config_and_reload(r)
    r.wait_log(r"warning: reload failed")
    journal = r.errors()
    assert re.search(r"^<6>krelay \S+ starting .* user=root group=root log=journal\+\S+ ",
                     journal, re.M), journal
    assert re.search(rf"^<6>listening on 127\.0\.0\.1:{r.port}$", journal, re.M), journal
    assert re.search(r"^<4>warning: reload failed, keeping the running configuration: .*"
                     r"unknown option 'NoSuchOption'", journal, re.M), journal
    # (no time or pid of its own: the journal records them); LogFile keeps both
    assert not re.search(r"^\d{4}-", journal, re.M), journal
    start = re.search(r"^\S+Z krelay\[(\d+)\]: krelay \S+ starting ", r.logs(), re.M)
    assert start and int(start.group(1)) == r.proc.pid


def test_logfile_syslog_socket(relay_factory, catcher):
    r = relay_factory(f"LogFile=syslog:{catcher.path}\n", tls=False)
    m = catcher.wait(rf"^<{MAIL_INFO}>\w{{3}} [ \d]\d \d\d:\d\d:\d\d krelay\[(\d+)\]: "
                     rf"krelay \S+ starting .* log=syslog queue=")
    assert int(m.group(1)) == r.proc.pid
    catcher.wait(rf"^<{MAIL_INFO}>.* krelay\[\d+\]: listening on 127\.0\.0\.1:{r.port}$")
    break_config_and_reload(r)
    catcher.wait(rf"^<{MAIL_WARNING}>.* krelay\[\d+\]: warning: reload failed, keeping the "
                 rf"running configuration")
    # a session's lines, key=value as everywhere
    import smtplib
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.ehlo("client.test")
    catcher.wait(rf"^<{MAIL_INFO}>.* krelay\[\d+\]: [0-9a-f]{{16}} smtp connect ")
    # syslog instead of stderr, and no file named "syslog..." was made
    assert "starting" not in r.errors()
    assert not list(r.tmp.glob("syslog*"))


def test_daemon_without_stderr_logs_to_syslog(relay_factory, tmp_path, catcher):
    """stderr is /dev/null (a daemon started without systemd): the lines go
    to /dev/log, here the test's socket bound over it in a mount namespace
    of the relay's own."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0 and "propagation" in probe.stderr:
        # a chroot (the fresh-root check runs make test in one): "/" is no
        # mount point, so unshare cannot make the namespace's mounts
        # private, and binding over /dev without that would reach the host
        pytest.skip("/ is not a mount point (a chroot): no private mount namespace here")
    dev = tmp_path / "dev"
    dev.mkdir()
    for n in ("null", "zero", "full", "random", "urandom"):
        (dev / n).touch()
    (dev / "log").touch()
    script = ('d="$1"; s="$2"; shift 2; for n in null zero full random urandom; do '
              'mount --bind /dev/$n "$d/$n" || exit 1; done; '
              'mount --bind "$s" "$d/log" && mount --rbind "$d" /dev || exit 1; '
              'exec "$@" 2>/dev/null')
    r = relay_factory(start=False, tls=False,
                      prelude=["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script, "sh", str(dev), str(catcher.path)])
    r.conf.write_text(re.sub(r"(?m)^LogFile=.*\n", "", r.conf.read_text()))
    r.start()
    catcher.wait(rf"^<{MAIL_INFO}>.* krelay\[\d+\]: krelay \S+ starting .* log=syslog queue=")
    catcher.wait(rf"listening on 127\.0\.0\.1:{r.port}$")
    assert r.errors() == ""
