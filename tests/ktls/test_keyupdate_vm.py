"""DESIGN.md hazard, on a kernel with the tls module: a next hop sends a TLS
1.3 KeyUpdate on a kTLS connection; krelay must close it, retry without
kTLS, and deliver the message once, intact.  Run by `make test-ktls`.  It
failed 2 runs in 7 until a race in the SMTP client was fixed (a 220 to
STARTTLS read before the send's completion hit an assertion); it stays out of
`make test` until more runs confirm the fix."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_keyupdate_on_ktls_closes_and_retries():
    out = subprocess.run([str(ROOT / "scripts" / "vm.sh"), "--timeout", "300", "--",
                          "/krelay/run-in-vm.sh --keyupdate"], cwd=ROOT, capture_output=True,
                         text=True, timeout=420)
    if out.returncode == 77:
        pytest.skip(f"kTLS VM cannot run here: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert "ok: message 4 (KeyUpdate next hop) arrived once, byte for byte" in out.stdout
    assert "ok: KeyUpdate on kTLS: closed, deferred, retried without kTLS, sent" in out.stdout
