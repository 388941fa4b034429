"""The manual: krelay(8), krelay.conf(5), krelay-bench(1).  krelay.conf(5)
is written by scripts/mkman.py from config.c's option table and the
README's; it must be current, name every option, and the tool must refuse
an option that one of the two lacks.  Every page renders without a warning
(man -l), and `make install` puts everything where it belongs."""
import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

MKMAN = ["/usr/bin/python3", str(ROOT / "scripts" / "mkman.py")]
PAGES = ["krelay.8", "krelay.conf.5", "krelay-bench.1"]


def render(page):
    p = subprocess.run(["man", "--warnings", "-l", str(ROOT / "man" / page)],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"))
    assert p.returncode == 0, p.stderr
    # (not on a terminal, man still overstrikes bold: X\bX)
    return subprocess.CompletedProcess(p.args, 0, re.sub(r".\x08", "", p.stdout), p.stderr)


def config_options():
    text = (ROOT / "relay" / "config.c").read_text()
    return re.findall(r'\[OPT_[A-Z0-9_]+\]\s*=\s*\{"([A-Za-z0-9]+)"', text)


def test_pages_render_without_warnings():
    for page in PAGES:
        p = render(page)
        assert p.stderr == "", (page, p.stderr)
        assert len(p.stdout.splitlines()) > 20, (page, p.stdout)


def test_conf_page_is_current_and_names_every_option():
    p = subprocess.run(MKMAN + ["--check"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    text = render("krelay.conf.5").stdout
    names = config_options()
    assert len(names) >= 40, names
    for name in names:
        assert re.search(rf"^ {{7}}.*\b{name}\b", text, re.M), name


def test_an_option_without_documentation_is_refused(tmp_path):
    """An option added to config.c without its README row (or a row for an
    option config.c lacks) stops the manual from being written."""
    (tmp_path / "relay").mkdir()
    (tmp_path / "man").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    src = (ROOT / "relay" / "config.c").read_text()
    at = src.index("static const struct opt_def opts[OPT_COUNT] = {") + \
        len("static const struct opt_def opts[OPT_COUNT] = {")
    (tmp_path / "relay" / "config.c").write_text(
        src[:at] + '\n    [OPT_BOGUS] = {"BogusOption", parse_path, 0, 0, 0},' + src[at:])
    p = subprocess.run(MKMAN + ["--root", str(tmp_path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "not in README: BogusOption" in p.stderr, p.stderr
    (tmp_path / "relay" / "config.c").write_text(src)
    readme = (ROOT / "README.md").read_text().replace(
        "| `LogLevel=N` |", "| `NoSuchOption=N` | `0` | nothing. |\n| `LogLevel=N` |", 1)
    (tmp_path / "README.md").write_text(readme)
    p = subprocess.run(MKMAN + ["--root", str(tmp_path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "not in config.c: NoSuchOption" in p.stderr, p.stderr


def test_commands_page_names_every_command():
    usage = subprocess.run([str(ROOT / "build" / "krelay"), "--help"], capture_output=True,
                           text=True, timeout=10).stdout
    text = render("krelay.8").stdout
    for cmd in ["check", "queue", "list", "flush", "hold", "release", "delete", "tlsrpt",
                "version"]:
        assert cmd in usage, cmd
        assert re.search(rf"\b{cmd}\b", text), cmd


def test_make_install(tmp_path):
    dest = tmp_path / "root"
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    mode = {str(x.relative_to(dest)): x.stat().st_mode & 0o7777 for x in dest.rglob("*")}
    assert mode["usr/sbin/krelay"] == 0o755 and mode["usr/bin/krelay-bench"] == 0o755, mode
    for m in ["usr/share/man/man8/krelay.8", "usr/share/man/man5/krelay.conf.5",
              "usr/share/man/man1/krelay-bench.1", "etc/krelay/krelay.conf"]:
        assert mode[m] == 0o644, (m, mode)
    assert mode["var/spool/krelay"] == 0o700, mode
    # the installed configuration is valid and safe: loopback only, no open relay
    conf = dest / "etc" / "krelay" / "krelay.conf"
    text = conf.read_text()
    assert re.findall(r"(?m)^Listen=(.*)$", text) == ["127.0.0.1:25"], text
    assert re.findall(r"(?m)^RelayClients=(.*)$", text) == ["127.0.0.0/8, ::1/128"], text
    chk = subprocess.run([str(dest / "usr" / "sbin" / "krelay"), "check", "-C", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert chk.returncode == 0 and "configuration: 0 errors" in chk.stdout, chk.stdout
    # installing again keeps the administrator's edits
    conf.write_text(text + "LogLevel=10\n")
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and conf.read_text().endswith("LogLevel=10\n"), p.stderr
