"""A small run of the fault soak (tests/soak/soak.py; `make soak` runs the
full one against the release build): kill -9 under load in both delivery
modes, flush/hold/release every 50 ms under load, SIGTERM and SIGHUP under
load, and a queue on a small ext4 that fills up.  Nothing acknowledged may
be lost, no copy may arrive after its recipient was logged sent, no body
may differ, every stop must take under 5 s."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "soak"))
import soak  # noqa: E402

KRELAY = os.environ.get("KRELAY_BIN", str(ROOT / "build" / "test" / "krelay"))


def test_small_soak(capsys):
    rc = soak.main(["--krelay", KRELAY, "--kills", "3", "--flush-s", "3", "--stops", "2",
                    "--hups", "2", "--disk-full", "1", "--drain-s", "60"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "disk-full phase not run" not in out or os.environ.get("CI") != "true", out
