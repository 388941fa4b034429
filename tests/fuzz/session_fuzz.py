"""A session-level fuzzer: mutated SMTP sessions against a running krelay.

Each session is made from a seed (so any one can be replayed): a greeting or
none, then a random walk over commands, well-formed or broken (MAIL, RCPT,
DATA with clean or refused content, BDAT with whole, short or pipelined
chunks, RSET, NOOP, STARTTLS, garbage, NUL bytes, over-long lines), sent in
random splits, with or without waiting for replies, ended by QUIT, an
abrupt close or a half close.  Every message that got "250 ... queued as"
carries a unique Message-Id, so what the next hop holds can be checked
against what the relay acknowledged: each exactly once, byte for byte.

Used by tests/integration/test_session_fuzz.py (a short run in make test)
and by `make fuzz` (a long run); it never starts or judges the relay itself.
"""
import random
import re
import socket
import time

QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9A-F]{16})", re.M)


def _content(rng, tag):
    """A clean message (CRLF, ends with CRLF) with Message-Id <tag>."""
    lines = [b"From: f@example.org", b"To: r@example.com", b"Subject: fuzz " + tag.encode(),
             b"Message-Id: <" + tag.encode() + b">", b""]
    for i in range(rng.randrange(0, 40)):
        kind = rng.randrange(8)
        if kind == 0:
            lines.append(b"." * rng.randrange(1, 4) + b" dot line %d" % i)
        elif kind == 1:
            lines.append(b"")
        elif kind == 2:
            lines.append(bytes(rng.randrange(0x20, 0x7f) for _ in range(rng.randrange(0, 990))))
        else:
            lines.append(b"line %d " % i + b"x" * rng.randrange(0, 80))
    return b"\r\n".join(lines) + b"\r\n"


def _stuff(content):
    return re.sub(rb"(?m)^\.", b"..", content)


def _garbage(rng):
    pick = rng.randrange(7)
    if pick == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\r\n"
    if pick == 1:
        return b"NOOP\0x\r\n"
    if pick == 2:
        return b"MAIL FROM:<" + b"a" * rng.randrange(200, 1200) + b"@x.test>\r\n"
    if pick == 3:
        return b"X" * rng.randrange(990, 3000) + b"\r\n"
    if pick == 4:
        return b"RCPT TO:<r@example.com>\n"  # bare LF
    if pick == 5:
        return rng.choice([b"VRFY x\r\n", b"HELP\r\n", b"EXPN x\r\n", b"AUTH PLAIN AAAA\r\n",
                           b"HELO\r\n", b"EHLO " + b"h" * 300 + b"\r\n", b"BDAT\r\n",
                           b"BDAT -1\r\n", b"BDAT 99999999999999999999\r\n", b"DATA x\r\n"])
    return b"\r\n"


class Session:
    """One fuzzed session: run() sends it and returns what was acknowledged."""

    def __init__(self, seed, port, tag_prefix="fz"):
        self.seed, self.port, self.prefix = seed, port, tag_prefix
        self.rng = random.Random(seed)
        self.out = []  # (bytes, wait_for_reply)
        self.pending = []  # (tag, content) whose reply decides
        self.accepted = []
        self.n = 0

    # -- building the script --

    def _send(self, data, wait=None):
        self.out.append((data, self.rng.random() < 0.5 if wait is None else wait))

    def _message(self, refused=None):
        """DATA or BDAT with a clean message, or (refused) broken content."""
        rng = self.rng
        self.n += 1
        tag = f"{self.prefix}-{self.seed}-{self.n}@fuzz.test"
        content = _content(rng, tag)
        if refused is None:
            refused = rng.random() < 0.3
        if refused:
            bad = rng.randrange(3)
            if bad == 0:
                content += b"bare\nLF\r\n"
            elif bad == 1:
                content += b"y" * 1100 + b"\r\n"
            else:
                content += b"z" * 5000 + b"\r\n"  # past MaxMessageSize (see the test)
        if rng.random() < 0.5:
            self._send(b"DATA\r\n")
            body = _stuff(content) + b".\r\n"
            cut = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(0, 4)))
            prev = 0
            for c in cut + [len(body)]:
                if c > prev:
                    self._send(body[prev:c], wait=False)
                prev = c
            self._mark(tag, content, refused)
            self._send(b"", wait=True)
            return
        # BDAT in chunks; sometimes cut short by RSET (the chunk is whole:
        # what follows it is a command)
        chunks, pos = [], 0
        while pos < len(content):
            n = rng.randrange(1, len(content) - pos + 1)
            chunks.append(content[pos:pos + n])
            pos += n
        if rng.random() < 0.2 and len(chunks) > 1:
            for ch in chunks[:-1]:
                self._send(b"BDAT %d\r\n" % len(ch) + ch)
            self._send(b"RSET\r\n")
            return
        if rng.random() < 0.2:
            chunks.append(b"")  # an empty BDAT LAST
        for i, ch in enumerate(chunks):
            last = i == len(chunks) - 1
            self._send(b"BDAT %d%s\r\n" % (len(ch), b" LAST" if last else b"") + ch,
                       wait=False if not last else None)
        self._mark(tag, content, refused)
        self._send(b"", wait=True)

    def _mark(self, tag, content, refused):
        self.pending.append((tag, None if refused else content))

    def build(self):
        rng = self.rng
        pick = rng.random()
        if pick < 0.85:
            self._send(b"EHLO fuzz.test\r\n")
        elif pick < 0.95:
            self._send(b"HELO fuzz.test\r\n")
        for _ in range(rng.randrange(1, 12)):
            step = rng.randrange(12)
            if step <= 2:
                self._send(b"MAIL FROM:<s@example.org>%s\r\n" %
                           rng.choice([b"", b" BODY=8BITMIME", b" SIZE=100", b" SMTPUTF8",
                                       b" SIZE=999999999", b" BOGUS=1"]))
                for _ in range(rng.randrange(0, 4)):
                    self._send(b"RCPT TO:<%s>\r\n" % rng.choice(
                        [b"r@example.com", b"r2@example.net", b"nodomain", b"\"q r\"@example.com"]))
                if rng.random() < 0.7:
                    self._message()
            elif step == 3:
                self._send(b"RSET\r\n")
            elif step == 4:
                self._send(b"NOOP\r\n")
            elif step == 5:
                self._send(_garbage(rng))
            elif step == 6:
                self._message()  # maybe out of sequence
            elif step == 7:
                # a chunk outside any transaction (after RSET: inside one it
                # would join the message); exact, or it would eat what follows
                n = rng.randrange(0, 20)
                self._send(b"RSET\r\nBDAT %d\r\n" % n + b"q" * n)
            elif step == 8:
                # what follows a 220 is TLS or nothing: end here (a client
                # that says more and waits would only wait for the timeout)
                self._send(b"STARTTLS\r\n")
                if rng.random() < 0.5:
                    self._send(b"\x16\x03\x01\x00\x05hello", wait=False)
                    return self._end(abrupt=True)
                self.abrupt, self.half_close = False, True
                return self
            elif step == 9 and rng.random() < 0.3:
                return self._end(abrupt=True)  # mid-session
            else:
                self._send(b"RSET\r\nNOOP\r\n")
        return self._end(abrupt=rng.random() < 0.2)

    def _end(self, abrupt):
        self.abrupt = abrupt
        if not abrupt:
            self._send(b"QUIT\r\n", wait=False)
        self.half_close = not abrupt and self.rng.random() < 0.3
        return self

    # -- running it --

    def run(self, timeout=10.0):
        """Sends the script; returns (queued ids, {tag: content}) where
        content is None for a message sent with content the relay must
        refuse.  Raises when the relay neither ends the session nor answers
        within timeout after the client's QUIT or half close."""
        self.build()
        got = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as c:
            c.settimeout(timeout)
            got += c.recv(4096)
            for data, wait in self.out:
                try:
                    if data:
                        c.sendall(data)
                    if wait:
                        got += self._read_some(c)
                except OSError:  # the relay closed (e.g. 421 after errors)
                    break
            if self.abrupt:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            else:
                if self.half_close:
                    try:
                        c.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass  # closed by the relay already
                got += self._read_all(c, timeout)
        self.replies = got
        return ([q.decode() for q in QUEUED.findall(got)], dict(self.pending))

    @staticmethod
    def _read_some(c):
        c.settimeout(0.2)
        try:
            return c.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return b""
        finally:
            c.settimeout(10)

    @staticmethod
    def _read_all(c, timeout):
        out, end = b"", time.time() + timeout
        while time.time() < end:
            try:
                b = c.recv(65536)
            except ConnectionResetError:
                return out
            except socket.timeout:
                break
            if not b:
                return out
            out += b
        raise AssertionError(f"session did not end within {timeout}s: {out[-300:]!r}")
