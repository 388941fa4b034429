#!/usr/bin/env bash
# demo.sh (`make demo`): a real krelay run on loopback with built-in defaults
# plus throwaway certificates: a real client (Python's smtplib and ssl)
# submits a few hundred messages over STARTTLS and implicit TLS, then the
# relay is stopped and the demo prints what it did, from its own log.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=build/demo
rm -rf "$demo/queue" "$demo/krelay.log"
mkdir -p "$demo"
[ -f "$demo/certs/server.crt" ] || scripts/mkcerts.sh "$demo/certs" --name relay.demo >/dev/null

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp_port=$(port) smtps_port=$(port)
cat >"$demo/krelay.conf" <<CONF
# make demo: built-in defaults, plus loopback listeners, a private queue and
# the certificates scripts/mkcerts.sh just made (Sendmail option names).
Listen=127.0.0.1:$smtp_port
Listen=127.0.0.1:$smtps_port smtps
QueueDirectory=$PWD/$demo/queue
LogFile=$PWD/$demo/krelay.log
O CACertPath=$PWD/$demo/certs
O CACertFile=$PWD/$demo/certs/ca.crt
O ServerCertFile=$PWD/$demo/certs/server.crt
O ServerKeyFile=$PWD/$demo/certs/server.key
CONF

echo "== krelay check"
build/krelay check -C "$demo/krelay.conf" | sed 's/^/   /'
echo "== starting krelay on 127.0.0.1:$smtp_port (STARTTLS) and :$smtps_port (implicit TLS)"
build/krelay -C "$demo/krelay.conf" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	grep -q "listening on" "$demo/krelay.log" 2>/dev/null && break
	sleep 0.05
done

load() {
	bench/smtp_load.py --port "$1" --mode "$2" --messages "$3" --sessions "$4" --size "$5" \
		--ca "$demo/certs/ca.crt" --cert "$demo/certs/client.crt" --key "$demo/certs/client.key"
}
start=$(date +%s.%N)
echo "== submitting 300 x 4 KiB over STARTTLS (20 sessions) and 100 x 64 KiB over implicit TLS (5 sessions)"
r1=$(load "$smtp_port" starttls 300 20 4096)
r2=$(load "$smtps_port" smtps 100 5 65536)
end=$(date +%s.%N)
kill -TERM $pid
wait $pid || true
trap - EXIT

/usr/bin/python3 - "$demo/krelay.log" "$r1" "$r2" "$start" "$end" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
runs = [json.loads(sys.argv[2]), json.loads(sys.argv[3])]
secs = float(sys.argv[5]) - float(sys.argv[4])
queued = re.findall(r"smtp queued id=(\w+) .* size=(\d+)", log)
tls = re.findall(r"smtp tls version=(\S+) cipher=(\S+) ktls_tx=(\w+) ktls_rx=(\w+)(?: ktls_tx_why=\"([^\"]*)\")?", log)
stop = re.search(r"krelay stopped messages=(\d+) bytes=(\d+) fsyncs=(\d+) dirsyncs=(\d+)", log)
versions, ktls = {}, {}
for v, c, tx, rx, why in tls:
    versions[f"{v} {c}"] = versions.get(f"{v} {c}", 0) + 1
    k = f"tx={tx} rx={rx}" + (f" (off because: {why})" if why else "")
    ktls[k] = ktls.get(k, 0) + 1
print("== what krelay did")
for r in runs:
    print(f"   client {r['mode']:8}: {r['messages']} messages, {r['bytes']} bytes in {r['seconds']} s"
          f" = {r['messages_per_s']} msg/s, reply p50 {r['latency_ms']['p50']} ms"
          + (f", ERRORS: {r['errors']}" if r['errors'] else ""))
print(f"   messages accepted  : {len(queued)} (queued durably, each fsynced before its 250)")
print(f"   bytes spooled      : {sum(int(s) for _, s in queued)} (with Received headers)")
for k, n in sorted(versions.items()):
    print(f"   TLS sessions       : {n} x {k}")
for k, n in sorted(ktls.items()):
    print(f"   kTLS               : {n} sessions {k}")
if stop:
    print(f"   fsyncs             : {stop.group(3)} file fdatasyncs, {stop.group(4)} queue-directory fsyncs (group commit)")
print(f"   time               : {secs:.2f} s")
print(f"   log                : {sys.argv[1]}")
ok = len(queued) == sum(r["messages"] for r in runs) == 400
sys.exit(0 if ok else 1)
PY
