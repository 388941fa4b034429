#!/usr/bin/env bash
# demo.sh (`make demo`): a real relay run on loopback.  krelay runs on its
# built-in defaults plus throwaway certificates, relaying with
# TLSPolicy=verify and a client certificate to a sink (a second krelay that
# only queues, DeliveryMode=queueonly).  A real client (Python's smtplib and
# ssl) pushes messages of mixed sizes into it over STARTTLS and implicit TLS;
# the demo waits until the relay's queue is empty and prints what happened,
# from the relay's own log.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=build/demo
mkdir -p "$demo"
[ -f "$demo/certs/server.crt" ] || scripts/mkcerts.sh "$demo/certs" --name relay.demo >/dev/null
certs=$PWD/$demo/certs
# keys readable by the group krelay (0640), so a reload (SIGHUP) can re-read them
if [ "$(id -u)" = 0 ] && getent group krelay >/dev/null; then
	chgrp krelay "$certs"/*.key && chmod 0640 "$certs"/*.key
fi

# Started as root, krelay runs as the user krelay (RunAsUser's default, made
# by deps.sh) once its listeners, keys and log are open: its queues must be
# where that user can reach them, which build/ under a private home may not
# be.  They go to a directory of their own under /tmp, removed at the end.
qroot=$PWD/$demo
if [ "$(id -u)" = 0 ]; then
	qroot=$(mktemp -d /tmp/krelay-demo.XXXXXX)
	chmod 0755 "$qroot"
fi
cleanup() { [ "$qroot" = "$PWD/$demo" ] || rm -rf "$qroot"; }
trap cleanup EXIT

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

write_configs() {
cat >"$demo/sink/krelay.conf" <<CONF
# the demo's next hop: keeps what it receives (DeliveryMode=queueonly)
Listen=127.0.0.1:$sink_port
QueueDirectory=$qroot/sink-queue
LogFile=$PWD/$demo/sink/krelay.log
DeliveryMode=queueonly
CACertFile=$certs/ca.crt
ServerCertFile=$certs/server.crt
ServerKeyFile=$certs/server.key
CONF
cat >"$demo/relay/krelay.conf" <<CONF
# make demo: built-in defaults, plus loopback listeners, a private queue, the
# certificates scripts/mkcerts.sh just made (Sendmail option names) and the
# sink as smart host, verified, with our client certificate.
Listen=127.0.0.1:$smtp_port
Listen=127.0.0.1:$smtps_port smtps
QueueDirectory=$qroot/relay-queue
LogFile=$PWD/$demo/relay/krelay.log
O CACertPath=$certs
O CACertFile=$certs/ca.crt
O ServerCertFile=$certs/server.crt
O ServerKeyFile=$certs/server.key
O ClientCertFile=$certs/client.crt
O ClientKeyFile=$certs/client.key
SmartHost=[127.0.0.1]:$sink_port
TLSPolicy=verify
CONF

}

# Starts the sink and the relay on free ports; a port is only free when it
# was looked at, so when another program took one meanwhile ("Address
# already in use"), new ports are picked and both start again (3 tries).
start_both() {
	for try in 1 2 3; do
		smtp_port=$(port) smtps_port=$(port) sink_port=$(port)
		rm -rf "$demo/relay" "$demo/sink" "$qroot/relay-queue" "$qroot/sink-queue"
		mkdir -p "$demo/relay" "$demo/sink"
		write_configs
		[ "$try" = 1 ] && { echo "== krelay check"
			build/krelay check -C "$demo/relay/krelay.conf" | sed 's/^/   /'; }
		build/krelay -C "$demo/sink/krelay.conf" 2>"$demo/sink/stderr" &
		sink=$!
		${KRELAY:-build/krelay} -C "$demo/relay/krelay.conf" 2>"$demo/relay/stderr" &
		relay=$!
		trap 'kill $relay $sink 2>/dev/null || true; cleanup' EXIT
		for f in "$demo/relay/krelay.log" "$demo/sink/krelay.log"; do
			for _ in $(seq 200); do grep -q "listening on" "$f" 2>/dev/null && break; sleep 0.05; done
		done
		if kill -0 $relay 2>/dev/null && kill -0 $sink 2>/dev/null &&
			grep -qs "listening on" "$demo/relay/krelay.log" &&
			grep -qs "listening on" "$demo/sink/krelay.log"; then
			return 0
		fi
		kill $relay $sink 2>/dev/null || true
		wait $relay $sink 2>/dev/null || true
		if ! grep -qs "Address already in use" "$demo/relay/stderr" "$demo/sink/stderr"; then
			echo "demo: krelay did not start:" >&2
			cat "$demo/relay/stderr" "$demo/sink/stderr" >&2
			return 1
		fi
	done
	echo "demo: no free ports after 3 tries" >&2
	return 1
}
start_both
echo "== relay on 127.0.0.1:$smtp_port (STARTTLS) and :$smtps_port (implicit TLS) -> sink on :$sink_port"

load() {
	bench/smtp_load.py --port "$1" --mode "$2" --messages "$3" --sessions "$4" --size "$5" \
		--ca "$certs/ca.crt" --cert "$certs/client.crt" --key "$certs/client.key"
}
start=$(date +%s.%N)
echo "== submitting 2000 x 4 KiB and 400 x 64 KiB over STARTTLS, 100 x 1 MiB over implicit TLS"
r1=$(load "$smtp_port" starttls 2000 20 4096)
r2=$(load "$smtp_port" starttls 400 10 65536)
r3=$(load "$smtps_port" smtps 100 4 1048576)
for _ in $(seq 600); do
	[ -z "$(ls "$qroot/relay-queue/queue" 2>/dev/null)" ] && break
	sleep 0.1
done
end=$(date +%s.%N)
left=$(ls "$qroot/relay-queue/queue" 2>/dev/null | wc -l)
kill -TERM $relay $sink
wait $relay $sink || true
trap - EXIT
cleanup

/usr/bin/python3 - "$demo/relay/krelay.log" "$demo/sink/krelay.log" "$start" "$end" "$left" "$r1" "$r2" "$r3" <<'PY'
import json, os, re, sys
rlog, slog = open(sys.argv[1]).read(), open(sys.argv[2]).read()
secs, left = float(sys.argv[4]) - float(sys.argv[3]), int(sys.argv[5])
runs = [json.loads(a) for a in sys.argv[6:]]
queued = re.findall(r"smtp queued id=\w+ .* size=(\d+)", rlog)
sent = re.findall(r"delivery to=\S+ relay=\S+ .*status=sent tls=\"([^\"]*)\" verified=(\w+) auth=\S+ resumed=\w+ ktls_tx=(\w+)(?: ktls_why=\"([^\"]*)\")? body_path=(\w+) bytes=(\d+)", rlog)
resumed = re.findall(r"delivery to=\S+ .*status=sent .* resumed=(\w+)", rlog)
other = re.findall(r"delivery to=\S+ .*status=(deferred|bounced)", rlog)
stop = re.search(r"relayed=(\d+) bounced=(\d+) deferred=(\d+) connections=(\d+)", rlog)
def count(items):
    out = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return ", ".join(f"{n} x {k}" for k, n in sorted(out.items()))
inbound = re.findall(r"smtp tls version=(\S+) cipher=(\S+) ktls_tx=(\w+) ktls_rx=(\w+)", rlog)
sink_in = re.findall(r"smtp tls version=(\S+) cipher=(\S+) .*client_cert=(\w+)", slog)
nbytes = sum(int(b) for *_, b in sent)
user = re.search(r"starting .* user=(\S+) group=(\S+)", rlog)
print("== what krelay did")
if user:
    print(f"   ran as             : user {user.group(1)}, group {user.group(2)}"
          + (" (dropped from root once its listeners, keys and queue were open)"
             if user.group(1) != "root" and os.geteuid() == 0 else ""))
for r in runs:
    print(f"   client {r['mode']:8}: {r['messages']} x {r['size']} B in {r['seconds']} s"
          + (f"  ERRORS: {r['errors']}" if r["errors"] else ""))
print(f"   accepted           : {len(queued)} messages, {sum(int(s) for s in queued)} bytes, each fsynced before its 250")
print(f"   relayed            : {len(sent)} messages, {nbytes} body bytes to the sink in {secs:.2f} s"
      f" = {len(sent) / secs:.0f} msg/s, {nbytes / secs / 1e6:.1f} MB/s (submission included)")
print(f"   not relayed        : {len(other)} ({count(other) or 'none'}); left in the queue: {left}")
print(f"   inbound TLS        : {count(f'{v} {c}' for v, c, *_ in inbound)}")
print(f"   outbound TLS       : {count(t for t, *_ in sent)}; certificate verified: {count(v for _, v, *_ in sent)}")
print(f"   TLS resumed        : {count(resumed)}")
print(f"   sink saw           : {count(f'{v} client_cert={c}' for v, _, c in sink_in)}")
print(f"   kTLS (outbound TX) : {count(('on' if k == 'on' else 'off (' + w + ')') for _, _, k, w, *_ in sent)}")
print(f"   kTLS (inbound)     : {count(f'tx={tx} rx={rx}' for *_, tx, rx in inbound)}")
print(f"   body path          : {count(p for *_, p, _ in sent)}")
if stop:
    print(f"   connections        : {stop.group(4)} outbound connections for {stop.group(1)} messages (reused)")
print(f"   logs               : {sys.argv[1]}, {sys.argv[2]}")
ok = left == 0 and len(sent) == len(queued) == sum(r["messages"] for r in runs) == 2500
sys.exit(0 if ok else 1)
PY
