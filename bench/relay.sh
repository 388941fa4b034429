#!/usr/bin/env bash
# relay.sh: relaying throughput with TLS on both hops.  Python smtplib
# (bench/smtp_load.py) -> STARTTLS -> krelay -> STARTTLS (TLSPolicy=encrypt)
# -> a sink (a second krelay, DeliveryMode=queueonly), all on this machine.
# For 4 KiB and 1 MiB messages: messages/s and MB/s from the first
# submission until the relay's queue is empty, and the relay's own CPU
# (user+sys from /proc, all its threads) per message and per GB.
# QUICK=1 sends fewer messages.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build/bench/relay
rm -rf "$dir" && mkdir -p "$dir"
[ -f build/demo/certs/server.crt ] || scripts/mkcerts.sh build/demo/certs --name relay.demo >/dev/null
certs=$PWD/build/demo/certs
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # run NAME COUNT SIZE SESSIONS
	local name=$1 n=$2 size=$3 sessions=$4 in out
	in=$(port) out=$(port)
	mkdir -p "$dir/$name"
	cat >"$dir/$name/sink.conf" <<CONF
Listen=127.0.0.1:$out
QueueDirectory=$PWD/$dir/$name/sinkq
LogFile=$PWD/$dir/$name/sink.log
DeliveryMode=queueonly
MaxMessageSize=64m
ServerCertFile=$certs/server.crt
ServerKeyFile=$certs/server.key
CONF
	cat >"$dir/$name/relay.conf" <<CONF
Listen=127.0.0.1:$in
QueueDirectory=$PWD/$dir/$name/relayq
LogFile=$PWD/$dir/$name/relay.log
MaxMessageSize=64m
ServerCertFile=$certs/server.crt
ServerKeyFile=$certs/server.key
SmartHost=[127.0.0.1]:$out
TLSPolicy=encrypt
CONF
	build/krelay -C "$dir/$name/sink.conf" 2>/dev/null &
	local sink=$!
	build/krelay -C "$dir/$name/relay.conf" 2>/dev/null &
	local relay=$!
	for f in relay sink; do
		for _ in $(seq 100); do grep -q "listening on" "$dir/$name/$f.log" 2>/dev/null && break; sleep 0.05; done
	done
	local tick c0 c1 t0 t1
	tick=$(getconf CLK_TCK)
	c0=$(awk '{print $14 + $15}' "/proc/$relay/stat")
	t0=$(date +%s.%N)
	bench/smtp_load.py --port "$in" --mode starttls --messages "$n" --sessions "$sessions" \
		--size "$size" --ca "$certs/ca.crt" >"$dir/$name/load.json"
	for _ in $(seq 1200); do
		[ -z "$(ls "$dir/$name/relayq/queue" 2>/dev/null)" ] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	c1=$(awk '{print $14 + $15}' "/proc/$relay/stat")
	kill -TERM $relay $sink
	wait $relay $sink || true
	/usr/bin/python3 - "$name" "$n" "$size" "$t0" "$t1" "$c0" "$c1" "$tick" "$dir/$name/relay.log" <<'PY'
import re, sys
name, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secs = float(sys.argv[5]) - float(sys.argv[4])
cpu = (int(sys.argv[7]) - int(sys.argv[6])) / int(sys.argv[8])
log = open(sys.argv[9]).read()
sent = re.findall(r"status=sent .*body_path=(\w+) bytes=(\d+)", log)
paths = sorted(set(p for p, _ in sent))
nbytes = sum(int(b) for _, b in sent)
ktls = sorted(set(re.findall(r"status=sent .*ktls_tx=(\w+)", log)))
print(f"{name:>6}: {len(sent)}/{n} relayed in {secs:.2f} s = {len(sent) / secs:.0f} msg/s, "
      f"{nbytes / secs / 1e6:.1f} MB/s; relay CPU {cpu:.2f} s = {cpu / max(len(sent), 1) * 1e6:.0f} us/msg, "
      f"{cpu / max(nbytes, 1) * 1e9:.1f} s/GB; body_path={','.join(paths)} ktls_tx={','.join(ktls)}")
PY
}

echo "relay bench: smtplib -STARTTLS-> krelay -STARTTLS-> krelay sink, $(nproc) cores shared by all three"
if [ -n "${QUICK:-}" ]; then
	run 4KiB 1000 4096 20
	run 1MiB 50 1048576 4
else
	run 4KiB 4000 4096 20
	run 1MiB 200 1048576 4
fi
