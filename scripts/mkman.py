#!/usr/bin/python3
"""mkman.py: writes man/krelay.conf.5 from the two places options live,
and refuses when they disagree: the option table of relay/config.c (names,
in its order) and the README's configuration table (default and meaning).
An option added to config.c without a README row, or a row for an option
config.c does not know, is an error, so the manual cannot drift.

    scripts/mkman.py            rewrite man/krelay.conf.5
    scripts/mkman.py --check    exit 1 if man/krelay.conf.5 is not what it would write
    --root DIR                  read DIR/relay/config.c and DIR/README.md (tests)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "man" / "krelay.conf.5"


def config_c_names():
    text = (ROOT / "relay" / "config.c").read_text()
    table = text[text.index("static const struct opt_def opts[OPT_COUNT]"):]
    table = table[:table.index("};")]
    return re.findall(r'\[OPT_[A-Z0-9_]+\]\s*=\s*\{"([A-Za-z0-9]+)"', table)


def readme_rows():
    """The README's option rows, in order: (names, first cell, default, meaning);
    a row may name several options ("`CommandTimeout=S`, `DataTimeout=S`")."""
    text = (ROOT / "README.md").read_text()
    sec = text[text.index("| Option | Default | Meaning |"):]
    rows = []
    for line in sec.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) != 3:
            raise SystemExit(f"mkman: README row with {len(cells)} cells: {line}")
        names = re.findall(r"`([A-Za-z0-9]+)[=`]", cells[0])
        if not names:
            raise SystemExit(f"mkman: README row without an option name: {line}")
        rows.append((names, cells[0], cells[1], cells[2]))
    return rows


def roff(md):
    """The README's inline markdown as roff: `code` in bold, escapes."""
    s = md.replace("\\", "\\e")
    s = re.sub(r"`([^`]*)`", lambda m: "\\fB" + m.group(1) + "\\fR", s)
    s = re.sub(r"\*\*([^*]*)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = s.replace("<br>", " ")
    # long words (cipher strings) may break after a colon: \: marks the place
    s = re.sub(r"\S{40,}", lambda m: m.group(0).replace(":", ":\\:"), s)
    # a line may not start with . or ' in roff
    return re.sub(r"(?m)^([.'])", r"\\&\1", s)


def page():
    names = config_c_names()
    rows = readme_rows()
    documented = [n for r in rows for n in r[0]]
    missing = [n for n in names if n not in documented]
    extra = [n for n in documented if n not in names]
    if missing or extra:
        raise SystemExit("mkman: config.c and README's table disagree: "
                         + (f"not in README: {', '.join(missing)} " if missing else "")
                         + (f"not in config.c: {', '.join(extra)}" if extra else ""))
    out = [
        '.TH KRELAY.CONF 5 "" "krelay" "File formats"',
        ".SH NAME",
        "krelay.conf \\- configuration of the krelay mail relay",
        ".SH SYNOPSIS",
        ".B /etc/krelay/krelay.conf",
        ".SH DESCRIPTION",
        "One",
        ".I Name=value",
        "per line;",
        ".B #",
        "starts a comment; a line may begin with",
        '.B "O "',
        "so that lines from",
        ".I sendmail.cf",
        "paste in unchanged.",
        "Unknown names, bad values and unreadable files are errors that name",
        "the file and line: krelay never ignores a line silently.",
        ".B krelay check",
        "reads a file and says what it finds.",
        "A reload (SIGHUP) reads the file again; Listen, QueueDirectory, Workers",
        "and DNSServer take effect at restart.",
        ".SH OPTIONS",
    ]
    for _, first, default, meaning in rows:
        out += [".TP", roff(first), "Default: " + roff(default) + ".", ".br", roff(meaning)]
    out += [
        ".SH FILES",
        ".TP",
        ".B /etc/krelay/krelay.conf",
        "installed with safe defaults: loopback only, no open relay.",
        ".SH SEE ALSO",
        ".BR krelay (8),",
        ".BR krelay-bench (1)",
    ]
    return "\n".join(out) + "\n"


def main():
    global ROOT, OUT
    args = sys.argv[1:]
    if args[:1] == ["--root"]:
        ROOT = Path(args[1])
        OUT = ROOT / "man" / "krelay.conf.5"
        args = args[2:]
    text = page()
    if args == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"mkman: {OUT.relative_to(ROOT)} is out of date: run scripts/mkman.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
