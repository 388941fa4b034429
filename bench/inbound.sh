#!/usr/bin/env bash
# inbound.sh: how fast krelay accepts mail durably (intake only: the relay
# runs with DeliveryMode=queueonly, so nothing is relayed or bounced).
# 4 KiB messages over STARTTLS from 50 concurrent sessions (build/krelay-bench
# source on the same machine), and how many fsyncs the spool needed for
# them.  QUICK=1 sends fewer.  Prints the figures and krelay's own CPU time
# per message from /proc.  Not part of `make bench` (bench/run.sh), which
# measures relaying end to end.
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
$([ "$(id -u)" = 0 ] && echo "RunAsUser=root")
LogFile=$PWD/$dir/krelay.log
ServerCertFile=$PWD/build/demo/certs/server.crt
ServerKeyFile=$PWD/build/demo/certs/server.key
CACertFile=$PWD/build/demo/certs/ca.crt
DeliveryMode=queueonly
CONF
build/krelay -C "$dir/krelay.conf" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$dir/krelay.log" 2>/dev/null && break; sleep 0.05; done

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tick=$(getconf CLK_TCK)
c0=$(cpu)
[ -x build/krelay-bench ] || { echo "inbound.sh: build/krelay-bench missing (make)" >&2; exit 1; }
result=$(build/krelay-bench source --to "127.0.0.1:$port" --tls starttls --messages "$n" \
	--concurrency "$sessions" --size "$size" --ca build/demo/certs/ca.crt --json)
c1=$(cpu)
kill -TERM $pid && wait $pid || true
trap - EXIT
/usr/bin/python3 - "$dir/krelay.log" "$result" "$c0" "$c1" "$tick" "$(nproc)" <<'PY'
import json, re, sys
log, r = open(sys.argv[1]).read(), json.loads(sys.argv[2])
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
stop = re.search(r"krelay stopped messages=(\d+) bytes=(\d+) fsyncs=(\d+) dirsyncs=(\d+)", log)
msgs, fs, ds = int(stop.group(1)), int(stop.group(3)), int(stop.group(4))
print(f"inbound bench: {r['messages_ok']} x {r['size']} over STARTTLS, "
      f"{r['concurrency']} sessions, {sys.argv[6]} cores shared by krelay and the load generator")
print(f"  accepted          {msgs} messages in {r['seconds']:.2f} s = {r['msgs_per_s']:.0f} msg/s, "
      f"{r['mb_per_s']:.1f} MB/s")
lat = r["latency_ms"]
print(f"  final reply       p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms")
print(f"  fsyncs            {fs} file fdatasyncs + {ds} directory fsyncs "
      f"({msgs / max(ds, 1):.1f} messages per directory fsync)")
print(f"  krelay CPU        {cpu:.2f} s user+sys = {cpu / max(msgs, 1) * 1e6:.0f} us per message "
      f"(load generator: {r['cpu_us_per_msg']:.0f} us per message)")
if r["errors"]:
    print(f"  ERRORS            {r['errors']}")
PY
