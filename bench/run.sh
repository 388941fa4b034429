#!/usr/bin/env bash
# run.sh (`make bench`): krelay and Postfix side by side as the same relay.
#
#   krelay-bench source --STARTTLS or cleartext--> RELAY --STARTTLS--> krelay-bench sink
#
# RELAY is build/krelay (TLSPolicy=encrypt), or a private Postfix instance
# (bench/postfix_relay.py: smtp_tls_security_level=encrypt) without and with
# smtp_tls_connection_reuse.  Same source, sink, certificates and TLS suite
# (the sink and source accept only TLS 1.3 TLS_AES_128_GCM_SHA256, see
# build/bench/openssl-pin.cnf), 20 concurrent sessions, messages of 4 KiB,
# 100 KiB, 1 MiB and 10 MiB.  Then krelay alone with one thing changed
# (BodyPath, Workers, connection reuse, cleartext next hop).  Then both
# relays fed as most clients and MTAs send: one message per connection, no
# pipelining, by krelay-bench (--per-conn 1 --no-pipelining) and by
# Postfix's own smtp-source (-s 20), 4 KiB and 100 KiB.  Before all
# that, this machine's limits: one core's AES-GCM/ChaCha20 speed and
# loopback TCP (bench/baseline.sh).
#
# Per row: messages/s and MB/s from the source's first connection to the
# sink's last message; the relay's CPU time (user+sys) per message and per
# GB; how kTLS and the body path were used (krelay's delivery log lines).
# The relay's CPU is that of its own cgroup v2 (every process and thread it
# ever had, exited ones included; see "CPU accounting" in the output), with
# the process group's /proc times as a cross-check.
#
# Output under build/bench/: results.md, results.csv, results.svg (gnuplot),
# baseline.json and rows/ROW/ (configs, logs, source.json, sink.json).
#   QUICK=1 bench/run.sh       4 KiB and 1 MiB, ablations at 4 KiB, fewer messages (about a minute)
#   SIZES="4k 10m" ABL_SIZES=1m bench/run.sh   choose the sizes
#   ROWS=REGEX bench/run.sh    only the rows whose name matches
#   PERF=1 bench/run.sh        perf record -a -g while each row is measured: rows/ROW/perf.data
#   PUBLISH=1 bench/run.sh     also copy results.{md,csv,svg} to bench/results/ and put the
#                              summary into README.md (between its bench markers)
# Everything is bounded: every wait has a deadline, every process a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

out=build/bench
rows=$out/rows
KRELAY=$PWD/build/krelay
KBENCH=${KRELAY_BENCH:-$PWD/build/krelay-bench}
CONC=20
WARMUP=${WARMUP:-$CONC} # messages (4 KiB) sent through the relay before each row's measurement
started=$(date +%s)

# Every row runs the same binaries, even if the tree is rebuilt meanwhile.
rm -rf "$out/bin" && mkdir -p "$out/bin"
for f in "$KRELAY" "$KBENCH"; do
	for _ in 1 2 3 4 5; do [ -x "$f" ] && cp "$f" "$out/bin/" 2>/dev/null && break || sleep 2; done
	[ -x "$out/bin/$(basename "$f")" ] || {
		echo "run.sh: $f missing (make build/krelay build/krelay-bench)" >&2
		exit 1
	}
done
KRELAY=$PWD/$out/bin/$(basename "$KRELAY")
KBENCH=$PWD/$out/bin/$(basename "$KBENCH")
command -v postfix >/dev/null || {
	echo "run.sh: postfix missing (scripts/deps.sh)" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || {
	echo "run.sh: Postfix instances need root" >&2
	exit 1
}

if [ -n "${QUICK:-}" ]; then
	SIZES=${SIZES:-"4k 1m"}
	ABL_SIZES=${ABL_SIZES:-"4k"}
	SHORT_SIZES=${SHORT_SIZES:-"4k"}
	declare -A COUNT=([4k]=300 [100k]=100 [1m]=40 [10m]=20)
	ROW_TIMEOUT=${ROW_TIMEOUT:-40}
	BASE_SECS=1
else
	SIZES=${SIZES:-"4k 100k 1m 10m"}
	ABL_SIZES=${ABL_SIZES:-"4k 1m"}
	SHORT_SIZES=${SHORT_SIZES:-"4k 100k"}
	declare -A COUNT=([4k]=3000 [100k]=600 [1m]=160 [10m]=40)
	ROW_TIMEOUT=${ROW_TIMEOUT:-120}
	BASE_SECS=2
fi
ROWS=${ROWS:-.}
# how the source sends (row): pipelined (krelay-bench, 100 messages per
# connection), short (krelay-bench, one per connection, no pipelining) or
# smtp-source (Postfix's, one per connection, no pipelining)
inject=pipelined

rm -rf "$rows" "$out/postfix" "$out/results".* && mkdir -p "$rows" "$out/postfix"
chmod 755 "$out" "$out/postfix"
certs=$PWD/$out/certs
[ -f "$certs/server.crt" ] || scripts/mkcerts.sh "$certs" --name relay.bench >/dev/null
# The suite both hops use, whatever the relay prefers: the sink (server of
# the outbound hop) and the source (client of the inbound hop) allow only
# AES-128-GCM.  OpenSSL applies it to every SSL_CTX of the process.
pin=$PWD/$out/openssl-pin.cnf
cat >"$pin" <<'CNF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
CNF

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS COMMAND...: true once COMMAND succeeds
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.05
	done
}
alive() { kill -0 "$1" 2>/dev/null; }
fg() { # fg COMMAND...: runs it and waits, in a way a signal to this script interrupts
	"$@" &
	cur_pids+=($!)
	wait $!
}
stop_pid() { # stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS
	alive "$1" || return 0
	kill -TERM "$1" 2>/dev/null || true
	wait_for "$2" eval "! alive $1" || kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# --- CPU accounting: a cgroup v2 per relay -------------------------------
cgmount=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
cgbase=""
if [ -n "$cgmount" ] && mkdir "$cgmount/krelay-bench.$$" 2>/dev/null; then
	cgbase=$cgmount/krelay-bench.$$
	cpu_method="cgroup v2 ($cgbase/ROW/cpu.stat usage_usec: every process and thread the relay ever had, exited ones included)"
else
	cpu_method="process group (/proc/PID/stat utime+stime of every live process in the relay's process group, plus the leader's cutime+cstime of reaped children; no writable cgroup v2 here)"
fi
cg_usec() { # cg_usec CGROUP -> usage_usec user_usec system_usec
	awk '{v[$1] = $2} END {print v["usage_usec"], v["user_usec"], v["system_usec"]}' "$1/cpu.stat"
}
pg_usec() { # pg_usec PGID -> microseconds of the group (see cpu_method)
	local tick
	tick=$(getconf CLK_TCK)
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v pg="$1" -v tick="$tick" '
		{ pid = $1; sub(/^[^(]*\(.*\) /, "")
		  # now $1 = state, $3 = pgrp, $12..$15 = utime stime cutime cstime
		  if ($3 == pg) { t += $12 + $13; if (pid == pg) t += $14 + $15 } }
		END { printf "%.0f\n", t * 1000000 / tick }'
}
cg_stop() { # cg_stop CGROUP: kill whatever is left in it (only our relay), remove it
	local cg=$1
	[ -n "$cg" ] && [ -d "$cg" ] || return 0
	if [ -s "$cg/cgroup.procs" ]; then
		echo "run.sh: processes left in $cg after stop: $(tr '\n' ' ' <"$cg/cgroup.procs"); killing them" >&2
		echo 1 >"$cg/cgroup.kill"
		wait_for 10 eval "[ ! -s $cg/cgroup.procs ]" || true
	fi
	rmdir "$cg" 2>/dev/null || true
}

# What is running now, for the EXIT trap.
cur_pids=()
cur_pf=""
cur_cg=""
cleanup() {
	local p
	for p in "${cur_pids[@]}"; do stop_pid "$p" 5; done
	[ -z "$cur_pf" ] || stop_pid "$cur_pf" 30
	cg_stop "$cur_cg"
	[ -z "$cgbase" ] || rmdir "$cgbase" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one row -------------------------------------------------------------
# Per row: d (its directory), n, sp/rp (sink and relay ports), cg (its
# cgroup, or empty), pgid (the relay's process group), status.

start_sink() {
	# (smtp-source's messages carry no X-Bench checksum: only counted)
	local check=--verify
	[ "$inject" != smtp-source ] || check=--discard
	OPENSSL_CONF=$pin timeout $((ROW_TIMEOUT + 10)) "$KBENCH" sink --listen "127.0.0.1:$sp" \
		--cert "$certs/server.crt" --key "$certs/server.key" $check --expect $((n + WARMUP)) \
		--timeout "$ROW_TIMEOUT" --json --ready-file "$d/sink.ready" >"$d/sink.json" 2>"$d/sink.err" &
	sink_pid=$!
	cur_pids=("$sink_pid")
	wait_for 10 test -e "$d/sink.ready" && return 0
	echo "sink did not start: $(tail -n3 "$d/sink.err")" >"$d/error"
	return 1
}

start_krelay() { # start_krelay OUTBOUND [option lines...]
	local outbound=$1 workers=${KRELAY_WORKERS:-$(nproc)} opt
	shift
	for opt in "$@"; do [[ $opt == Workers=* ]] && workers=${opt#Workers=}; done
	rp=$(port)
	{
		echo "Listen=127.0.0.1:$rp"
		echo "QueueDirectory=$PWD/$d/queue"
		[ "$(id -u)" != 0 ] || echo "RunAsUser=root" # (its files are root's, under build/)
		echo "Workers=$workers"
		echo "MaxMessageSize=64m"
		echo "ServerCertFile=$certs/server.crt"
		echo "ServerKeyFile=$certs/server.key"
		echo "ClientCertFile=$certs/client.crt"
		echo "ClientKeyFile=$certs/client.key"
		echo "SmartHost=[127.0.0.1]:$sp"
		echo "TLSPolicy=$([ "$outbound" = tls ] && echo encrypt || echo none)"
		# 20 connections to the sink in all workers together, as Postfix gets
		echo "DestinationConcurrency=$CONC"
		for opt in "$@"; do [[ $opt == Workers=* ]] || echo "$opt"; done
	} >"$d/relay.conf"
	(
		[ -z "$cg" ] || echo "$BASHPID" >"$cg/cgroup.procs"
		exec setsid "$KRELAY" -C "$d/relay.conf"
	) 2>"$d/relay.log" & # its log goes to stderr (one copy, as Postfix writes one)
	relay_pid=$!
	cur_pids+=("$relay_pid")
	pgid=$relay_pid
	wait_for 10 grep -q "listening on" "$d/relay.log" 2>/dev/null && return 0
	echo "krelay did not start: $(tail -n3 "$d/relay.log")" >"$d/error"
	return 1
}

start_postfix() { # start_postfix postfix|postfix-reuse
	bench/postfix_relay.py --dir "$out/postfix/$name" --relayhost "$sp" --certs "$certs" \
		--cgroup "${cg:-none}" --info "$d/postfix.json" --max-seconds $((ROW_TIMEOUT + 120)) \
		$([ "$1" = postfix-reuse ] && echo --reuse) >"$d/postfix.out" 2>&1 &
	cur_pf=$!
	if ! wait_for 60 test -e "$d/postfix.json"; then
		echo "Postfix did not start: $(tail -n5 "$d/postfix.out")" >"$d/error"
		return 1
	fi
	read -r rp pgid pfq < <(/usr/bin/python3 -c 'import json, sys
i = json.load(open(sys.argv[1])); print(i["port"], i["master_pid"], i["queue"])' "$d/postfix.json")
}

size_bytes() { # 4k -> 4096
	case $1 in *k) echo $((${1%k} * 1024)) ;; *m) echo $((${1%m} * 1048576)) ;; *) echo "$1" ;; esac
}

# Postfix's smtp-source as the injector: CONC sessions in parallel, one
# message each (it disconnects after every message unless -d), no
# pipelining, plain SMTP.  Writes source.json with the fields krelay-bench
# writes that report.py reads.
run_smtp_source() {
	local t0 rc=0 len
	len=$(size_bytes "$size")
	t0=$(date +%s.%N)
	{
		TIMEFORMAT='%U %S'
		time timeout $((ROW_TIMEOUT + 10)) smtp-source -s "$CONC" -m "$n" -l "$len" \
			-M source.bench -f sender@source.bench -t rcpt@sink.bench "127.0.0.1:$rp" \
			>"$d/source.err" 2>&1
	} 2>"$d/source.times" || rc=$?
	/usr/bin/python3 - "$d/source.json" "$t0" "$rc" "$n" "$len" "$d/source.times" <<'PY'
import json, sys
out, t0, rc, n, length, times = sys.argv[1:]
user, system = (float(x) for x in open(times).read().split()[-2:])
ok = int(n) if rc == "0" else 0
json.dump({"tool": "smtp-source", "start_unix": float(t0), "messages_ok": ok,
           "errors": int(n) - ok, "bytes": ok * int(length), "cpu_s": user + system,
           "exit": int(rc)}, open(out, "w"))
PY
	return $rc
}

relay_cpu() { # -> "cgroup_usec user_usec sys_usec pgroup_usec machine_busy_usec steal_usec wall_usec"
	local busy
	# the whole machine's busy and steal time, to see what else ran meanwhile
	busy=$(awk -v tick="$(getconf CLK_TCK)" '/^cpu / {
		printf "%.0f %.0f", ($2 + $3 + $4 + $7 + $8 + $9) * 1000000 / tick, $9 * 1000000 / tick; exit }' /proc/stat)
	busy="$busy $(date +%s%6N)"
	if [ -n "$cg" ]; then echo "$(cg_usec "$cg") $(pg_usec "$pgid") $busy"; else echo "0 0 0 $(pg_usec "$pgid") $busy"; fi
}

queue_empty() { # the relay's queue holds no message (its last unlink follows the sink's last 250)
	if [ "$relay" = direct ]; then
		true
	elif [[ $relay == krelay* ]]; then
		[ -z "$(find "$d/queue/queue" -type f 2>/dev/null | head -n1)" ]
	else
		[ -z "$(find "$pfq/incoming" "$pfq/active" "$pfq/deferred" "$pfq/maildrop" -type f 2>/dev/null | head -n1)" ]
	fi
}

# row NAME GROUP RELAY INBOUND OUTBOUND SIZE [krelay option lines...]
#   RELAY    krelay | krelay-interactive (DeliveryMode=interactive) | postfix | postfix-reuse
#            | direct (no relay: the source straight into the sink, STARTTLS;
#              the most this machine's source and sink do together)
#   INBOUND  plain | starttls      (source -> relay)
#   OUTBOUND tls | clear           (relay -> sink; the sink offers STARTTLS)
row() {
	name=$1 group=$2 relay=$3 inbound=$4 outbound=$5 size=$6
	shift 6
	[[ $name =~ $ROWS ]] || return 0
	n=${COUNT[$size]} d=$rows/$name cg="" pgid="" relay_pid="" sink_pid="" status=ok
	local t_row=$SECONDS c0="0 0 0 0 0 0 0" c1="0 0 0 0 0 0 0" tls_args=(--tls none)
	local inject_args=()
	[ "$inject" != short ] || inject_args=(--per-conn 1 --no-pipelining)
	mkdir -p "$d"
	sp=$(port)
	printf '  %-24s %-13s %-8s -> %-5s %5s x %-4s ' "$name" "$relay" "$inbound" "$outbound" "$n" "$size"
	if [ -n "$cgbase" ]; then
		cg=$cgbase/$name
		mkdir "$cg"
		cur_cg=$cg
	fi
	if ! start_sink; then
		status=sink-not-started
	elif [ "$relay" = direct ]; then
		rp=$sp
	elif [ "$relay" = krelay ] && ! start_krelay "$outbound" "$@"; then
		status=relay-not-started
	elif [ "$relay" = krelay-interactive ] && ! start_krelay "$outbound" DeliveryMode=interactive "$@"; then
		status=relay-not-started
	elif [[ $relay == postfix* ]] && ! start_postfix "$relay"; then
		status=relay-not-started
	fi
	[ "$inbound" = plain ] || tls_args=(--tls starttls --ca "$certs/ca.crt")
	if [ $status = ok ] && [ "$WARMUP" -gt 0 ]; then
		# warm-up, not measured: Postfix forks its smtpd/cleanup/smtp
		# processes, both relays open their connections to the sink
		OPENSSL_CONF=$pin fg timeout 60 "$KBENCH" source --to "127.0.0.1:$rp" --messages "$WARMUP" \
			--size 4k --concurrency "$CONC" "${tls_args[@]}" --timeout 50 --json \
			>"$d/warmup.json" 2>"$d/warmup.err" || status=warmup-failed
		wait_for 30 queue_empty || [ $status != ok ] || status=warmup-not-relayed
	fi
	if [ $status = ok ]; then
		c0=$(relay_cpu)
		local perf_pid=""
		if [ -n "${PERF:-}" ]; then
			# the whole machine, sampled while this row is measured: perf report
			# -i ROW/perf.data --comms krelay (io-wq threads are iou-wrk-PID)
			perf record -a -g -F "${PERF_FREQ:-1999}" -o "$d/perf.data" >"$d/perf.err" 2>&1 &
			perf_pid=$!
			sleep 0.5
		fi
		if [ "$inject" = smtp-source ]; then
			run_smtp_source || status=source-failed
		else
			OPENSSL_CONF=$pin fg timeout $((ROW_TIMEOUT + 10)) "$KBENCH" source --to "127.0.0.1:$rp" \
				--messages "$n" --size "$size" --concurrency "$CONC" "${tls_args[@]}" \
				"${inject_args[@]}" --timeout "$ROW_TIMEOUT" --json >"$d/source.json" \
				2>"$d/source.err" || status=source-failed
		fi
		wait "$sink_pid" || [ $status != ok ] || status=sink-failed
		wait_for 20 queue_empty || [ $status != ok ] || status=relay-queue-not-empty
		c1=$(relay_cpu)
		[ -z "$perf_pid" ] || { kill -INT "$perf_pid" && wait "$perf_pid" || true; }
	fi
	# stop: the sink (if still there), the relay, then anything left in its cgroup
	stop_pid "$sink_pid" 5
	[ -z "$relay_pid" ] || stop_pid "$relay_pid" 30
	[ -z "$cur_pf" ] || stop_pid "$cur_pf" 60
	cur_pids=() cur_pf=""
	cg_stop "$cg"
	cur_cg=""

	local u0 us0 sy0 pg0 b0 st0 w0 u1 us1 sy1 pg1 b1 st1 w1
	read -r u0 us0 sy0 pg0 b0 st0 w0 <<<"$c0"
	read -r u1 us1 sy1 pg1 b1 st1 w1 <<<"$c1"
	cat >"$d/row.json" <<JSON
{"name": "$name", "group": "$group", "relay": "$relay", "inbound": "$inbound", "outbound": "$outbound",
 "size": "$size", "messages": $n, "warmup": $WARMUP, "concurrency": $CONC, "options": "$*", "status": "$status",
 "inject": "$inject",
 "cpu_method": "$([ -n "$cg" ] && echo cgroup || echo pgroup)",
 "cgroup_usec": $((u1 - u0)), "cgroup_user_usec": $((us1 - us0)), "cgroup_sys_usec": $((sy1 - sy0)),
 "pgroup_usec": $((pg1 - pg0)), "machine_busy_usec": $((b1 - b0)), "steal_usec": $((st1 - st0)), "window_usec": $((w1 - w0)),
 "row_seconds": $((SECONDS - t_row))}
JSON
	/usr/bin/python3 bench/report.py --row "$d" || true
}

# --- the run -------------------------------------------------------------
# which krelay: the commit, "+changes" when relay/, kernel/ or bench/ differ from it
version=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- relay kernel bench 2>/dev/null || version="$version+changes"
echo "krelay ($version) vs Postfix ($(postconf -d -h mail_version 2>/dev/null)), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "relay CPU accounting: $cpu_method"
echo "machine limits (bench/baseline.sh, ${BASE_SECS}s each):"
bench/baseline.sh "$out/baseline.json" "$BASE_SECS"
/usr/bin/python3 bench/report.py --baseline "$out/baseline.json"

ktls=no
if [ -e /proc/net/tls_stat ]; then
	ktls=yes
	echo "kTLS: /proc/net/tls_stat exists (tls module loaded): krelay's TLS rows may use kTLS TX (each says what its deliveries used); abl-ktls-off rows turn it off"
else
	echo "kTLS rows skipped: /proc/net/tls_stat is missing (no tls kernel module on $(uname -r)); krelay encrypts in userspace (OpenSSL) like Postfix"
fi

echo "rows (source -> relay -> sink, $CONC sessions; ROWS=${ROWS}):"
for size in $SIZES; do
	row "direct-$size" compare direct starttls none "$size"
	for inb in plain starttls; do
		row "krelay-$inb-$size" compare krelay "$inb" tls "$size"
		row "krelay-i-$inb-$size" compare krelay-interactive "$inb" tls "$size"
		row "postfix-$inb-$size" compare postfix "$inb" tls "$size"
		row "postfix-reuse-$inb-$size" compare postfix-reuse "$inb" tls "$size"
	done
done
for size in $ABL_SIZES; do
	row "abl-splice-clear-$size" ablation krelay plain clear "$size" BodyPath=splice
	row "abl-copy-clear-$size" ablation krelay plain clear "$size" BodyPath=copy
	row "abl-splice-tls-$size" ablation krelay plain tls "$size" BodyPath=splice
	row "abl-copy-tls-$size" ablation krelay plain tls "$size" BodyPath=copy
	row "abl-workers1-$size" ablation krelay plain tls "$size" Workers=1
	row "abl-workers2-$size" ablation krelay plain tls "$size" Workers=2
	row "abl-noreuse-$size" ablation krelay plain tls "$size" MaxMessagesPerConnection=1
	# traffic shaping on, its limits far above the load: what it costs
	row "abl-shaped-$size" ablation krelay plain tls "$size" "ShapingTable=$PWD/bench/shaping-far-above"
	if [ $ktls = yes ]; then # the TLS rows above use kTLS TX; the same without it
		row "abl-ktls-off-$size" ablation krelay plain tls "$size" ClientSSLOptions=-SSL_OP_ENABLE_KTLS
	fi
done

# what most clients and MTAs do: one message per connection, no pipelining
for size in $SHORT_SIZES; do
	for inject in short smtp-source; do
		tag=$([ $inject = short ] && echo kb || echo ss)
		row "short-krelay-$tag-$size" short krelay plain tls "$size"
		# shaping asked before every connection and message, limits far above
		if [ $inject = short ]; then
			row "abl-shaped-short-$size" ablation krelay plain tls "$size" \
				"ShapingTable=$PWD/bench/shaping-far-above"
		fi
		row "short-postfix-$tag-$size" short postfix plain tls "$size"
	done
done
inject=pipelined

rc=0
/usr/bin/python3 bench/report.py --out "$out" --cpu-method "$cpu_method" --ktls "$ktls" --version "$version" \
	--wall $(($(date +%s) - started)) || rc=$?
if [ -n "${PUBLISH:-}" ]; then # the copy README.md shows
	mkdir -p bench/results
	cp "$out/results.md" "$out/results.csv" "$out/results.svg" bench/results/
	# README.md shows the summary between its two bench markers
	/usr/bin/python3 - "$out/results-summary.md" README.md <<'PY'
import re, sys
summary, readme = open(sys.argv[1]).read(), open(sys.argv[2]).read()
begin, end = "<!-- bench results: begin -->", "<!-- bench results: end -->"
if begin in readme and end in readme:
    head, rest = readme.split(begin, 1)
    readme = head + begin + "\n" + summary + "\n" + end + rest.split(end, 1)[1]
    open(sys.argv[2], "w").write(readme)
    print("published: bench/results/results.{md,csv,svg} and README.md's bench results")
else:
    print("published: bench/results/results.{md,csv,svg}; README.md has no bench markers")
PY
fi
exit $rc
