"""Debian's Sendmail 8.17, unpacked from its packages into build/sendmail
(tests/sendmail/fetch.sh: apt-get download + dpkg -x, never installed, as
that would replace the machine's MTA), for the tests that need the real
thing: its m4 macros make sendmail.cf files, and its binary queues mail
(`sendmail -odq`) and runs its queue (`sendmail -q`) in a directory of the
test's own.

The binary runs as root with -C (a test's sendmail.cf), in a UTS namespace
whose host name is qualified (relay.lab.test): unqualified, Sendmail sleeps
a minute looking for its own name."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

HOSTNAME = "relay.lab.test"


@pytest.fixture(scope="session")
def sendmail_root():
    p = subprocess.run([str(ROOT / "tests" / "sendmail" / "fetch.sh")], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip())


def m4_cf(sendmail_root, mc_text, tmp_path):
    """sendmail.cf from mc_text, by m4 and Debian's cf/ macros (their
    absolute paths pointed at the unpacked copy)."""
    cfdir = tmp_path / "cf"
    if not cfdir.exists():
        shutil.copytree(sendmail_root / "usr/share/sendmail/cf", cfdir)
        for f in cfdir.rglob("*"):
            if f.is_file() and b"/usr/share/sendmail/cf" in f.read_bytes():
                f.write_bytes(f.read_bytes().replace(b"/usr/share/sendmail/cf",
                                                     str(cfdir).encode()))
    text = mc_text.replace("/usr/share/sendmail/cf", str(cfdir))
    text = "\n".join(ln for ln in text.splitlines() if "/etc/mail/m4/" not in ln) + "\n"
    mc = tmp_path / "for-m4.mc"
    mc.write_text(text)
    p = subprocess.run(["m4", str(mc)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout


class Sendmail:
    """A Sendmail whose queue is tmp/mqueue and whose relay mailer sends
    everything to 127.0.0.1:smart_port (SMART_HOST)."""

    def __init__(self, root: Path, tmp: Path, smart_port: int):
        self.root = root
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.mqueue = tmp / "mqueue"
        self.mqueue.mkdir(mode=0o700)
        (tmp / "aliases").write_text("")
        mc = f"""include(`/usr/share/sendmail/cf/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{HOSTNAME}')dnl
define(`QUEUE_DIR', `{self.mqueue}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`SMART_HOST', `relay:[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {smart_port}')dnl
define(`confALIAS_FILE', `{tmp}/aliases')dnl
define(`confHELP_FILE', `')dnl
define(`STATUS_FILE', `{tmp}/statistics')dnl
define(`confPID_FILE', `{tmp}/sendmail.pid')dnl
define(`confTO_CONNECT', `10s')dnl
MAILER(`smtp')dnl
"""
        self.cf = tmp / "sendmail.cf"
        self.cf.write_text(m4_cf(root, mc, tmp))

    def run(self, *args, stdin=b"", timeout=60):
        binary = self.root / "usr/libexec/sendmail/sendmail"
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {HOSTNAME} && exec "$@"', "sh",
               str(binary), "-C", str(self.cf), *map(str, args)]
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)

    def queue(self, msg: bytes, *args):
        """`sendmail -odq -i ARGS` < msg: queued, not delivered; its ID."""
        before = set(self.qf_ids())
        p = self.run("-odq", "-i", *args, stdin=msg)
        assert p.returncode == 0, p.stderr
        new = set(self.qf_ids()) - before
        assert len(new) == 1, (new, p.stderr)
        return new.pop()

    def qf_ids(self):
        return sorted(p.name[2:] for p in self.mqueue.iterdir() if p.name.startswith("qf"))

    def files(self):
        return sorted(p.name for p in self.mqueue.iterdir())
