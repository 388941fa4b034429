"""krelay that cannot start after its configuration loaded (a Listen port
taken by another program, a LogFile it cannot open) says why and exits 1,
with no sanitizer report: what it built before failing (configuration, TLS
contexts, workers) is given back.

A Listen port taken by another program between the tests' free_port() and
krelay's bind gave exactly the intermittent LeakSanitizer report seen in
the integration tests: the runtime leaked, and the fixture's 4000-character
tail of the report showed only its configuration strings and SSL_CTXs,
indirectly leaked."""
import smtplib
import socket

import pytest

from conftest import Relay


def start_and_fail(r: Relay, timeout=20):
    r.start(wait=False)
    try:
        rc = r.proc.wait(timeout)
    finally:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()
        r._err.close()
    return rc, r.errors()


@pytest.mark.parametrize("which", ["port", "smtps_port"])
def test_listen_port_taken_exits_1_without_leak(tmp_path, certs, which):
    """The first Listen line's port taken, or the second's (then the first
    listener of the first worker was set up already)."""
    r = Relay(tmp_path / "r", certs, "Workers=2\n")
    port = getattr(r, which)
    with socket.socket() as s:  # no SO_REUSEPORT: krelay's bind fails
        s.bind(("127.0.0.1", port))
        s.listen()
        rc, err = start_and_fail(r)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert rc == 1, err
    assert f"not starting: Listen=127.0.0.1:{port}: Address already in use" in err, err


def test_log_file_unopenable_exits_1_without_leak(tmp_path, certs):
    r = Relay(tmp_path / "r", certs, f"LogFile={tmp_path}\n")  # a directory
    rc, err = start_and_fail(r)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert rc == 1, err
    assert f"not starting: LogFile {tmp_path}" in err, err


def test_listen_port_taken_with_mail_queued_exits_1_without_leak(tmp_path, certs):
    """A restart that finds mail in the spool (the IDs it lists at start are
    given back too), then its port taken; the mail stays queued."""
    r = Relay(tmp_path / "r", certs, "Workers=2\n").start()
    try:
        with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as c:
            c.sendmail("s@example.org", ["r@example.com"], b"Subject: kept\r\n\r\nbody\r\n")
    finally:
        assert r.stop() == 0, r.errors()
    queued = r.queued()
    assert len(queued) == 1, queued
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        s.bind(("127.0.0.1", r.port))
        s.listen()
        rc, err = start_and_fail(r)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert rc == 1, err
    assert r.queued() == queued


def test_fixture_moves_to_new_ports_when_one_was_taken(relay_factory):
    """The tests' own fixture: a port taken between free_port() and krelay's
    bind makes it pick new ports and start again, not fail the test."""
    r = relay_factory(start=False)
    taken = socket.socket()
    taken.bind(("127.0.0.1", r.port))
    taken.listen(1)
    try:
        old = r.port
        r.start()
        assert r.port != old
        with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
            assert s.noop()[0] == 250
        assert "Sanitizer" not in r.errors()
    finally:
        taken.close()
