"""krelay under a supervisor (systemd's Type=notify): it says READY=1 on
$NOTIFY_SOCKET once its listeners take connections, RELOADING=1 then
READY=1 around a SIGHUP, and STOPPING=1 when it stops.  The socket here is
a plain AF_UNIX datagram socket, as systemd makes it."""
import signal
import socket

import pytest

from conftest import Relay


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    yield s, str(path)
    s.close()


def messages(sock):
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_reloading_stopping(tmp_path, certs, notify_socket, abstract):
    sock, path = notify_socket
    if abstract:  # "@name": the abstract namespace, as systemd may give it
        sock.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"krelay-test-{tmp_path.name}"
        sock.bind("\0" + name)
        sock.settimeout(20)
        path = "@" + name
    relay = Relay(tmp_path / "r", certs, "", prelude=["env", f"NOTIFY_SOCKET={path}"])
    relay.start(wait=False)
    try:
        m = messages(sock)
        assert m["READY"] == "1" and m["MAINPID"] == str(relay.proc.pid), m
        assert m["STATUS"].startswith("relaying"), m
        # ready means the listener takes connections and says its greeting
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as c:
            assert c.recv(100).startswith(b"220 ")
        relay.proc.send_signal(signal.SIGHUP)
        assert messages(sock) == {"RELOADING": "1"}
        m = messages(sock)
        assert m["READY"] == "1", m
        relay.wait_log(r"reload ok")
    finally:
        rc = relay.stop()
    assert rc == 0 and "Sanitizer" not in relay.errors(), relay.errors()[-2000:]
    m = messages(sock)
    assert m["STOPPING"] == "1", m
    sock.close()


def test_a_supervisor_that_cannot_be_told_is_not_fatal(tmp_path, certs):
    relay = Relay(tmp_path / "r", certs, "",
                  prelude=["env", f"NOTIFY_SOCKET={tmp_path}/nobody-listens"]).start()
    relay.wait_log(r"warning: NOTIFY_SOCKET=\S+: No such file or directory")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as c:
        assert c.recv(100).startswith(b"220 ")
    assert relay.stop() == 0 and "Sanitizer" not in relay.errors(), relay.errors()[-2000:]
    assert relay.logs().count("NOTIFY_SOCKET") == 1  # said once, not at every event


def test_unit_verifies_and_is_confined(tmp_path):
    """scripts/krelay.service: systemd-analyze verify finds nothing to say
    (with the binaries and man pages installed into a staging root), and
    its offline security review rates the unit's exposure OK (under 3)."""
    import re
    import subprocess
    from conftest import ROOT

    dest = tmp_path / "root"
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    unit = tmp_path / "krelay.service"
    unit.write_text((ROOT / "scripts" / "krelay.service").read_text()
                    .replace("/usr/sbin/krelay", f"{dest}/usr/sbin/krelay"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MANPATH": f"{dest}/usr/share/man"}
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60, env=env)
    m = re.search(r"Overall exposure level for krelay\.service: ([0-9.]+) (\w+)", sec.stdout)
    assert m and float(m.group(1)) < 3.0 and m.group(2) == "OK", sec.stdout[-1500:]
    # the daily TLS reports: the service its timer starts, and the timer
    for name in ("krelay-tlsrpt.service", "krelay-tlsrpt.timer"):
        assert (dest / "lib" / "systemd" / "system" / name).exists() or \
            list(dest.rglob(name)), f"{name} not installed"
        u = tmp_path / name
        u.write_text((ROOT / "scripts" / name).read_text()
                     .replace("/usr/sbin/krelay", f"{dest}/usr/sbin/krelay"))
    v = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "krelay-tlsrpt.timer"),
                        str(tmp_path / "krelay-tlsrpt.service")], capture_output=True, text=True,
                       timeout=60, env=env)
    assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
