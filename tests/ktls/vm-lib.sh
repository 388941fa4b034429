# vm-lib.sh: what the guest scripts (run-in-vm.sh, matrix-in-vm.sh) share;
# sourced by busybox sh inside the VM that scripts/vm.sh boots.
K=/krelay
C=$K/certs

# Loads the crypto kTLS needs, and tls.ko unless vm.sh was given
# --no-tls-module; prints the kernel and what got loaded.
load_modules() {
	echo "== kernel $(uname -r)"
	modprobe aesni_intel 2>&1 || echo "modprobe aesni_intel failed"
	if [ "${KRELAY_VM_TLS_MODULE:-1}" = 1 ]; then
		modprobe tls 2>&1 || echo "modprobe tls failed"
	else
		echo "tls.ko left out (--no-tls-module): kTLS must be reported off"
	fi
	echo "== lsmod"
	lsmod 2>/dev/null | awk 'NR > 1 { printf " %s", $1 } END { print "" }'
}

# stat_tls LABEL: prints /proc/net/tls_stat (the kernel's kTLS counters).
stat_tls() {
	if [ -r /proc/net/tls_stat ]; then
		echo "== /proc/net/tls_stat ($1)"
		sed 's/^/   /' /proc/net/tls_stat
	else
		echo "== /proc/net/tls_stat ($1): absent (no tls module)"
	fi
}

# tls_counter NAME: one counter of /proc/net/tls_stat (0 when absent).
tls_counter() {
	awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }' /proc/net/tls_stat 2>/dev/null || echo 0
}

# start_krelay DIR: runs krelay -C DIR/krelay.conf in the background (its pid
# in $started) and waits until it logs that it listens.
start_krelay() {
	$K/krelay -C "$1/krelay.conf" >"$1/stderr" 2>&1 &
	started=$!
	i=0
	while [ $i -lt 200 ] && ! grep -q "listening on" "$1/krelay.log" 2>/dev/null; do
		sleep 0.1; i=$((i + 1))
	done
	grep -q "listening on" "$1/krelay.log" 2>/dev/null ||
		{ echo "FAIL: krelay did not start ($1)"; cat "$1/krelay.log" "$1/stderr" 2>/dev/null; }
}

# base_conf DIR PORT: the lines every guest krelay's config starts with.
base_conf() {
	printf 'Listen=127.0.0.1:%s\nQueueDirectory=%s/queue\nLogFile=%s/krelay.log\n' "$2" "$1" "$1"
	printf 'RunAsUser=root\n' # the guest has no krelay user; it is thrown away after
	printf 'CACertFile=%s/ca.crt\nServerCertFile=%s/server.crt\nServerKeyFile=%s/server.key\n' \
		"$C" "$C" "$C"
}
