"""The Debian package: `make deb` builds it with dpkg-buildpackage from
debian/ and lintian finds no error or warning in it; then
tests/package/install-test.sh installs it with apt into a brand-new
bookworm root, runs the unit's ExecStart line as the unit's user with the
unit's capabilities only, relays a message through it, reads
/proc/PID/status, and purges it."""
import re
import subprocess

from conftest import ROOT


def test_deb_builds_lintian_clean_installs_and_runs_unprivileged():
    build = subprocess.run(["make", "-C", str(ROOT), "deb"], capture_output=True, text=True,
                           timeout=900)
    out = build.stdout + build.stderr
    assert build.returncode == 0, out[-4000:]
    debs = sorted((ROOT / "build" / "deb").glob("krelay_*_*.deb"))
    assert len(debs) == 1, debs
    # lintian ran with --fail-on error,warning; none of its lines is an E: or W:
    assert not re.search(r"^[EW]: krelay", out, re.M), out[-4000:]
    info = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Depends"], capture_output=True,
                          text=True, check=True).stdout
    for lib in ("libssl3", "liburing2", "libc6", "adduser"):
        assert lib in info, info  # dh_shlibdeps found the real libraries

    run = subprocess.run([str(ROOT / "tests" / "package" / "install-test.sh"), str(debs[0])],
                         capture_output=True, text=True, timeout=900)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and lines and lines[-1] == "package test: ok", \
        run.stdout[-4000:] + run.stderr[-2000:]
    text = run.stdout
    assert re.search(r"^ok relay /proc/\d+/status: Uid \d+, Gid \d+, "
                     r"CapPrm=CapEff=CapAmb=CapBnd=0000000000000400", text, re.M), text
    assert re.search(r"^ok sink /proc/\d+/status: became uid \d+ from root, no capabilities",
                     text, re.M), text
    assert re.search(r"^ok relayed: delivery to=<postmaster@example.net> .*status=sen", text,
                     re.M), text
