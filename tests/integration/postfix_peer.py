"""Private Postfix instances on loopback, as peers for krelay's tests.

Each `Postfix` is a complete instance of the system's Postfix 3.7 built in
its own directory: config_directory (main.cf, master.cf), queue_directory,
data_directory, a log file (`maillog_file`, written by the postlog service),
all services unchrooted, smtpd on a free 127.0.0.1 port.  Nothing under
/etc/postfix is read or written and the system instance is never started:
every command gets `-c CONFDIR` (and MAIL_CONFIG=CONFDIR), which Postfix
honours for root without `alternate_config_directories`.

Roles:

  sink   a downstream server krelay relays into: STARTTLS offered
         (certs.server_crt/key, TLS 1.2+, client certificates asked for and
         verified against certs.ca), every recipient from 127.0.0.0/8
         accepted, and every message delivered by the pipe(8) transport
         `fsink` into `outdir` exactly as Postfix hands it to a delivery
         agent: its own Received header on top, LF line ends (Postfix's
         internal form; pipe adds no From_ line, Return-Path or Delivered-To
         since flags has no F, R or D), no dot-stuffing.  Each delivery is
         `QUEUEID.N.eml` plus `QUEUEID.N.env` (sender and recipients).

  relay  an upstream server: accepts mail from 127.0.0.0/8 and relays all of
         it to `relayhost` (krelay) with TLS required (`encrypt` by default),
         presenting certs.client_crt/key, TLS 1.2+, fast retries.

Postfix quirks worth knowing: its SMTP client (3.7) never sends BDAT (CHUNKING
is server-side only), so a relay instance always uses DATA; the sink's smtpd
does offer CHUNKING.  pipe(8) expands a null sender to MAILER-DAEMON unless
told otherwise (null_sender= is set here, so it is empty in .env).  A message
to several domains is delivered once per domain (one file each).

Both use `local_header_rewrite_clients =` so that Postfix's cleanup adds no
Message-Id, Date, From or To header to mail from 127.0.0.1 and rewrites no
address: the content below Postfix's Received header is byte-for-byte what
the client sent (modulo CRLF -> LF in the sink's files).

Pytest fixtures (not picked up by conftest; import them into the test
module): `postfix_sink` (a started sink) and `postfix_relay_factory`
(`make(relayhost_port, **kw)` -> a started relay).  Every instance is stopped
at teardown, even when the test failed.

The instance directory must be traversable by the `postfix` and `nobody`
users; pytest's tmp_path (/tmp/pytest-of-root, mode 700) is not, so the
instance lives in a mkdtemp() under /tmp (removed at stop) and `tmpdir` gets
a copy of the maillog and the delivered messages at stop, for post-mortems.
"""
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"
CMD_TIMEOUT = 60


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable_by_others(path: Path):
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
    return True


# The services of Debian's /usr/share/postfix/master.cf.dist, chroot = n
# everywhere (the chroot would need copies of /etc files and libraries).
MASTER_CF_SERVICES = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# Delivery agent of the sink: stdin is the message as pipe(8) gives it.
# Written to a dot-file and renamed, so a visible .eml is always complete.
DELIVER_SH = """\
#!/bin/sh
# deliver.sh OUTDIR QUEUE_ID SENDER RECIPIENT...
set -e
umask 022
out=$1 id=$2 sender=$3
shift 3
n=$$
cat >"$out/.tmp.$id.$n.eml"
{
	printf 'sender %s\\n' "$sender"
	for r in "$@"; do printf 'rcpt %s\\n' "$r"; done
} >"$out/.tmp.$id.$n.env"
mv "$out/.tmp.$id.$n.env" "$out/$id.$n.env"
mv "$out/.tmp.$id.$n.eml" "$out/$id.$n.eml"
"""


class PostfixError(AssertionError):
    pass


class Postfix:
    """A private Postfix instance; see the module docstring.

    role        "sink" or "relay"
    relayhost   (relay) the next hop's port on 127.0.0.1, or "host:port"
    tls_level   (relay) smtp_tls_security_level: "encrypt" (default),
                "may", "verify", "secure", "none"...; with "verify"/"secure"
                the name matched is `tls_match` (default "relay.test", the
                name in mkcerts' server certificate), via an inline policy map
    client_cert (relay) present certs.client_crt/key (default True)
    hostname    myhostname (default postfix.test)
    debug_peer  log the SMTP conversation with 127.0.0.1 (debug_peer_list)
    main        dict of extra main.cf settings (override the defaults)
    master_extra  text appended to master.cf
    """

    def __init__(self, tmpdir, certs, role="sink", relayhost=None, tls_level="encrypt",
                 tls_match="relay.test", client_cert=True, hostname="postfix.test",
                 debug_peer=False, main=None, master_extra=""):
        if role not in ("sink", "relay"):
            raise ValueError(f"role must be 'sink' or 'relay', not {role!r}")
        if role == "relay" and relayhost is None:
            raise ValueError("role='relay' needs relayhost")
        self.role = role
        self.certs = certs
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.name = f"postfix-{role}-{self.port}"
        if _traversable_by_others(self.tmpdir):
            self.base = self.tmpdir / self.name
            self.base.mkdir()
            self._own_base = False
        else:
            self.base = Path(tempfile.mkdtemp(prefix=f"krelay-{self.name}-", dir="/tmp"))
            self._own_base = True
        os.chmod(self.base, 0o755)
        self.confdir = self.base / "conf"
        self.queuedir = self.base / "queue"
        self.datadir = self.base / "data"
        self.outdir = self.base / "out"
        self.maillog = self.base / "maillog"
        self.env = dict(os.environ, MAIL_CONFIG=str(self.confdir))
        self.running = False
        self._write_config(relayhost, tls_level, tls_match, client_cert, hostname, debug_peer,
                           main or {}, master_extra)

    # ---------------------------------------------------------------- config

    def _write_config(self, relayhost, tls_level, tls_match, client_cert, hostname, debug_peer,
                      extra, master_extra):
        for d in (self.confdir, self.queuedir):
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)
        self.datadir.mkdir(mode=0o700)
        shutil.chown(self.datadir, "postfix", "postfix")
        c = self.certs
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queuedir),
            "data_directory": str(self.datadir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": hostname,
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "mynetworks_style": "host",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # No header completion or address rewriting for mail from
            # 127.0.0.1: what the client sends is what goes out.
            "local_header_rewrite_clients": "",
            "append_dot_mydomain": "no",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "syslog_name": self.name,
            "delay_warning_time": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(c.server_crt),
            "smtpd_tls_key_file": str(c.server_key),
            "smtpd_tls_CAfile": str(c.ca),
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_session_cache_database": "",
            "smtp_tls_session_cache_database": "",
            "smtp_tls_CAfile": str(c.ca),
            "smtp_tls_loglevel": "1",
            "smtp_tls_protocols": ">=TLSv1.2",
            "smtp_tls_mandatory_protocols": ">=TLSv1.2",
        }
        if self.role == "sink":
            self.outdir.mkdir(mode=0o755)
            shutil.chown(self.outdir, "nobody", "nogroup")
            deliver = self.base / "deliver.sh"
            deliver.write_text(DELIVER_SH)
            os.chmod(deliver, 0o755)
            main.update({
                "default_transport": "fsink",
                "relay_transport": "fsink",
                "local_transport": "fsink",
                "virtual_transport": "fsink",
                "smtp_tls_security_level": "may",
            })
            transport = (f"fsink     unix  -       n       n       -       -       pipe\n"
                         f"  flags=q user=nobody null_sender= argv={deliver} {self.outdir} "
                         "${queue_id} ${sender} ${recipient}\n")
        else:
            if isinstance(relayhost, int) or str(relayhost).isdigit():
                relayhost = f"127.0.0.1:{relayhost}"
            host, _, port = str(relayhost).rpartition(":")
            host = host.strip("[]")
            self.relayhost = f"[{host}]:{port}"
            main.update({
                "relayhost": self.relayhost,
                "local_transport": "error:local delivery is disabled",
                "smtp_tls_security_level": tls_level,
            })
            if tls_level in ("verify", "secure"):
                main["smtp_tls_policy_maps"] = (
                    f"inline:{{ {{{self.relayhost} = {tls_level} match={tls_match}}} }}")
            if client_cert:
                main["smtp_tls_cert_file"] = str(c.client_crt)
                main["smtp_tls_key_file"] = str(c.client_key)
            transport = ""
        if debug_peer:
            main["debug_peer_list"] = "127.0.0.1"
            main["debug_peer_level"] = "2"
        main.update(extra)
        (self.confdir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.confdir / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_CF_SERVICES + transport
            + master_extra)

    # ------------------------------------------------------------- commands

    def cmd(self, *args, check=True, timeout=CMD_TIMEOUT):
        """Runs a Postfix command (postfix, postqueue, postconf, ...) for
        this instance: `-c CONFDIR` is added after the program name."""
        argv = [args[0], "-c", str(self.confdir), *args[1:]]
        try:
            r = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise PostfixError(f"{' '.join(argv)} timed out after {timeout}s\n{self._tail()}") from e
        if check and r.returncode != 0:
            raise PostfixError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
                               f"\n{self._tail()}")
        return r

    def postconf(self, name):
        return self.cmd(POSTCONF, "-h", name).stdout.strip()

    def start(self, timeout=30):
        # "postfix check" runs post-install create-missing (queue
        # directories with the right owners) and the permission checks;
        # quick-start then spares "postfix start" a second full check.
        self.cmd(POSTFIX, "check", timeout=timeout)
        (self.queuedir / "quick-start").touch()
        for attempt in range(3):
            try:
                self.cmd(POSTFIX, "start", timeout=timeout)
                break
            except PostfixError as e:
                # _free_port() only found the port free a moment ago: when
                # something else took it meanwhile, take another and retry
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                master = self.confdir / "master.cf"
                old, self.port = self.port, _free_port()
                master.write_text(master.read_text().replace(
                    f"127.0.0.1:{old} inet", f"127.0.0.1:{self.port} inet", 1))
        self.running = True
        deadline = time.time() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(max(1.0, deadline - time.time()))
                    banner = s.recv(512)
                    if banner.startswith(b"220 "):
                        s.sendall(b"QUIT\r\n")
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise PostfixError(f"{self.name}: smtpd never greeted on port {self.port}\n"
                                   f"{self._tail()}")
            time.sleep(0.05)
        return self

    def master_pid(self):
        try:
            return int((self.queuedir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout=20):
        """Stops the instance (postfix stop; postfix abort and SIGKILL of
        its own process group as fallbacks); keeps a copy of the log and
        the delivered messages in tmpdir; removes a /tmp instance dir."""
        if not self.running:
            return
        pid = self.master_pid()
        try:
            self.cmd(POSTFIX, "stop", check=False, timeout=timeout)
        except PostfixError:
            self.cmd(POSTFIX, "abort", check=False, timeout=10)
        if pid:
            # The master is its process group's leader; its children (smtpd,
            # qmgr, ...) are in that group.  Wait for all of them to exit.
            deadline = time.time() + timeout
            while time.time() < deadline and _group_alive(pid):
                time.sleep(0.05)
            if _group_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.running = False
        if self._own_base:
            keep = self.tmpdir / self.name
            keep.mkdir(exist_ok=True)
            for f in [self.maillog, self.confdir / "main.cf", self.confdir / "master.cf"]:
                if f.exists():
                    shutil.copy(f, keep / f.name)
            if self.outdir.exists():
                shutil.copytree(self.outdir, keep / "out", dirs_exist_ok=True)
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ logs

    def log(self):
        """The instance's maillog, as text."""
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def _tail(self, n=4000):
        return f"--- {self.name} maillog (tail) ---\n{self.log()[-n:]}"

    def wait_log(self, pattern, timeout=20):
        """Waits until the maillog matches regex `pattern`; returns the match."""
        deadline = time.time() + timeout
        while True:
            m = re.search(pattern, self.log())
            if m:
                return m
            if time.time() > deadline:
                raise PostfixError(f"{self.name} maillog never matched {pattern!r}\n{self._tail()}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ sink

    def messages(self):
        """(filename, bytes) of every delivered message, oldest first."""
                # deliver.sh writes ".tmp.*" files and renames them into place: skip those
        files = sorted((p for p in self.outdir.glob("*.eml") if not p.name.startswith(".")),
                       key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [(p.name, p.read_bytes()) for p in files]

    def envelope(self, filename):
        """(sender, [recipients]) of a delivered message (.eml name)."""
        text = (self.outdir / filename).with_suffix(".env").read_text()
        sender, rcpts = None, []
        for line in text.splitlines():
            key, _, val = line.partition(" ")
            if key == "sender":
                sender = val
            elif key == "rcpt":
                rcpts.append(val)
        return sender, rcpts

    def wait_messages(self, n, timeout=30):
        """Waits until at least n messages were delivered; returns messages()."""
        deadline = time.time() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.time() > deadline:
                raise PostfixError(f"{self.name}: {len(msgs)} of {n} messages delivered in "
                                   f"{timeout}s\n{self.mailq()}\n{self._tail()}")
            time.sleep(0.1)

    # ----------------------------------------------------------------- queue

    def flush(self):
        """postqueue -f: attempt delivery of everything queued now."""
        self.cmd(POSTQUEUE, "-f")

    def mailq(self):
        return self.cmd(POSTQUEUE, "-p", check=False).stdout

    def queue_empty(self):
        r = self.cmd(POSTQUEUE, "-j")
        return r.stdout.strip() == ""

    def wait_queue_empty(self, timeout=30):
        deadline = time.time() + timeout
        while not self.queue_empty():
            if time.time() > deadline:
                raise PostfixError(f"{self.name}: queue not empty after {timeout}s\n"
                                   f"{self.mailq()}\n{self._tail()}")
            time.sleep(0.2)


def _group_alive(pgid):
    """Whether any live (non-zombie) process is in process group pgid."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def postfix_sink(tmp_path, certs):
    """A started Postfix sink (see Postfix, role="sink")."""
    pf = Postfix(tmp_path / "postfix-sink", certs, role="sink")
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


@pytest.fixture
def postfix_relay_factory(tmp_path, certs):
    """make(relayhost, **kw) -> a started Postfix relaying everything to
    relayhost (a port on 127.0.0.1, or "host:port")."""
    made = []

    def make(relayhost, start=True, **kw):
        pf = Postfix(tmp_path / f"postfix-relay{len(made)}", certs, role="relay",
                     relayhost=relayhost, **kw)
        made.append(pf)
        return pf.start() if start else pf

    try:
        yield make
    finally:
        for pf in made:
            pf.stop()
