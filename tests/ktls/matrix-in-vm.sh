#!/bin/sh
# matrix-in-vm.sh: the cipher x version x size matrix of the kernel-TLS test
# (busybox sh, inside the VM that scripts/vm.sh boots).
#   scripts/vm.sh --mem 2048 --timeout 600 -- /krelay/matrix-in-vm.sh [SIZES...]
# For TLS 1.2 and 1.3, each with AES-128-GCM, AES-256-GCM and
# CHACHA20-POLY1305 (six combinations), bodies of 0, 1, 16383, 16384, 16385
# bytes, 1 MiB and 20 MiB go in over STARTTLS (openssl s_client pinned to
# the combination, BDAT so every size is exact) to a relay krelay, which
# relays them over STARTTLS (TLSPolicy=encrypt) to one sink krelay per
# combination, pinned to it with CipherList / CipherSuites / TLSMaxVersion.
# Passes only when every body arrives byte for byte, every relay delivery
# logs that combination with ktls_tx=on body_path=splice, every TLS 1.2
# session in (relay and sinks) logs ktls_rx=on, and /proc/net/tls_stat's
# TlsTxSw and TlsRxSw grew while TlsDecryptError stayed 0.
. /krelay/vm-lib.sh
W=/tmp/matrix
RELAY_PORT=2525
SIZES=${*:-0 1 16383 16384 16385 1048576 20971520}
# name  version  inbound s_client pin  sink pin (krelay options)  cipher name
COMBOS="t12-aes128 t12-aes256 t12-chacha t13-aes128 t13-aes256 t13-chacha"
combo() { # NAME -> sets ver, client, sinkconf, cipher
	case "$1" in
	t12-aes128) cipher=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
	t12-aes256) cipher=ECDHE-ECDSA-AES256-GCM-SHA384 ;;
	t12-chacha) cipher=ECDHE-ECDSA-CHACHA20-POLY1305 ;;
	t13-aes128) cipher=TLS_AES_128_GCM_SHA256 ;;
	t13-aes256) cipher=TLS_AES_256_GCM_SHA384 ;;
	t13-chacha) cipher=TLS_CHACHA20_POLY1305_SHA256 ;;
	esac
	case "$1" in
	t12-*)
		ver=TLSv1.2
		client="-tls1_2 -cipher $cipher"
		sinkconf="TLSMaxVersion=TLSv1.2
CipherList=$cipher" ;;
	t13-*)
		ver=TLSv1.3
		client="-tls1_3 -ciphersuites $cipher"
		sinkconf="TLSMinVersion=TLSv1.3
CipherSuites=$cipher" ;;
	esac
}

load_modules
stat_tls before
tx0=$(tls_counter TlsTxSw) rx0=$(tls_counter TlsRxSw)

rm -rf "$W"
mkdir -p "$W/relay" "$W/bodies"
base_conf "$W/relay" $RELAY_PORT >"$W/relay/krelay.conf"
cat >>"$W/relay/krelay.conf" <<CONF
TransportTable=$W/relay/transport
SmartHost=[127.0.0.1]:9
MaxMessageSize=64m
RetrySchedule=1s,2s
TLSPolicy=encrypt
CONF
: >"$W/relay/transport"
port=2600
sinks=""
for c in $COMBOS; do
	combo "$c"
	port=$((port + 1))
	mkdir -p "$W/$c"
	base_conf "$W/$c" $port >"$W/$c/krelay.conf"
	cat >>"$W/$c/krelay.conf" <<CONF
DeliveryMode=queueonly
Workers=1
MaxMessageSize=64m
$sinkconf
CONF
	echo "$c.test [127.0.0.1]:$port" >>"$W/relay/transport"
	start_krelay "$W/$c"
	sinks="$sinks $started"
done
start_krelay "$W/relay"
relay=$started

# bodies: CRLF text lines, some starting with '.', cut to the exact size
for n in $SIZES; do
	i=0
	while [ $i -lt 64 ]; do
		printf 'line %02d of the kTLS matrix body, padding padding padding padding padding\r\n' $i
		printf '.a line that starts with a dot, kept as is by BDAT\r\n'
		i=$((i + 1))
	done >"$W/bodies/block"
	while [ "$(wc -c <"$W/bodies/block")" -lt "$n" ]; do
		cat "$W/bodies/block" "$W/bodies/block" >"$W/bodies/block2"
		mv "$W/bodies/block2" "$W/bodies/block"
	done
	head -c "$n" "$W/bodies/block" >"$W/bodies/$n"
done
rm -f "$W/bodies/block"
header() { printf 'From: vm@example.org\r\nTo: x@%s.test\r\nSubject: matrix %s %s\r\n\r\n' "$1" "$1" "$2"; }

# one STARTTLS session per combination, all at once; every message by BDAT
echo "== submitting $(echo $SIZES | wc -w) bodies ($SIZES bytes) for each of: $COMBOS"
t0=$(date +%s)
clients=""
for c in $COMBOS; do
	combo "$c"
	{
		printf 'EHLO vm.example.org\r\n'
		for n in $SIZES; do
			len=$(($(header "$c" "$n" | wc -c) + n))
			printf 'MAIL FROM:<%s-%s@vm.test>\r\nRCPT TO:<x@%s.test>\r\nBDAT %d LAST\r\n' \
				"$c" "$n" "$c" "$len"
			header "$c" "$n"
			cat "$W/bodies/$n"
		done
		printf 'QUIT\r\n'
	} | timeout 400 openssl s_client -quiet $client -starttls smtp \
		-connect 127.0.0.1:$RELAY_PORT -CAfile "$C/ca.crt" >"$W/$c/client.out" 2>&1 &
	clients="$clients $!"
done
wait $clients
echo "   submitted in $(($(date +%s) - t0)) s"

total=0
for c in $COMBOS; do total=$((total + $(echo $SIZES | wc -w))); done
i=0
while [ $i -lt 3000 ]; do
	got=$(cat "$W"/*/krelay.log | grep -c " smtp queued .*@vm.test>")
	[ -z "$(ls "$W/relay/queue/queue" 2>/dev/null)" ] && [ "$got" -ge $((2 * total)) ] && break
	sleep 0.1; i=$((i + 1))
done
echo "   relay queue empty and $((got - total)) of $total at the sinks after $(($(date +%s) - t0)) s"
kill -TERM $relay $sinks 2>/dev/null
wait $relay $sinks
stat_tls after

strip() { sed 's/^[^ ]* [^ ]* [0-9A-Fa-f]* /   /'; }
echo "== relay: smtp tls (inbound)"
grep " smtp tls " "$W/relay/krelay.log" | strip
echo "== relay: warnings and errors"
grep -E "error|warn" "$W/relay/krelay.log" | strip

ok=0 bad=0
fail() { echo "FAIL: $*"; bad=$((bad + 1)); }
for c in $COMBOS; do
	combo "$c"
	echo "== $c: $ver $cipher"
	# the submission: one 250 per message, nothing refused
	acc=$(tr -d '\r' <"$W/$c/client.out" | grep -c '^250 2.0.0 Ok: queued')
	[ "$acc" = "$(echo $SIZES | wc -w)" ] ||
		{ fail "$c: $acc messages accepted"; tr -d '\r' <"$W/$c/client.out" | grep -E '^[45]' | head -3; }
	# inbound at the relay: the pinned combination; TLS 1.2 decrypts in the kernel
	want_rx=on
	[ "$ver" = TLSv1.3 ] && want_rx=off
	grep " smtp tls version=$ver cipher=$cipher ktls_tx=on ktls_rx=$want_rx" "$W/relay/krelay.log" >/dev/null ||
		fail "$c: relay's inbound session did not log $ver $cipher ktls_tx=on ktls_rx=$want_rx"
	# outbound: every delivery over the combination, kernel TLS, spliced
	sent=$(grep " delivery to=<x@$c.test>.*status=sent" "$W/relay/krelay.log")
	nsent=$(printf '%s\n' "$sent" | grep -c "status=sent")
	good=$(printf '%s\n' "$sent" | grep "tls=\"$ver with cipher $cipher " | grep -c "ktls_tx=on body_path=splice")
	if [ "$nsent" = "$(echo $SIZES | wc -w)" ] && [ "$good" = "$nsent" ]; then
		echo "ok: $c: $nsent deliveries logged tls=\"$ver with cipher $cipher\" ktls_tx=on body_path=splice"
		ok=$((ok + 1))
	else
		fail "$c: $good of $nsent deliveries logged $ver $cipher ktls_tx=on body_path=splice"
		grep " delivery to=<x@$c.test>" "$W/relay/krelay.log" | strip | head -3
	fi
	# the sink's side of the same connections
	grep " smtp tls version=$ver cipher=$cipher ktls_tx=on ktls_rx=$want_rx" "$W/$c/krelay.log" >/dev/null ||
		fail "$c: sink did not log $ver $cipher ktls_tx=on ktls_rx=$want_rx"
	# byte for byte: the sink's file holds [Received...] + message + envelope,
	# whose trailer "KRELAY-ENV <hex offset> <hex length>" marks the end
	for n in $SIZES; do
		qid=$(sed -n "s/.* smtp queued id=\([0-9A-F]*\) from=<$c-$n@vm.test>.*/\1/p" "$W/$c/krelay.log" | head -1)
		f=$W/$c/queue/queue/$qid
		if [ -z "$qid" ] || [ ! -f "$f" ]; then
			fail "$c: body of $n bytes not at the sink"; continue
		fi
		off=$(tail -n 1 "$f" | awk '$1 == "KRELAY-ENV" { print $2 }')
		len=$(($(header "$c" "$n" | wc -c) + n))
		head -c $((0x${off:-0})) "$f" | tail -c "$len" >"$W/got"
		if { header "$c" "$n"; cat "$W/bodies/$n"; } | cmp -s - "$W/got"; then
			echo "ok: $c: body of $n bytes arrived byte for byte"; ok=$((ok + 1))
		else
			fail "$c: body of $n bytes differs at the sink"
		fi
		rm -f "$W/got" "$f" # keep the tmpfs small
	done
done

tx1=$(tls_counter TlsTxSw) rx1=$(tls_counter TlsRxSw) derr=$(tls_counter TlsDecryptError)
if [ "$tx1" -gt "$tx0" ] && [ "$rx1" -gt "$rx0" ] && [ "$derr" = 0 ]; then
	echo "ok: tls_stat TlsTxSw $tx0 -> $tx1, TlsRxSw $rx0 -> $rx1, TlsDecryptError 0"
	ok=$((ok + 1))
else
	fail "tls_stat TlsTxSw $tx0 -> $tx1, TlsRxSw $rx0 -> $rx1, TlsDecryptError $derr"
fi
echo "== $ok checks passed, $bad failed"
[ "$bad" = 0 ]
