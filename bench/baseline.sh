#!/usr/bin/env bash
# baseline.sh OUT.json [SECONDS]: this machine's limits, measured now, for
# bench/run.sh to set the relays' figures against.
#   - one core's AEAD speed on 16 KiB records (a full TLS record), from
#     `openssl speed -evp CIPHER -bytes 16384` (one process = one core):
#     AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, in bytes/s;
#   - loopback TCP throughput: one iperf3 stream over 127.0.0.1 (client and
#     server on this machine), bits/s.
# Every figure comes from this run; a tool that fails leaves its field null
# and says so on stderr.  SECONDS (default 2) per cipher and for iperf3.
set -euo pipefail
out=$1
secs=${2:-2}

speed() { # speed CIPHER -> bytes/s, or "null"
	local v
	v=$(timeout $((secs + 20)) openssl speed -mr -evp "$1" -bytes 16384 -seconds "$secs" 2>/dev/null |
		awk -F: '/^\+F:/ {print $4}' | tail -n1) || true
	if [ -z "$v" ]; then
		echo "baseline: openssl speed -evp $1 gave no figure" >&2
		v=null
	fi
	echo "$v"
}

aes128=$(speed aes-128-gcm)
aes256=$(speed aes-256-gcm)
chacha=$(speed chacha20-poly1305)

tcp=null
if command -v iperf3 >/dev/null; then
	for _ in 1 2 3; do # a port taken meanwhile, or a slow start: try again
		port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
		timeout $((secs + 30)) iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
		srv=$!
		for _ in $(seq 100); do # until it listens (a probe connection would be its one client)
			[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] || break
			sleep 0.05
		done
		json=$(timeout $((secs + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J 2>/dev/null) || true
		kill "$srv" 2>/dev/null || true
		wait "$srv" 2>/dev/null || true
		case $json in *bits_per_second*) break ;; esac
		echo "baseline: iperf3: $(printf '%s' "$json" | grep -m1 '"error"' || printf '%s' "$json" | tail -n1)" >&2
	done
	tcp=$(printf '%s' "$json" | /usr/bin/python3 -c '
import json, sys
try:
    print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])
except Exception:
    print("null")')
	[ "$tcp" != null ] || echo "baseline: iperf3 gave no figure" >&2
else
	echo "baseline: iperf3 is not installed (scripts/deps.sh installs it)" >&2
fi

cat >"$out" <<JSON
{"aes_128_gcm_Bps": $aes128, "aes_256_gcm_Bps": $aes256, "chacha20_poly1305_Bps": $chacha,
 "tcp_loopback_bps": $tcp, "seconds_each": $secs, "record_bytes": 16384,
 "openssl": "$(openssl version | cut -d' ' -f1-2)", "tcp_tool": "$(iperf3 --version 2>/dev/null | head -n1 | tr -d '"')"}
JSON
