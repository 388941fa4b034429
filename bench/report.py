#!/usr/bin/python3
"""report: bench/run.sh's figures, from what each row left in build/bench/rows/.

  report.py --baseline FILE        one paragraph: this machine's limits
  report.py --row DIR              one line: a row's figures (run.sh prints it)
  report.py --out DIR [--cpu-method TEXT] [--ktls yes|no] [--wall S]
                                   DIR/results.csv, results.md, results.svg
                                   (gnuplot), and the Markdown on stdout

A row's figures, all measured in that row:
  seconds   end to end: the source's start_unix to the sink's last_unix
  msg/s     messages the sink received / seconds
  MB/s      payload (the source's bytes per message x messages received) /
            seconds; relays' own Received headers are not counted
  relay CPU user+sys of every process of the relay (cgroup v2 usage_usec,
            or the process-group figure where no cgroup was usable), from
            just before the source starts to the relay's queue being empty
  x floor   relay CPU per GB / one core's AES-128-GCM seconds per GB
            (baseline); a relay that decrypts inbound and encrypts outbound
            has a floor of 2
  kTLS TX, body path, TLS   what the relay's log says its deliveries used
"""
import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"4k": 4096, "100k": 102400, "1m": 1048576, "10m": 10485760}
RELAY_NAMES = {"krelay": "krelay", "krelay-interactive": "krelay interactive",
               "postfix": "Postfix", "postfix-reuse": "Postfix+reuse"}
KRELAYS = ("krelay", "krelay-interactive")


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def tally(values):
    """'a' when all are a, else 'a 90, b 10' (counts)."""
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) <= 1:
        return next(iter(counts), "")
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def krelay_log(path):
    """What krelay's log says about its deliveries."""
    text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
    sent = [ln for ln in text.splitlines() if " delivery " in ln and "status=sent" in ln]
    field = lambda ln, k: (re.search(rf" {k}=(\S+)", ln) or [None, "?"])[1]
    return {
        "delivered": len(sent),
        "deferred": len(re.findall(r" delivery .*status=(?:deferred|bounced)", text)),
        "ktls_tx": tally(field(ln, "ktls_tx") for ln in sent),
        "body_path": tally(field(ln, "body_path") for ln in sent),
        "tls_out": tally((re.search(r'tls="\S+ with cipher (\S+)', ln) or [None, "none"])[1]
                         for ln in sent),
        "tls_in": tally(re.findall(r" smtp tls version=\S+ cipher=(\S+)", text)),
        "problems": len(re.findall(r"\b(?:error|warning|fatal|panic)\b", text, re.I)),
    }


def postfix_log(path):
    """What Postfix's maillog says about its deliveries."""
    text = Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
    return {
        "delivered": len(re.findall(r"/smtp\[\d+\]: .* status=sent", text)),
        "deferred": len(re.findall(r"status=(?:deferred|bounced)", text)),
        # Postfix 3.7 has no kTLS setting of its own; without the tls module it is off for sure
        "ktls_tx": "off" if not Path("/proc/net/tls_stat").exists() else "not enabled",
        "body_path": "read+write",
        "tls_out": tally(re.findall(r"TLS connection established to \S+ \S+ with cipher (\S+)", text)),
        "tls_in": tally(re.findall(r"TLS connection established from \S+ \S+ with cipher (\S+)", text)),
        "problems": len(re.findall(r": (?:warning|error|fatal|panic): ", text)),
    }


def compute(d, baseline):
    d = Path(d)
    meta = load(d / "row.json") or {}
    src, sink = load(d / "source.json") or {}, load(d / "sink.json") or {}
    r = dict(meta)
    if meta.get("relay") in KRELAYS:
        r.update(krelay_log(d / "relay.log"))
    elif meta.get("relay") == "direct":  # no relay: the source's own TLS into the sink
        r.update({"tls_out": "TLS_AES_128_GCM_SHA256", "ktls_tx": "-", "body_path": "-",
                  "problems": 0})
    else:
        info = load(d / "postfix.json") or {}
        r.update(postfix_log(info.get("maillog")))
    # the sink also counted the warm-up messages sent before the measurement
    got = max(0, (sink.get("messages", 0) or 0) - meta.get("warmup", 0))
    r["received"] = got
    r["source_ok"] = src.get("messages_ok", 0) or 0
    r["source_errors"] = src.get("errors", 0) or 0
    r["error_samples"] = src.get("error_samples") or []
    r["checksum_errors"] = sink.get("checksum_errors", 0) or 0
    r["sink_connections"] = sink.get("connections")
    r["sink_tls_connections"] = sink.get("tls_connections")
    r["source_cpu_s"] = src.get("cpu_s")
    r["sink_cpu_s"] = sink.get("cpu_s")
    per_msg = (src.get("bytes", 0) / r["source_ok"]) if r["source_ok"] else SIZES.get(r.get("size"), 0)
    r["payload_bytes"] = int(per_msg * got)
    secs = None
    if got and sink.get("last_unix") and src.get("start_unix"):
        secs = sink["last_unix"] - src["start_unix"]
    r["seconds"] = secs
    r["msgs_per_s"] = got / secs if secs else None
    r["mb_per_s"] = r["payload_bytes"] / secs / 1e6 if secs else None
    usec = meta.get("cgroup_usec") if meta.get("cpu_method") == "cgroup" else meta.get("pgroup_usec")
    cpu = usec / 1e6 if usec is not None and meta.get("relay") != "direct" else None
    r["relay_cpu_s"] = cpu
    r["cpu_us_per_msg"] = cpu / got * 1e6 if cpu is not None and got else None
    r["cpu_s_per_gb"] = cpu / (r["payload_bytes"] / 1e9) if cpu is not None and r["payload_bytes"] else None
    gb = r["payload_bytes"] / 1e9
    r["source_cpu_s_per_gb"] = src["cpu_s"] / gb if src.get("cpu_s") is not None and gb else None
    r["sink_cpu_s_per_gb"] = sink["cpu_s"] / gb if sink.get("cpu_s") is not None and gb else None
    aes = (baseline or {}).get("aes_128_gcm_Bps")
    r["x_floor"] = r["cpu_s_per_gb"] / (1e9 / aes) if aes and r["cpu_s_per_gb"] else None
    # what else kept this machine busy while the row ran (other users, in cores)
    win = (meta.get("window_usec") or 0) / 1e6
    if win > 0 and meta.get("machine_busy_usec") is not None and (
            cpu is not None or meta.get("relay") == "direct"):
        own = (cpu or 0) + (src.get("cpu_s") or 0) + (sink.get("cpu_s") or 0)
        r["other_load"] = max(0.0, meta["machine_busy_usec"] / 1e6 - own) / win
        r["steal"] = (meta.get("steal_usec") or 0) / 1e6 / win
    else:
        r["other_load"] = r["steal"] = None
    problems = []
    if meta.get("status", "missing") != "ok":
        problems.append(meta.get("status", "no row.json"))
    if got != meta.get("messages"):
        problems.append(f"{got}/{meta.get('messages')} received")
    if r["checksum_errors"]:
        problems.append(f"{r['checksum_errors']} checksum errors")
    if r["source_errors"]:
        problems.append(f"{r['source_errors']} source errors")
    if sink.get("timed_out"):
        problems.append("sink timed out")
    if (d / "error").exists():
        problems.append((d / "error").read_text().strip()[:200])
    r["problems_text"] = "; ".join(problems) or "ok"
    return r


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def row_line(r):
    return (f"{fmt(r['msgs_per_s'], '7.0f')} msg/s {fmt(r['mb_per_s'], '7.1f')} MB/s  "
            f"CPU {fmt(r['cpu_us_per_msg'], '6.0f')} us/msg {fmt(r['cpu_s_per_gb'], '6.1f')} s/GB "
            f"({fmt(r['x_floor'], '.1f')}x floor)  out={r['tls_out'] or 'clear'} "
            f"ktls_tx={r['ktls_tx']} body={r['body_path']} conns={r['sink_connections']} "
            f"others={fmt(r['other_load'], '.2f')}  "
            f"[{r['problems_text']}]")


def baseline_text(b):
    def rate(k):
        v = b.get(k)
        return f"{v / 1e9:.2f} GB/s" if v else "not measured"

    tcp = b.get("tcp_loopback_bps")
    floor = f"{1e9 / b['aes_128_gcm_Bps']:.2f} s of CPU per GB" if b.get("aes_128_gcm_Bps") else "unknown"
    return (f"one core, 16 KiB records ({b.get('openssl', '?')}): AES-128-GCM {rate('aes_128_gcm_Bps')}, "
            f"AES-256-GCM {rate('aes_256_gcm_Bps')}, CHACHA20-POLY1305 {rate('chacha20_poly1305_Bps')}; "
            f"crypto floor (AES-128-GCM once) {floor}. Loopback TCP, one stream "
            f"({b.get('tcp_tool', '?')}): "
            + (f"{tcp / 1e9:.1f} Gbit/s = {tcp / 8e9:.2f} GB/s" if tcp else "not measured") + ".")


COLUMNS = [  # (csv name, Markdown heading, format)
    ("name", "Row", "s"), ("relay_name", "Relay", "s"), ("hops", "In → out", "s"), ("size", "Size", "s"),
    ("received", "Msgs", "d"), ("msgs_per_s", "Msg/s", ".0f"), ("mb_per_s", "MB/s", ".1f"),
    ("relay_cpu_s", "Relay CPU s", ".2f"), ("cpu_us_per_msg", "CPU µs/msg", ".0f"),
    ("cpu_s_per_gb", "CPU s/GB", ".1f"), ("x_floor", "× floor", ".1f"), ("tls_out", "TLS out", "s"),
    ("ktls_tx", "kTLS TX", "s"), ("body_path", "Body path", "s"),
    ("sink_connections", "Conns", "d"), ("other_load", "Other load", ".2f"),
    ("source_cpu_s_per_gb", "Source CPU s/GB", ".2f"), ("sink_cpu_s_per_gb", "Sink CPU s/GB", ".2f"),
    ("problems_text", "Status", "s"),
]
CSV_EXTRA = ["relay", "group", "inbound", "outbound", "options", "messages", "seconds", "payload_bytes",
             "cgroup_usec", "cgroup_user_usec", "cgroup_sys_usec", "pgroup_usec", "cpu_method",
             "tls_in", "delivered", "deferred", "problems", "source_cpu_s", "sink_cpu_s",
             "sink_tls_connections", "checksum_errors", "source_errors", "row_seconds",
             "machine_busy_usec", "steal_usec", "steal", "window_usec"]


# The README's shorter table: the figures without the per-row details.
SHORT = ["name", "relay_name", "hops", "size", "msgs_per_s", "mb_per_s", "cpu_us_per_msg",
         "cpu_s_per_gb", "x_floor", "ktls_tx", "body_path", "sink_connections", "other_load"]


# The rows without a relay: what source and sink do by themselves.
DIRECT_NOTE = ("Source CPU per GB is what sending over TLS costs by itself here (the body "
               "generated, encrypted, loopback TCP), sink CPU per GB what receiving costs "
               "(decrypting, checking each body's checksum): a relay does a receiving side and "
               "a sending side, and stores the message between them.")
DIRECT = ["name", "size", "msgs_per_s", "mb_per_s", "source_cpu_s_per_gb", "sink_cpu_s_per_gb",
          "sink_connections", "other_load"]


def md_table(rows, keys=None):
    cols = [c for c in COLUMNS if keys is None or c[0] in keys]
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" if c[2] == "s" else "---:" for c in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, spec in cols:
            v = r.get(key)
            cells.append(str(v if v not in (None, "") else "-") if spec == "s" else fmt(v, spec))
        if r.get("options"):
            cells[0] += f" ({r['options']})"
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def ratio_table(rows):
    """krelay / Postfix per (inbound, size): throughput and CPU per message."""
    by = {(r["relay"], r["inbound"], r["size"]): r for r in rows if r.get("group") == "compare"}
    out = ["| krelay | In → out | Size | krelay msg/s | ÷ Postfix | ÷ Postfix+reuse | ÷ no relay "
           "| krelay CPU µs/msg | ÷ Postfix | ÷ Postfix+reuse |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (relay, inbound, size), k in by.items():
        if relay not in KRELAYS:
            continue
        cells = [RELAY_NAMES[relay], k["hops"], size, fmt(k["msgs_per_s"], ".0f")]
        for metric in ("msgs_per_s", "cpu_us_per_msg"):
            if metric == "cpu_us_per_msg":
                cells.append(fmt(k["cpu_us_per_msg"], ".0f"))
            for p in ("postfix", "postfix-reuse"):
                o = by.get((p, inbound, size))
                ok = o and o.get(metric) and k.get(metric)
                cells.append(f"{k[metric] / o[metric]:.2f}" if ok else "-")
            if metric == "msgs_per_s":  # the source straight into the sink, same run
                o = by.get(("direct", "starttls", size))
                ok = o and o.get(metric) and k.get(metric)
                cells.append(f"{k[metric] / o[metric]:.2f}" if ok else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


INJECTORS = {"short": "krelay-bench --per-conn 1 --no-pipelining",
             "smtp-source": "Postfix's smtp-source -s 20"}
SHORT_NOTE = ("One message per connection, no pipelining: what most clients and MTAs send "
              "(cleartext in, STARTTLS out, 20 sessions at a time). A session's greeting, EHLO, "
              "MAIL, RCPT, DATA and QUIT each wait for their reply, so every message costs a "
              "connection, the round trips and its own durable commit: the per-message floor.")


def short_ratio_table(rows):
    """krelay and Postfix fed one message per connection, per injector and size."""
    by = {(r["relay"], r.get("inject"), r["size"]): r for r in rows if r.get("group") == "short"}
    out = ["| Injector | Size | krelay msg/s | Postfix msg/s | krelay ÷ Postfix | "
           "krelay CPU µs/msg | Postfix CPU µs/msg | Postfix ÷ krelay (CPU) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (relay, inject, size), k in by.items():
        if relay != "krelay":
            continue
        p = by.get(("postfix", inject, size)) or {}
        cells = [INJECTORS.get(inject, inject or "?"), size, fmt(k.get("msgs_per_s"), ".0f"),
                 fmt(p.get("msgs_per_s"), ".0f"),
                 f"{k['msgs_per_s'] / p['msgs_per_s']:.2f}"
                 if k.get("msgs_per_s") and p.get("msgs_per_s") else "-",
                 fmt(k.get("cpu_us_per_msg"), ".0f"), fmt(p.get("cpu_us_per_msg"), ".0f"),
                 f"{p['cpu_us_per_msg'] / k['cpu_us_per_msg']:.1f}"
                 if k.get("cpu_us_per_msg") and p.get("cpu_us_per_msg") else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows, out):
    """results.svg: MB/s and relay CPU s/GB per size, every relay, both inbound modes."""
    if not shutil.which("gnuplot"):
        return "gnuplot not installed: no plot"
    comp = [r for r in rows if r.get("group") == "compare"]
    sizes = [s for s in SIZES if any(r["size"] == s for r in comp)]
    if not sizes:
        return "no comparison rows: no plot"
    dat = out / "results-plot.dat"
    with open(dat, "w") as f:
        for inbound in ("plain", "starttls"):
            f.write(f"# inbound {inbound}: size, MB/s of {', '.join(RELAY_NAMES)}, "
                    "then their CPU s/GB\n")
            for s in sizes:
                vals = []
                for metric in ("mb_per_s", "cpu_s_per_gb"):
                    for relay in RELAY_NAMES:
                        r = next((r for r in comp if (r["relay"], r["inbound"], r["size"])
                                  == (relay, inbound, s)), None)
                        v = r.get(metric) if r else None
                        vals.append("NaN" if v is None else f"{v:.4g}")
                f.write(f"{s} {' '.join(vals)}\n")
            f.write("\n\n")
    titles = {"plain": "clear in, TLS out", "starttls": "TLS in, TLS out"}
    script = ["set terminal svg size 1000,720 dynamic font 'sans,11' background rgb 'white'",
              f"set output '{out / 'results.svg'}'",
              "set multiplot layout 2,2",
              "set style data histogram", "set style histogram clustered gap 1",
              "set style fill solid 0.8 border -1", "set boxwidth 0.9", "set grid ytics",
              "set key below horizontal", "set logscale y"]
    aes = (load(out / "baseline.json") or {}).get("aes_128_gcm_Bps")
    for i, inbound in enumerate(("plain", "starttls")):
        n = len(RELAY_NAMES)

        def series(first):  # one bar per relay, from column `first` on
            return ", ".join((f"'{dat}' index {i} using {first + k}:xtic(1)" if k == 0 else
                              f"'' index {i} using {first + k}") + f" title '{name}'"
                             for k, name in enumerate(RELAY_NAMES.values()))
        script += [f"set title 'Throughput, {titles[inbound]} (higher is better)'",
                   "set ylabel 'MB/s (log)'",
                   "plot " + series(2),
                   f"set title 'Relay CPU per GB, {titles[inbound]} (lower is better)'",
                   "set ylabel 'CPU s/GB (log)'"]
        floor_plot = ""
        if aes:  # the crypto floor: AES-128-GCM once per TLS hop, one core
            floor = 1e9 / aes * (2 if inbound == "starttls" else 1)
            floor_plot = (f", {floor:.4g} with lines dashtype 2 lw 1.5 lc rgb 'black' "
                          f"title 'AES-128-GCM floor ({floor:.2g} s/GB)'")
            script.append(f"set yrange [{floor / 2:.3g}:*]")
        script += ["plot " + series(2 + n) + floor_plot,
                   "set yrange [*:*]"]
    script.append("unset multiplot")
    p = subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True,
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        return f"gnuplot failed: {p.stderr.strip()[:300]}"
    return f"plot: {out / 'results.svg'}"


def machine():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), kernel {os.uname().release}"


def postfix_version():
    try:
        return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                              text=True, timeout=20).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def report(out, cpu_method, ktls, wall, version):
    baseline = load(out / "baseline.json") or {}
    rows = []
    for d in sorted((out / "rows").iterdir(), key=lambda p: p.stat().st_mtime):
        if (d / "row.json").exists():
            r = compute(d, baseline)
            r["relay_name"] = RELAY_NAMES.get(r.get("relay"), "no relay")
            r["hops"] = (f"{'STARTTLS' if r.get('inbound') == 'starttls' else 'clear'} → "
                         f"{'STARTTLS' if r.get('outbound') == 'tls' else 'clear'}")
            rows.append(r)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[c[0] for c in COLUMNS] + CSV_EXTRA, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    plot_note = plot(rows, out)
    compare = [r for r in rows if r.get("group") == "compare" and r.get("relay") != "direct"]
    direct = [r for r in rows if r.get("relay") == "direct"]
    ablation = [r for r in rows if r.get("group") == "ablation"]
    short = [r for r in rows if r.get("group") == "short"]
    conc = rows[0].get("concurrency") if rows else "?"
    cross = [r["pgroup_usec"] / r["cgroup_usec"] for r in rows
             if r.get("cpu_method") == "cgroup" and r.get("cgroup_usec") and r.get("pgroup_usec")]
    cross_note = (f" Cross-check: the relay's process group's /proc times (live processes plus "
                  f"the leader's reaped children) came to {min(cross):.2f}–{max(cross):.2f} × "
                  "the cgroup's figure." if cross else "")
    noise = [(a, b) for a in rows for b in rows if a["name"].startswith("krelay-plain-")
             and b["name"] == "abl-workers2-" + a["name"].rsplit("-", 1)[1] and a.get("msgs_per_s")
             and b.get("msgs_per_s")]
    noise_note = "".join(f" `{b['name']}` repeats `{a['name']}` (same settings on this machine) "
                         f"and got {b['msgs_per_s'] / a['msgs_per_s']:.2f} × its msg/s: that is "
                         "the run-to-run noise here." for a, b in noise
                         if os.cpu_count() == 2)
    ktls_note = ("kTLS: the tls module is loaded; the kTLS TX column says what each krelay row used."
                 if ktls == "yes" else
                 "kTLS rows skipped: /proc/net/tls_stat is missing (no tls kernel module), so every "
                 "TLS row here is userspace TLS (OpenSSL) for both relays.")
    md = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}: krelay "
          f"{version}, Postfix {postfix_version()}; `bench/run.sh` took {wall} s.",
          "",
          f"Machine limits, measured in the same run: {baseline_text(baseline)}",
          "",
          f"Source → relay → sink on loopback, {conc} concurrent sessions, both "
          "`krelay-bench`; the sink offers STARTTLS and the relay must use it (krelay "
          "`TLSPolicy=encrypt`, Postfix `smtp_tls_security_level = encrypt`); sink and source "
          "allow only TLS 1.3 TLS_AES_128_GCM_SHA256. krelay makes every message durable "
          "(write, fdatasync, rename, directory fsync) before its 250, as Postfix does; krelay "
          "interactive (`DeliveryMode=interactive`) relays it before its 250 and makes durable "
          "only what the next hop did not take. Seconds: the source's start to the "
          "sink's last message; before that, each relay got "
          f"{rows[0].get('warmup', 0) if rows else 0} messages of warm-up (not counted). "
          "MB/s counts the payload. Conns: connections the sink accepted, warm-up "
          "included. Other load: CPU time the rest of the machine (not relay, source or sink) "
          "used meanwhile, in cores: other users of this machine. Relay CPU: user+sys of all the "
          f"relay's processes, by {cpu_method}. × floor: relay CPU per GB over one core's "
          "AES-128-GCM time per GB (a relay that decrypts and encrypts has a floor of 2). "
          + ktls_note + cross_note,
          "",
          "### krelay and Postfix", "", md_table(compare), "",
          "### No relay: the source straight into the sink (STARTTLS), same run", "",
          md_table(direct, DIRECT), "", DIRECT_NOTE, "",
          "### krelay ÷ Postfix", "", ratio_table(rows), "",
          "### krelay ablations (one setting changed; cleartext in)", "", md_table(ablation), "",
          noise_note.strip(), "",
          "### One message per connection, no pipelining", "", SHORT_NOTE, "",
          md_table(short), "", short_ratio_table(rows), "",
          plot_note]
    text = "\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    failed = [r["name"] for r in rows if r["problems_text"] != "ok"]
    summary = [md[0], "", f"Machine limits: {baseline_text(baseline)} "
               + ("kTLS: the tls module was loaded." if ktls == "yes" else
                  "No tls kernel module: all TLS is userspace OpenSSL, for both relays."),
               "", md_table(compare, [k for k in SHORT if k != "name"]), "",
               "No relay, the source straight into the sink (this machine's ceiling for the "
               "two of them):", "", md_table(direct, DIRECT), "", DIRECT_NOTE, "",
               ratio_table(rows), "",
               "krelay alone, one setting changed:", "",
               md_table(ablation, [k for k in SHORT if k != "relay_name"]), "",
               noise_note.strip(), "",
               SHORT_NOTE, "", short_ratio_table(rows), ""]
    if failed:
        summary += [f"Rows with problems: {', '.join(failed)} (see results.md).", ""]
    (out / "results-summary.md").write_text("\n".join(summary))
    print(text)
    print(f"CSV: {out / 'results.csv'}; Markdown: {out / 'results.md'}")
    return 0 if all(r["problems_text"] == "ok" for r in rows) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline")
    ap.add_argument("--row")
    ap.add_argument("--out")
    ap.add_argument("--cpu-method", default="?")
    ap.add_argument("--ktls", default="no")
    ap.add_argument("--wall", default="?")
    ap.add_argument("--version", default="?", help="krelay's commit")
    args = ap.parse_args()
    if args.baseline:
        print("  " + baseline_text(load(args.baseline) or {}))
    if args.row:
        d = Path(args.row)
        print(row_line(compute(d, load(d.parent.parent / "baseline.json"))))
    if args.out:
        return report(Path(args.out), args.cpu_method, args.ktls, args.wall, args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
