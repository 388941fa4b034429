"""`make demo` is the README's main job: it must keep working.  This runs the
demo script against the release build that `make test` builds first."""
import os
import re
import subprocess

from conftest import ROOT


def test_demo_relays_everything():
    out = subprocess.run([str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, KRELAY=str(ROOT / "build" / "krelay")))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"accepted\s+: 2500 messages", out.stdout)
    assert re.search(r"relayed\s+: 2500 messages", out.stdout)
    assert re.search(r"left in the queue: 0", out.stdout)
    assert re.search(r"certificate verified: 2500 x yes", out.stdout)
    assert re.search(r"kTLS \(outbound TX\) : 2500 x (on|off)", out.stdout)
