#!/bin/sh
# run-in-vm.sh: the guest side of the kernel-TLS test (busybox sh, inside the
# VM that scripts/vm.sh boots; found there as /krelay/run-in-vm.sh).
#   scripts/vm.sh --timeout 240 -- /krelay/run-in-vm.sh
# Loads the kTLS modules (unless vm.sh was given --no-tls-module), prints
# `krelay check`, then relays messages through a relay krelay to a sink
# krelay (DeliveryMode=queueonly) over STARTTLS with TLSPolicy=encrypt, and
# prints what krelay logged about TLS, kTLS and the body path, and
# /proc/net/tls_stat.  A second relay (DeliveryMode=interactive) relays one
# message before its reply, to the same sink.  Exits 0 when every message
# reached the sink intact.
. /krelay/vm-lib.sh
W=/tmp/ktls
RELAY_PORT=2525 SINK_PORT=2526 KU_PORT=2527 KB_PORT=2528 IRELAY_PORT=2529

load_modules
stat_tls before

rm -rf "$W"
mkdir -p "$W/relay" "$W/sink" "$W/irelay"
{ base_conf "$W/sink" $SINK_PORT; echo DeliveryMode=queueonly; } >"$W/sink/krelay.conf"
base_conf "$W/relay" $RELAY_PORT >"$W/relay/krelay.conf"
cat >>"$W/relay/krelay.conf" <<CONF
SmartHost=[127.0.0.1]:$SINK_PORT
TransportTable=$W/relay/transport
RetrySchedule=1s,2s
TLSPolicy=encrypt
CONF
printf 'keyupdate.test [127.0.0.1]:%s\nbench.test [127.0.0.1]:%s\n' $KU_PORT $KB_PORT >"$W/relay/transport"
base_conf "$W/irelay" $IRELAY_PORT >"$W/irelay/krelay.conf"
printf 'SmartHost=[127.0.0.1]:%s\nTLSPolicy=encrypt\nDeliveryMode=interactive\n' $SINK_PORT \
	>>"$W/irelay/krelay.conf"

echo "== krelay check"
$K/krelay check -C "$W/relay/krelay.conf" 2>&1 | sed 's/^/   /'

start_krelay "$W/sink"
sink=$started
start_krelay "$W/relay"
relay=$started
start_krelay "$W/irelay"
irelay=$started
echo "== relay start line"
grep -m1 " starting " "$W/relay/krelay.log" | sed 's/^[^ ]* [^ ]* /   /'

# the messages: CRLF lines; a ~200 KiB body so the splice path has work
mkmsg() { # FILE SUBJECT LINES
	{
		printf 'From: vm@example.org\r\nTo: sink@example.com\r\nSubject: %s\r\n\r\n' "$2"
		i=0
		while [ $i -lt "$3" ]; do
			printf 'line %06d of the kTLS test message, padding padding padding padding padding\r\n' $i
			i=$((i + 1))
		done
	} >"$1"
}
mkmsg "$W/msg1" "ktls-vm-cleartext" 2500
n=1

# nc_submit RCPT FILE [PORT]: one cleartext SMTP transaction (busybox nc),
# one command at a time; prints the server's replies
nc_submit() {
	{
		sleep 0.5; printf 'EHLO vm.example.org\r\n'
		sleep 0.3; printf 'MAIL FROM:<vm@example.org>\r\n'
		sleep 0.3; printf 'RCPT TO:<%s>\r\n' "$1"
		sleep 0.3; printf 'DATA\r\n'
		sleep 0.3; cat "$2"; printf '.\r\n'
		sleep 0.5; printf 'QUIT\r\n'
		sleep 0.5
	} | timeout 30 nc 127.0.0.1 "${3:-$RELAY_PORT}" 2>&1 | tr -d '\r' | grep -E '^(250 |354|221|[45][0-9][0-9])' | sed 's/^/   S: /'
}

# 1: cleartext submission (busybox nc), one command at a time
echo "== submitting message 1 (cleartext SMTP, $(wc -c <"$W/msg1") bytes)"
nc_submit sink@example.com "$W/msg1"

# 2: STARTTLS submission with the openssl CLI (inbound TLS, kTLS RX/TX on the relay)
if command -v openssl >/dev/null 2>&1; then
	mkmsg "$W/msg2" "ktls-vm-starttls" 1200
	n=2
	echo "== submitting message 2 (STARTTLS via openssl s_client, $(wc -c <"$W/msg2") bytes)"
	{
		sleep 2; printf 'EHLO vm.example.org\r\n'
		sleep 0.5; printf 'MAIL FROM:<vm@example.org>\r\n'
		sleep 0.5; printf 'RCPT TO:<sink@example.com>\r\n'
		sleep 0.5; printf 'DATA\r\n'
		sleep 0.5; cat "$W/msg2"; printf '.\r\n'
		sleep 1; printf 'QUIT\r\n'
		sleep 1
	} | timeout 40 openssl s_client -quiet -starttls smtp -connect 127.0.0.1:$RELAY_PORT \
		-CAfile "$C/ca.crt" -cert "$C/client.crt" -key "$C/client.key" 2>&1 | tr -d '\r' \
		| grep -E '^(250 |354|221|[45][0-9][0-9]|verify error)' | sed 's/^/   S: /'
fi

# 3: TLS 1.2 inbound (OpenSSL 3.0 offloads receive for TLS 1.2 only) and a
# ~1 MiB body in cleartext lines: many records on both hops
if command -v openssl >/dev/null 2>&1; then
	{
		printf 'From: vm@example.org\r\nTo: sink@example.com\r\nSubject: ktls-vm-tls12\r\n\r\n'
		yes 'line of the kTLS test message, TLS 1.2 inbound, padding padding padding padding' |
			head -n 13000 | sed 's/$/\r/'
	} >"$W/msg3"
	n=3
	echo "== submitting message 3 (STARTTLS, TLS 1.2, $(wc -c <"$W/msg3") bytes)"
	{
		sleep 2; printf 'EHLO vm.example.org\r\n'
		sleep 0.5; printf 'MAIL FROM:<vm@example.org>\r\n'
		sleep 0.5; printf 'RCPT TO:<sink@example.com>\r\n'
		sleep 0.5; printf 'DATA\r\n'
		sleep 0.5; cat "$W/msg3"; printf '.\r\n'
		sleep 2; printf 'QUIT\r\n'
		sleep 1
	} | timeout 60 openssl s_client -quiet -tls1_2 -starttls smtp -connect 127.0.0.1:$RELAY_PORT \
		-CAfile "$C/ca.crt" 2>&1 | tr -d '\r' \
		| grep -E '^(250 |354|221|[45][0-9][0-9]|verify error)' | sed 's/^/   S: /'
fi

# 4: a next hop that sends a TLS 1.3 KeyUpdate after MAIL (DESIGN.md hazard):
# with kTLS TX on, krelay must close, retry, and deliver without kTLS
ku=0
if [ -x $K/keyupdate_peer ] && [ "${1:-}" = --keyupdate ]; then
	ku=1
	mkdir -p "$W/ku"
	$K/keyupdate_peer $KU_PORT $C/server.crt $C/server.key "$W/ku" --max-conns 5 --timeout 120 \
		--when mail >"$W/ku/peer.log" 2>&1 &
	kupid=$!
	mkmsg "$W/msg4" "ktls-vm-keyupdate" 300
	echo "== submitting message 4 (to a next hop that sends KeyUpdate, $(wc -c <"$W/msg4") bytes)"
	nc_submit x@keyupdate.test "$W/msg4"
	i=0
	while [ $i -lt 300 ] && [ -z "$(ls "$W/ku"/*.eml 2>/dev/null)" ]; do sleep 0.1; i=$((i + 1)); done
	kill $kupid 2>/dev/null
	wait $kupid 2>/dev/null
	echo "== keyupdate peer"
	sed 's/^/   /' "$W/ku/peer.log"
fi

# 5: krelay-bench source -> relay -> krelay-bench sink (--verify), TLS 1.2 on
# both hops so the sink's receive goes to the kernel as well
kb=0
if [ -x $K/krelay-bench ]; then
	kb=1
	mkdir -p "$W/kb"
	$K/krelay-bench sink --listen 127.0.0.1:$KB_PORT --cert $C/server.crt --key $C/server.key \
		--tls-max 1.2 --verify --expect 20 --timeout 120 --json >"$W/kb/sink.json" 2>"$W/kb/sink.err" &
	kbsink=$!
	sleep 0.5
	echo "== krelay-bench source: 20 x 100k over STARTTLS TLS 1.2, to x@bench.test"
	$K/krelay-bench source --to 127.0.0.1:$RELAY_PORT --tls starttls --tls-max 1.2 \
		--messages 20 --size 100k --concurrency 4 --rcpt-domain bench.test --timeout 120 \
		--json >"$W/kb/source.json" 2>"$W/kb/source.err"
	echo "   source exit $?: $(cat "$W/kb/source.json" "$W/kb/source.err")"
	wait $kbsink
	echo "   sink exit $?: $(cat "$W/kb/sink.json" "$W/kb/sink.err")"
fi

# 6: the interactive relay: relayed to the sink before its 250
mkmsg "$W/msg9" "ktls-vm-interactive" 1500
echo "== submitting message 9 to the DeliveryMode=interactive relay ($(wc -c <"$W/msg9") bytes)"
nc_submit sink@example.com "$W/msg9" $IRELAY_PORT | tee "$W/irelay/replies"

echo "== waiting for the relay's queue to empty"
i=0
while [ $i -lt 600 ]; do
	[ -z "$(ls "$W/relay/queue/queue" 2>/dev/null)" ] && [ "$(ls "$W/sink/queue/queue" 2>/dev/null | wc -l)" -ge $((n + 1)) ] && break
	sleep 0.1; i=$((i + 1))
done
echo "   relay queue: $(ls "$W/relay/queue/queue" 2>/dev/null | wc -l) left; sink queue: $(ls "$W/sink/queue/queue" 2>/dev/null | wc -l) messages (after $((i / 10)) s)"
kill -TERM $relay $irelay $sink 2>/dev/null
wait $relay $irelay $sink 2>/dev/null

strip() { sed 's/^[^ ]* [^ ]* [0-9A-Fa-f]* /   /'; }
echo "== relay: smtp tls"
grep " smtp tls " "$W/relay/krelay.log" | strip
echo "== relay: delivery"
grep " delivery " "$W/relay/krelay.log" | strip
echo "== sink: smtp tls"
grep " smtp tls " "$W/sink/krelay.log" | strip
echo "== interactive relay"
grep -E " smtp (relayed|queued) | delivery |stopped" "$W/irelay/krelay.log" | strip
echo "== relay: stopping"
grep -E "relayed=|stopping|error|warn" "$W/relay/krelay.log" | sed 's/^[^ ]* [^ ]* /   /'
stat_tls after

# compare bytes: the sink's file holds [Received: ...] + the message + the
# envelope, whose trailer "KRELAY-ENV <hex offset> <hex length>" marks where
# the message ends.
ok=0 bad=0
for m in $(seq 1 $n); do
	subj=$(sed -n 's/^Subject: //p' "$W/msg$m" | tr -d '\r')
	f=$(grep -l "^Subject: $subj" "$W"/sink/queue/queue/* 2>/dev/null | head -1)
	if [ -z "$f" ]; then
		echo "FAIL: message $m ($subj) not at the sink"; bad=$((bad + 1)); continue
	fi
	off=$(tail -n 1 "$f" | awk '$1 == "KRELAY-ENV" { print $2 }')
	len=$(wc -c <"$W/msg$m")
	if [ -n "$off" ] && head -c $((0x$off)) "$f" | tail -c "$len" | cmp -s - "$W/msg$m"; then
		echo "ok: message $m ($subj, $len bytes) arrived at the sink byte for byte"; ok=$((ok + 1))
	else
		echo "FAIL: message $m ($subj) differs at the sink (trailer offset ${off:-none})"; bad=$((bad + 1))
	fi
done
# and what krelay said about kTLS on the outbound hop
sent=$(grep -c " delivery to=<sink@example.com>.*status=sent" "$W/relay/krelay.log")
if [ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ]; then
	good=$(grep " delivery to=<sink@example.com>.*status=sent" "$W/relay/krelay.log" | grep -c "ktls_tx=on body_path=splice")
	want="ktls_tx=on body_path=splice"
else
	good=$(grep " delivery to=<sink@example.com>.*status=sent" "$W/relay/krelay.log" | grep -c 'ktls_tx=off ktls_why="[^"]')
	want="ktls_tx=off with a ktls_why"
fi
if [ "$sent" = "$n" ] && [ "$good" = "$n" ]; then
	echo "ok: $good of $n deliveries logged $want"
else
	echo "FAIL: $good of $n deliveries ($sent sent) logged $want"; bad=$((bad + 1))
fi
# the KeyUpdate next hop: the message arrives once, intact; with kTLS on, the
# first connection was closed because of the KeyUpdate and the retry went
# without kTLS
if [ "$ku" = 1 ]; then
	f=$(ls "$W/ku"/*.eml 2>/dev/null | head -1)
	cnt=$(ls "$W/ku"/*.eml 2>/dev/null | wc -l)
	len=$(wc -c <"$W/msg4")
	if [ "$cnt" = 1 ] && tail -c "$len" "$f" | cmp -s - "$W/msg4"; then
		echo "ok: message 4 (KeyUpdate next hop) arrived once, byte for byte"
	else
		echo "FAIL: message 4 (KeyUpdate next hop): $cnt copies, or bytes differ"; bad=$((bad + 1))
	fi
	if [ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ]; then
		if grep -q "TLS KeyUpdate from .* on a kTLS connection: closed" "$W/relay/krelay.log" &&
			grep " delivery to=<x@keyupdate.test>" "$W/relay/krelay.log" | grep -q "status=deferred" &&
			grep " delivery to=<x@keyupdate.test>.*status=sent" "$W/relay/krelay.log" | grep -q "ktls_tx=off"; then
			echo "ok: KeyUpdate on kTLS: closed, deferred, retried without kTLS, sent"
		else
			echo "FAIL: KeyUpdate on kTLS was not handled by close and retry"; bad=$((bad + 1))
		fi
	fi
fi
# krelay-bench through the relay: all 20 verified at the sink, the relay's
# deliveries on kTLS with splice, and the sink's TLS 1.2 receive in the kernel
if [ "$kb" = 1 ]; then
	jv() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"; }
	kbwant="ktls_tx=on body_path=splice"
	[ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ] || kbwant="ktls_tx=off ktls_why="
	kbsent=$(grep " delivery to=<[^>]*@bench.test>.*status=sent" "$W/relay/krelay.log" | grep -c "$kbwant")
	if [ "$(jv "$W/kb/source.json" messages_ok)" = 20 ] && [ "$(jv "$W/kb/sink.json" messages)" = 20 ] &&
		[ "$(jv "$W/kb/sink.json" checksum_errors)" = 0 ] && [ "$kbsent" = 20 ]; then
		echo "ok: krelay-bench: 20 messages verified at its sink, 20 deliveries logged $kbwant"
	else
		echo "FAIL: krelay-bench: source ok $(jv "$W/kb/source.json" messages_ok), sink $(jv "$W/kb/sink.json" messages) (checksum errors $(jv "$W/kb/sink.json" checksum_errors)), $kbsent kTLS deliveries"
		bad=$((bad + 1))
	fi
	if [ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ]; then
		if [ "$(jv "$W/kb/sink.json" ktls_rx_connections)" -gt 0 ] 2>/dev/null; then
			echo "ok: krelay-bench sink received with kTLS RX ($(jv "$W/kb/sink.json" ktls_rx_connections) connections)"
		else
			echo "FAIL: krelay-bench sink had no kTLS RX connection"; bad=$((bad + 1))
		fi
	fi
fi
# the interactive relay: "relayed as", nothing stored, the delivery on kTLS
# with splice (or off, with the reason, without the module), bytes intact
iwant="ktls_tx=on body_path=splice"
[ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ] || iwant="ktls_tx=off ktls_why="
f=$(grep -l "^Subject: ktls-vm-interactive" "$W"/sink/queue/queue/* 2>/dev/null | head -1)
off=$([ -n "$f" ] && tail -n 1 "$f" | awk '$1 == "KRELAY-ENV" { print $2 }')
len=$(wc -c <"$W/msg9")
if grep -q "250 2.0.0 Ok: relayed as" "$W/irelay/replies" &&
	grep -q " smtp relayed id=.* mode=interactive" "$W/irelay/krelay.log" &&
	grep " delivery to=<sink@example.com>.*status=sent" "$W/irelay/krelay.log" | grep -q "$iwant" &&
	grep -q "krelay stopped messages=0 .* interactive=1 " "$W/irelay/krelay.log" &&
	[ -n "$off" ] && head -c $((0x$off)) "$f" | tail -c "$len" | cmp -s - "$W/msg9"; then
	echo "ok: message 9 relayed before its 250 (interactive), $iwant, byte for byte, nothing stored"
else
	echo "FAIL: message 9 through the interactive relay"; bad=$((bad + 1))
fi
# inbound TLS 1.2: the kernel decrypts too (kTLS RX), when the module is there
if [ "$n" -ge 3 ] && [ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ]; then
	if grep " smtp tls version=TLSv1.2 " "$W/relay/krelay.log" | grep -q "ktls_tx=on ktls_rx=on"; then
		echo "ok: inbound TLS 1.2 session logged ktls_tx=on ktls_rx=on"
	else
		echo "FAIL: inbound TLS 1.2 session without kTLS RX"; bad=$((bad + 1))
	fi
fi
[ "$bad" = 0 ] && [ "$ok" = "$n" ]
