"""Slow clients and connection floods (RFC 5321 4.5.3.2; Postfix's
smtpd_timeout as a deadline, smtpd_min_data_rate and
smtpd_client_connection_count_limit).

A client that sends one byte a second must not keep a session alive past
CommandTimeout (a command line, the wait for it, a TLS handshake) or
DataTimeout (the whole DATA or BDAT content): the timeouts are deadlines,
not idle timers that each byte restarts.  An honest client that is slow
but finishes within them is served.  One client address cannot hold more
than MaxConnectionsPerClient sessions, counted across all workers, while
other addresses still get in.

Every trickle below sends at most a few bytes a second and stops after
2 x the timeout (+1 s), whether the relay answered or not."""
import re
import select
import signal
import socket
import ssl
import time

import pytest

from helpers import wait_for

TIMEOUT = 3  # seconds, CommandTimeout / DataTimeout in these tests
GIVE_UP = 2 * TIMEOUT + 1  # a trickle stops here; the relay must act before


def connect(port, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_reply(s, buf=b""):
    """One SMTP reply (all its lines); returns (code, last line text, rest)."""
    while True:
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise EOFError(f"closed; unterminated input {buf!r}")
            buf += chunk
        line, _, buf = buf.partition(b"\r\n")
        assert re.fullmatch(rb"[2-5][0-9][0-9]([ -].*)?", line, re.S), line
        if len(line) == 3 or line[3:4] == b" ":
            return int(line[:3]), line[4:].decode(), buf


def cmd(s, line, code):
    s.sendall(line.encode() + b"\r\n")
    got, text, _ = read_reply(s)
    assert got == code, f"{line}: {got} {text}"
    return text


def trickle(s, data, interval=1.0, give_up=GIVE_UP):
    """Sends data one byte per interval until the peer says something or
    closes, or give_up seconds pass.  Returns (seconds from the first byte,
    what came back, whether the peer closed)."""
    t0 = time.monotonic()
    got = b""
    for b in data:
        try:
            s.sendall(bytes([b]))
        except OSError:
            return time.monotonic() - t0, got, True
        end = min(time.monotonic() + interval, t0 + give_up)
        while (left := end - time.monotonic()) > 0:
            r, _, _ = select.select([s], [], [], left)
            if not r:
                continue
            try:
                chunk = s.recv(4096)
            except OSError:  # ECONNRESET: closed with our bytes unread
                return time.monotonic() - t0, got, True
            if not chunk:
                return time.monotonic() - t0, got, True
            got += chunk
            if b"\r\n" in got:
                return time.monotonic() - t0, got, False
        if time.monotonic() >= t0 + give_up:
            break
    return time.monotonic() - t0, got, False


def closed_soon(s, timeout=3):
    """True when the peer closes within timeout (any replies before are
    drained)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([s], [], [], left)
        if r:
            try:
                if not s.recv(4096):
                    return True
            except OSError:
                return True
    return False


def client_hello():
    """The bytes of a real TLS ClientHello, as Python's ssl would send them."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="relay.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 2 * GIVE_UP
    return hello


def greeted(port, source="127.0.0.1"):
    s = connect(port, source)
    code, text, _ = read_reply(s)
    assert (code, text) == (220, "relay.test ESMTP krelay"), (code, text)
    return s


def start_tx(s):
    cmd(s, "EHLO client.test", 250)
    cmd(s, "MAIL FROM:<a@client.test>", 250)
    cmd(s, "RCPT TO:<b@example.org>", 250)


def assert_cut_off(relay, elapsed, got, closed, state):
    """The relay answered 421 4.4.2 and closed within the deadline."""
    assert got.startswith(b"421 4.4.2 relay.test Error: timeout exceeded\r\n"), (elapsed, got)
    assert elapsed < 2 * TIMEOUT, elapsed
    relay.wait_log(rf"smtp timeout state={state}\b")
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="timeout"')


def wait_sessions_closed(relay, timeout=5.0):
    """Every logged connect has its disconnect (the fixture's readiness
    probe included), so no session is counted any more."""
    def done():
        log = relay.logs()
        n = log.count(" smtp connect ")
        return n > 0 and n == log.count(" smtp disconnect ")
    wait_for(done, timeout, "all sessions to end")
    time.sleep(0.1)  # the count drops just after the disconnect line


# ---- deadlines ---------------------------------------------------------------


def test_command_line_one_byte_a_second(relay_factory):
    """A command line sent a byte a second is cut off by CommandTimeout,
    although no single byte ever waits that long."""
    relay = relay_factory(conf=f"CommandTimeout={TIMEOUT}", tls=False)
    with greeted(relay.port) as s:
        elapsed, got, closed = trickle(s, b"EHLO a-client-that-takes-its-time.example\r\n")
        assert_cut_off(relay, elapsed, got, closed, "cmd")
        assert closed or closed_soon(s)


def test_data_one_byte_a_second(relay_factory):
    """Message content sent a byte a second is cut off by DataTimeout, and
    nothing of it is queued."""
    relay = relay_factory(conf=f"CommandTimeout=30\nDataTimeout={TIMEOUT}", tls=False)
    with greeted(relay.port) as s:
        start_tx(s)
        cmd(s, "DATA", 354)
        elapsed, got, closed = trickle(s, b"Subject: slow\r\n\r\n" + b"x" * 40 + b"\r\n.\r\n")
        assert_cut_off(relay, elapsed, got, closed, "data")
        assert closed or closed_soon(s)
    assert relay.queued() == []


def test_bdat_one_byte_a_second(relay_factory):
    """A BDAT chunk sent a byte a second is cut off by DataTimeout."""
    relay = relay_factory(conf=f"CommandTimeout=30\nDataTimeout={TIMEOUT}", tls=False)
    with greeted(relay.port) as s:
        start_tx(s)
        s.sendall(b"BDAT 60 LAST\r\n")
        elapsed, got, closed = trickle(s, b"Subject: slow\r\n\r\n" + b"y" * 43)
        assert_cut_off(relay, elapsed, got, closed, "bdat")
        assert closed or closed_soon(s)
    assert relay.queued() == []


def test_client_hello_one_byte_a_second_smtps(relay_factory):
    """On the implicit TLS listener, a ClientHello sent a byte a second is
    dropped once CommandTimeout (which bounds the handshake) has passed."""
    relay = relay_factory(conf=f"CommandTimeout={TIMEOUT}")
    with connect(relay.smtps_port) as s:
        elapsed, got, closed = trickle(s, client_hello())
        assert closed, (elapsed, got)
        assert got == b"" and elapsed < 2 * TIMEOUT, (elapsed, got)
    relay.wait_log(r"smtp timeout state=handshake\b")
    relay.wait_log(r'smtp disconnect client=127\.0\.0\.1 .*reason="timeout"')


def test_client_hello_one_byte_a_second_after_starttls(relay_factory):
    """After STARTTLS, a ClientHello sent a byte a second is dropped once
    CommandTimeout has passed."""
    relay = relay_factory(conf=f"CommandTimeout={TIMEOUT}", smtps=False)
    with greeted(relay.port) as s:
        cmd(s, "EHLO client.test", 250)
        cmd(s, "STARTTLS", 220)
        elapsed, got, closed = trickle(s, client_hello())
        assert closed, (elapsed, got)
        assert got == b"" and elapsed < 2 * TIMEOUT, (elapsed, got)
    relay.wait_log(r"smtp timeout state=handshake\b")


def test_slow_but_complete_client_is_served(relay_factory):
    """Each command, and the content, within its deadline: served, although
    the session as a whole lasts far longer than either timeout."""
    relay = relay_factory(conf=f"CommandTimeout={TIMEOUT}\nDataTimeout={TIMEOUT}", tls=False)
    with greeted(relay.port) as s:
        t0 = time.monotonic()
        for line in (b"EHLO client.test\r\n", b"NOOP\r\n", b"MAIL FROM:<a@client.test>\r\n",
                     b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"):
            # each line in 3 pieces over 1.6 s: within the 3 s deadline
            third = len(line) // 3
            s.sendall(line[:third])
            time.sleep(0.8)
            s.sendall(line[third:2 * third])
            time.sleep(0.8)
            s.sendall(line[2 * third:])
            code, _, rest = read_reply(s)
            assert rest == b""
            assert code == (354 if line == b"DATA\r\n" else 250), (line, code)
        for piece in (b"Subject: slow\r\n\r\n", b"body\r\n", b".\r\n"):
            time.sleep(0.8)
            s.sendall(piece)
        code, text, _ = read_reply(s)
        assert code == 250 and text.startswith("2.0.0 Ok: queued as "), (code, text)
        assert time.monotonic() - t0 > 2 * TIMEOUT
        cmd(s, "QUIT", 221)


def steady_message(s, pieces=8, size=2048, interval=0.5):
    """Sends a message's content at size/interval bytes a second (4 KiB/s,
    for 4 s by default); returns the reply to its end, or None when the
    relay ended the session first."""
    s.sendall(b"Subject: steady\r\n\r\n")
    try:
        for _ in range(pieces):
            time.sleep(interval)
            s.sendall((b"z" * 62 + b"\r\n") * (size // 64))
        s.sendall(b".\r\n")
    except OSError:
        return None
    try:
        return read_reply(s)[:2]
    except (EOFError, OSError):
        return None


@pytest.mark.parametrize("rate", [1000, 0])
def test_min_data_rate(relay_factory, rate):
    """DataTimeout=2: content that arrives steadily above MinDataRate (4 KiB/s
    against 1000 B/s) earns its deadline more time and is queued after 4 s;
    with MinDataRate=0 the same content is cut off at 2 s."""
    relay = relay_factory(conf=f"CommandTimeout=30\nDataTimeout=2\nMinDataRate={rate}",
                          tls=False)
    with greeted(relay.port) as s:
        start_tx(s)
        cmd(s, "DATA", 354)
        t0 = time.monotonic()
        got = steady_message(s)
        if rate:
            assert got is not None and got[0] == 250, got
            assert time.monotonic() - t0 > 3.5
        else:
            assert got is None or got == (421, "4.4.2 relay.test Error: timeout exceeded"), got
            relay.wait_log(r"smtp timeout state=data\b")


# ---- connections per client ----------------------------------------------------

# RelayClients are exempt from MaxConnectionsPerClient: these tests take
# loopback out of them (nothing here relays).
NOT_LOOPBACK = "RelayClients=192.0.2.0/24"


def test_connections_per_client(relay_factory):
    """MaxConnectionsPerClient=3 with four workers: however the kernel
    spreads the connections over the workers' listeners, the fourth and
    later from 127.0.0.1 get 421 4.7.0 and are closed, while 127.0.0.2
    still gets in; when one leaves, 127.0.0.1 gets a place again."""
    relay = relay_factory(conf=f"Workers=4\nMaxConnectionsPerClient=3\n{NOT_LOOPBACK}", tls=False)
    wait_sessions_closed(relay)
    held, refused = [], 0
    try:
        for _ in range(8):
            s = connect(relay.port)
            code, text, _ = read_reply(s)
            if code == 220:
                held.append(s)
                continue
            assert (code, text) == (
                421, "4.7.0 relay.test Error: too many connections from 127.0.0.1"), text
            assert closed_soon(s)
            s.close()
            refused += 1
        assert (len(held), refused) == (3, 5)
        relay.wait_log(r'reason="too many connections from client"')
        with greeted(relay.port, source="127.0.0.2") as other:
            cmd(other, "NOOP", 250)
        gone = relay.logs().count(" smtp disconnect ")
        cmd(held[0], "QUIT", 221)
        held.pop(0).close()
        wait_for(lambda: relay.logs().count(" smtp disconnect ") > gone, 5, "the QUIT to end")
        time.sleep(0.1)  # the count drops just after the disconnect line
        with greeted(relay.port) as again:
            cmd(again, "NOOP", 250)
    finally:
        for s in held:
            s.close()


def test_connections_per_client_reload(relay_factory):
    """SIGHUP brings a new MaxConnectionsPerClient in for new connections,
    as MaxConnections; sessions already open stay."""
    relay = relay_factory(conf=f"MaxConnectionsPerClient=2\n{NOT_LOOPBACK}", tls=False)
    wait_sessions_closed(relay)
    held = [greeted(relay.port), greeted(relay.port)]
    try:
        with connect(relay.port) as s:
            assert read_reply(s)[0] == 421
        relay.conf.write_text(relay.conf.read_text().replace(
            "MaxConnectionsPerClient=2", "MaxConnectionsPerClient=3"))
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log(r"reload ok")
        held.append(greeted(relay.port))
        with connect(relay.port) as s:
            code, text, _ = read_reply(s)
            assert code == 421 and text.endswith("too many connections from 127.0.0.1"), text
        for h in held:
            cmd(h, "NOOP", 250)
    finally:
        for h in held:
            h.close()


def test_no_limit_per_client(relay_factory):
    """MaxConnectionsPerClient=0: only MaxConnections limits one address."""
    relay = relay_factory(conf=f"MaxConnectionsPerClient=0\nMaxConnections=6\n{NOT_LOOPBACK}",
                          tls=False)
    wait_sessions_closed(relay)
    held = []
    try:
        for _ in range(6):
            held.append(greeted(relay.port))
        with connect(relay.port) as s:
            code, text, _ = read_reply(s)
            assert (code, text) == (421, "4.7.0 relay.test Error: too many connections")
    finally:
        for h in held:
            h.close()


def test_relay_clients_are_exempt(relay_factory):
    """The relay's own submitters (RelayClients, loopback by default) may
    open more sessions than MaxConnectionsPerClient; others may not."""
    relay = relay_factory(conf="MaxConnectionsPerClient=2\nRelayClients=127.0.0.1/32",
                          tls=False)
    wait_sessions_closed(relay)
    held = []
    try:
        for _ in range(4):
            held.append(greeted(relay.port))
        held.append(greeted(relay.port, source="127.0.0.2"))
        held.append(greeted(relay.port, source="127.0.0.2"))
        with connect(relay.port, source="127.0.0.2") as s:
            code, text, _ = read_reply(s)
            assert (code, text) == (
                421, "4.7.0 relay.test Error: too many connections from 127.0.0.2"), text
    finally:
        for h in held:
            h.close()
