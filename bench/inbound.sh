#!/usr/bin/env bash
# inbound.sh (`make bench`, for now): how fast krelay accepts mail durably.
# 4 KiB messages over STARTTLS from 50 concurrent sessions (Python smtplib
# load generator, bench/smtp_load.py, in 2 processes on the same machine),
# and how many fsyncs the spool needed for them.  QUICK=1 sends fewer.
# Prints the figures and krelay's own CPU time per message from /proc.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${MESSAGES:-$([ -n "${QUICK:-}" ] && echo 2000 || echo 10000)}
sessions=${SESSIONS:-50}
size=${SIZE:-4096}
dir=build/bench/inbound
rm -rf "$dir" && mkdir -p "$dir"
[ -f build/demo/certs/server.crt ] || scripts/mkcerts.sh build/demo/certs --name relay.demo >/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/krelay.conf" <<CONF
Listen=127.0.0.1:$port
QueueDirectory=$PWD/$dir/queue
LogFile=$PWD/$dir/krelay.log
ServerCertFile=$PWD/build/demo/certs/server.crt
ServerKeyFile=$PWD/build/demo/certs/server.key
CACertFile=$PWD/build/demo/certs/ca.crt
CONF
build/krelay -C "$dir/krelay.conf" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$dir/krelay.log" 2>/dev/null && break; sleep 0.05; done

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tick=$(getconf CLK_TCK)
c0=$(cpu)
result=$(bench/smtp_load.py --port "$port" --mode starttls --messages "$n" --sessions "$sessions" \
	--size "$size" --ca build/demo/certs/ca.crt)
c1=$(cpu)
kill -TERM $pid && wait $pid || true
trap - EXIT
/usr/bin/python3 - "$dir/krelay.log" "$result" "$c0" "$c1" "$tick" "$(nproc)" <<'PY'
import json, re, sys
log, r = open(sys.argv[1]).read(), json.loads(sys.argv[2])
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
stop = re.search(r"krelay stopped messages=(\d+) bytes=(\d+) fsyncs=(\d+) dirsyncs=(\d+)", log)
msgs, fs, ds = int(stop.group(1)), int(stop.group(3)), int(stop.group(4))
print(f"inbound bench: {r['messages']} x {r['size']} B over STARTTLS ({r['tls_versions']}), "
      f"{r['sessions']} sessions, {sys.argv[6]} cores shared by krelay and the load generator")
print(f"  accepted          {msgs} messages in {r['seconds']} s = {r['messages_per_s']} msg/s, {r['mb_per_s']} MB/s")
print(f"  final reply       p50 {r['latency_ms']['p50']} ms, p90 {r['latency_ms']['p90']} ms, p99 {r['latency_ms']['p99']} ms")
print(f"  fsyncs            {fs} file fdatasyncs + {ds} directory fsyncs "
      f"({msgs / max(ds, 1):.1f} messages per directory fsync)")
print(f"  krelay CPU        {cpu:.2f} s user+sys = {cpu / max(msgs, 1) * 1e6:.0f} us per message")
if r["errors"]:
    print(f"  ERRORS            {r['errors']}")
PY
