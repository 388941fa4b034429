"""Helpers shared by the integration tests: waiting, and reading krelay's
delivery log lines (format in README.md, "Reading the log")."""
import re
import time

DELIVERY_RE = re.compile(
    r"(?P<qid>[0-9A-F]{16}) delivery to=<(?P<to>[^>]*)> relay=(?P<relay>\S+) "
    r"delay=(?P<delay>[0-9.]+) dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}) "
    r"status=(?P<status>sent|deferred|bounced) tls=\"(?P<tls>[^\"]*)\" "
    r"verified=(?P<verified>yes|no) auth=(?P<auth>dane-ee|dane-ta|mta-sts|pkix|none) resumed=(?P<resumed>yes|no) ktls_tx=(?P<ktls_tx>on|off)"
    r"(?: ktls_why=\"(?P<ktls_why>[^\"]*)\")? body_path=(?P<body_path>\S+) "
    r"bytes=(?P<bytes>\d+) reply=\"(?P<reply>.*)\"$", re.M)


def wait_for(pred, timeout, what):
    """Polls pred() until it returns something true, for at most timeout s."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def deliveries(relay, text=None):
    """krelay's delivery log lines, parsed, in log order."""
    return [m.groupdict() for m in DELIVERY_RE.finditer(relay.logs() if text is None else text)]


def stop_process(proc, out=None, timeout=5):
    """Ends a helper server started by a test (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except Exception:  # subprocess.TimeoutExpired
            proc.kill()
            proc.wait()
    if out is not None:
        out.close()
