"""The kTLS path on a kernel that has the tls module: Debian's own kernel in a
qemu VM (scripts/vm.sh, tests/ktls/run-in-vm.sh).  Inside it krelay relays
to a second krelay over STARTTLS; the test passes only when the relay's own
delivery lines say ktls_tx=on and body_path=splice and the bytes arrive
intact; then the same VM without the tls module, where krelay must say why
kTLS is off.  Skipped, with the reason, when qemu or the kernel package
cannot be had (vm.sh exits 77)."""
import subprocess

import pytest

from conftest import ROOT


def run_vm(*opts):
    # --keyupdate: a fourth message goes to a next hop that sends a TLS 1.3
    # KeyUpdate (tests/tools/keyupdate_peer.c, built by make test)
    out = subprocess.run([str(ROOT / "scripts" / "vm.sh"), "--timeout", "300", *opts, "--",
                          "/krelay/run-in-vm.sh --keyupdate"], cwd=ROOT, capture_output=True,
                         text=True, timeout=420)
    if out.returncode == 77:
        pytest.skip(f"kTLS VM cannot run here: {out.stderr.strip()[-300:]}")
    return out


def test_ktls_tx_and_splice_in_vm():
    out = run_vm()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "ktls       available" in out.stdout
    deliveries = [l for l in out.stdout.splitlines() if " delivery to=" in l]
    assert deliveries, out.stdout[-3000:]
    for line in deliveries:
        if "<sink@example.com>" in line:
            assert "status=sent" in line and "ktls_tx=on" in line and "body_path=splice" in line, line
    # the kernel encrypted the records: its software TX counter moved
    tx = [l for l in out.stdout.splitlines() if l.strip().startswith("TlsTxSw")]
    assert tx and int(tx[-1].split()[-1]) > 0, out.stdout[-3000:]
    assert all(int(l.split()[-1]) == 0 for l in out.stdout.splitlines()
               if l.strip().startswith("TlsDecryptError"))
    # DESIGN.md hazard: a TLS 1.3 KeyUpdate from the next hop on a kTLS
    # connection closes it; the retry goes without kTLS and delivers once
    assert "ok: message 4 (KeyUpdate next hop) arrived once, byte for byte" in out.stdout
    assert "ok: KeyUpdate on kTLS: closed, deferred, retried without kTLS, sent" in out.stdout
    # inbound TLS 1.2: OpenSSL 3.0 hands receive to the kernel as well
    assert "ok: inbound TLS 1.2 session logged ktls_tx=on ktls_rx=on" in out.stdout
    rx = [l for l in out.stdout.splitlines() if l.strip().startswith("TlsRxSw")]
    assert rx and int(rx[-1].split()[-1]) > 0, out.stdout[-3000:]


def test_without_tls_module_krelay_says_why():
    out = run_vm("--no-tls-module")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "ktls       unavailable: kernel has no tls module" in out.stdout
    deliveries = [l for l in out.stdout.splitlines() if " delivery to=" in l]
    assert deliveries
    for line in deliveries:
        assert "status=sent" in line and "ktls_tx=off" in line and 'ktls_why="' in line, line
    assert "ok: message 4 (KeyUpdate next hop) arrived once, byte for byte" in out.stdout
