#!/usr/bin/python3
"""The layering rules of the source tree, checked from its #include lines.

A unit is a .c file with the header of the same name (and its private
header NAME_int.h, if any).  Rules:
  1. kernel/ never includes relay/ (the ring never knows SMTP);
  2. only relay/main.c and relay/worker.c include worker.h (the worker
     depends on the queue and the SMTP server, not the reverse);
  3. relay/queue_cli.c does not include queue.h (it reads the spool);
  4. only the queue's own files include queue_int.h;
  5. no include cycle among the units of relay/ and kernel/.
Prints one line per rule that failed, then "structure: N passed, N failed".
Run from the repository root, or give it the root: structure.py [ROOT]."""
import re
import sys
from pathlib import Path

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
QUEUE_FILES = {"queue.c", "queue_dest.c", "queue_conn.c", "queue_interactive.c",
               "queue_admin.c", "queue_shaping.c", "bounce.c", "queue_int.h"}


def units(root):
    """{unit name (dir/stem): set of unit names it includes}, and
    {file path: set of header names it includes}."""
    files = {}
    for d in ("kernel", "relay"):
        for p in sorted((root / d).glob("*.[ch]")):
            files[p] = set(INCLUDE.findall(p.read_text(errors="replace")))
    def unit(p):
        stem = p.stem[:-4] if p.suffix == ".h" and p.stem.endswith("_int") else p.stem
        return f"{p.parent.name}/{stem}"

    where = {p.name: unit(p) for p in files if p.suffix == ".h"}
    graph = {}
    for p, incs in files.items():
        u = unit(p)
        deps = graph.setdefault(u, set())
        deps.update(where[h] for h in incs if h in where and where[h] != u)
    return graph, files


def cycle(graph):
    """One include cycle as a list of units, or None."""
    state = {}

    def visit(u, path):
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state:
                c = visit(v, path)
                if c:
                    return c
        path.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            c = visit(u, [])
            if c:
                return c
    return None


def check(root):
    graph, files = units(root)
    failures = []
    rules = 0

    rules += 1
    bad = [f"{p.name} includes {h}" for p, incs in files.items() if p.parent.name == "kernel"
           for h in incs if (root / "relay" / h).exists() and not (root / "kernel" / h).exists()]
    if bad:
        failures.append("kernel/ includes relay/: " + ", ".join(bad))

    rules += 1
    bad = [p.name for p, incs in files.items() if "worker.h" in incs
           and p.name not in ("main.c", "worker.c")]
    if bad:
        failures.append("worker.h included by " + ", ".join(bad))

    rules += 1
    cli = root / "relay" / "queue_cli.c"
    if cli in files and "queue.h" in files[cli]:
        failures.append("queue_cli.c includes queue.h")

    rules += 1
    bad = [p.name for p, incs in files.items() if "queue_int.h" in incs
           and p.name not in QUEUE_FILES]
    if bad:
        failures.append("queue_int.h included by " + ", ".join(bad))

    rules += 1
    c = cycle(graph)
    if c:
        failures.append("include cycle: " + " -> ".join(c))
    return rules, failures


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    rules, failures = check(root)
    for f in failures:
        print(f"structure: {f}")
    print(f"structure: {rules - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
