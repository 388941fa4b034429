#!/usr/bin/env bash
# vm.sh: run a command inside a throwaway qemu VM booting Debian's kernel,
# which (unlike some hosts' kernels) has CONFIG_TLS=m, so krelay's kernel-TLS
# path can be tested anywhere qemu runs (TCG, no KVM needed).
#
#   scripts/vm.sh [--timeout S] [--mem MB] [--no-tls-module] [--keep] -- COMMAND...
#
# COMMAND is a shell command string run by /bin/sh (busybox) in the guest, in
# /krelay, which holds krelay (build/krelay), the guest scripts
# (tests/ktls/*.sh) and certs/ (build/demo/certs).  --mem: guest memory (1024
# MB; /tmp is a tmpfs of half of it).  Its output (from
# the guest's second serial port) goes to stdout; vm.sh exits with its status.
# --no-tls-module leaves tls.ko out of the VM (kTLS unavailable).
# Exit 77 when qemu or the kernel package cannot be had; 124 on timeout.
# Everything downloaded or generated lives under build/vm/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "vm.sh: $*" >&2; exit 1; }
skip() { echo "vm.sh: SKIP: $*" >&2; exit 77; }

timeout=300 tls=1 keep=0 mem=1024
while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) timeout="$2"; shift ;;
	--mem) mem="$2"; shift ;;
	--no-tls-module) tls=0 ;;
	--keep) keep=1 ;;
	-h|--help) usage 0 ;;
	--) shift; break ;;
	*) echo "vm.sh: unknown option $1" >&2; usage 2 ;;
	esac
	shift
done
[ $# -gt 0 ] || usage 2
cmd="$*"

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed: run scripts/deps.sh (or apt-get install qemu-system-x86)"
[ -x /bin/busybox ] || skip "busybox not installed: run scripts/deps.sh (or apt-get install busybox-static)"
for t in cpio depmod gzip ldd; do
	command -v "$t" >/dev/null || skip "$t not installed: run scripts/deps.sh (or apt-get install cpio kmod)"
done
[ -x build/krelay ] || die "build/krelay missing: run make first"

vm=$root/build/vm
mkdir -p "$vm"

# --- the kernel: Debian's linux-image, fetched once and cached -------------
kdir=$vm/kernel
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
	resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends:/{print $2; exit}'; }
	fetch() { (cd "$vm" && apt-get download "$1" >/dev/null 2>&1); }
	# A fresh machine may have empty (or stale) package lists: deps.sh runs
	# apt-get update only when it installs something.  As root, update once.
	updated=0
	update() {
		[ "$updated" = 0 ] && [ "$(id -u)" = 0 ] || return 1
		updated=1
		echo "vm.sh: apt-get update (package lists empty or stale)" >&2
		apt-get update -qq >/dev/null 2>&1
	}
	pkg=$(resolve)
	[ -n "$pkg" ] || { update && pkg=$(resolve); } || true
	[ -n "$pkg" ] || skip "cannot resolve linux-image-amd64 (apt-cache depends failed; apt-get update?)"
	echo "vm.sh: fetching $pkg (once; cached in build/vm/)" >&2
	rm -f "$vm"/linux-image-*.deb
	if ! fetch "$pkg"; then
		update && pkg=$(resolve) && [ -n "$pkg" ] && fetch "$pkg" ||
			skip "apt-get download $pkg failed"
	fi
	rm -rf "$kdir.tmp"
	dpkg -x "$vm"/"$pkg"_*.deb "$kdir.tmp" || skip "dpkg -x $pkg failed"
	mv "$kdir.tmp" "$kdir"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=${vmlinuz##*/vmlinuz-}
mods=$kdir/lib/modules/$kver
[ -f "$mods/modules.dep" ] || depmod -b "$kdir" "$kver" || die "depmod -b $kdir $kver failed"

# The uncompressed vmlinux boots faster (PVH entry, no decompression in TCG).
kernel=$vmlinuz
if [ ! -s "$vm/vmlinux-$kver" ] && command -v python3 >/dev/null; then
	python3 - "$vmlinuz" "$vm/vmlinux-$kver" <<'PY' 2>/dev/null || true
import sys, lzma, zlib, subprocess
data = open(sys.argv[1], "rb").read()
def xz(d):
    return lzma.LZMADecompressor().decompress(d)
def gz(d):
    return zlib.decompressobj(31).decompress(d)
def zst(d):
    return subprocess.run(["zstd", "-dcq"], input=d, capture_output=True).stdout
for magic, fn in ((b"\xfd7zXZ\x00", xz), (b"\x28\xb5\x2f\xfd", zst), (b"\x1f\x8b\x08", gz)):
    i = data.find(magic)
    while i >= 0:
        try:
            out = fn(data[i:])
        except Exception:
            out = b""
        if out[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(out)
            sys.exit(0)
        i = data.find(magic, i + 1)
sys.exit(1)
PY
fi
[ -s "$vm/vmlinux-$kver" ] && kernel=$vm/vmlinux-$kver

# --- the initramfs ----------------------------------------------------------
[ -f build/demo/certs/server.crt ] || scripts/mkcerts.sh build/demo/certs --name relay.vm >/dev/null \
	|| die "scripts/mkcerts.sh build/demo/certs failed"

run=$vm/run.$$
rm -rf "$run"
mkdir -p "$run"
if [ "$keep" = 0 ]; then trap 'rm -rf "$run"' EXIT; fi
st=$run/root
mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib64,krelay,var/spool,root}
cp /bin/busybox "$st/bin/busybox"

# modules: the crypto kTLS needs, plus tls itself, with their dependencies
want="aesni_intel gcm ghash_generic gf128mul ghash_clmulni_intel cryptd ctr ccm chacha20poly1305 chacha_generic chacha_x86_64 libchacha poly1305_generic poly1305_x86_64 libpoly1305"
[ "$tls" = 1 ] && want="$want tls"
mst=$st/lib/modules/$kver
mkdir -p "$mst"
declare -A seen=()
addmod() { # module name or path relative to $mods
	local rel=$1 line dep
	case "$rel" in
	*.ko*) ;;
	*) rel=$(awk -F: -v n="$1" '{ f=$1; sub(".*/", "", f); sub("\\.ko.*$", "", f); gsub("-", "_", f); if (f == n) { print $1; exit } }' "$mods/modules.dep") ;;
	esac
	[ -n "$rel" ] || return 0  # built in, or not in this kernel
	[ -z "${seen[$rel]:-}" ] || return 0
	seen[$rel]=1
	mkdir -p "$mst/$(dirname "$rel")"
	cp "$mods/$rel" "$mst/$rel"
	line=$(grep -m1 "^$rel:" "$mods/modules.dep" | cut -d: -f2-)
	for dep in $line; do addmod "$dep"; done
}
for m in $want; do addmod "$m"; done
cp "$mods"/modules.builtin "$mods"/modules.order "$mst"/ 2>/dev/null || true
depmod -b "$st" "$kver" 2>/dev/null || die "depmod for the initramfs failed"

# binaries and the libraries they need
cp build/krelay "$st/krelay/krelay"
cp tests/ktls/*.sh "$st/krelay/"
chmod 755 "$st/krelay/krelay" "$st"/krelay/*.sh
cp -r build/demo/certs "$st/krelay/certs"
bins="$st/krelay/krelay"
if command -v openssl >/dev/null; then
	cp "$(command -v openssl)" "$st/usr/bin/openssl"
	bins="$bins $st/usr/bin/openssl"
fi
# the benchmark tool (make builds it) and test peers (make test builds them)
if [ -x build/krelay-bench ]; then
	cp build/krelay-bench "$st/krelay/krelay-bench"
	bins="$bins $st/krelay/krelay-bench"
fi
if [ -x build/test/keyupdate_peer ]; then
	cp build/test/keyupdate_peer "$st/krelay/keyupdate_peer"
	bins="$bins $st/krelay/keyupdate_peer"
fi
for b in $bins; do
	ldd "$b" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
done | sort -u | while read -r lib; do
	mkdir -p "$st$(dirname "$lib")"
	cp -L "$lib" "$st$lib"
	# the canonical /lib64 loader path and its /lib/x86_64-linux-gnu twin
	case "$lib" in */ld-linux-x86-64.so.2)
		mkdir -p "$st/lib/x86_64-linux-gnu" "$st/lib64"
		cp -L "$lib" "$st/lib64/ld-linux-x86-64.so.2" 2>/dev/null || true
		cp -L "$lib" "$st/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" 2>/dev/null || true ;;
	esac
done
[ -d /usr/lib/ssl ] && { mkdir -p "$st/usr/lib/ssl"; cp -L /usr/lib/ssl/openssl.cnf "$st/usr/lib/ssl/" 2>/dev/null || true; }

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$st/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$st/etc/group"
printf '127.0.0.1 localhost krelay-vm\n::1 localhost\n' >"$st/etc/hosts"
echo krelay-vm >"$st/etc/hostname"
printf '%s\n' "$cmd" >"$st/krelay/cmd"
echo "KRELAY_VM_TLS_MODULE=$tls" >"$st/krelay/env"

cat >"$st/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/krelay:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up
hostname krelay-vm
stty -F /dev/ttyS1 raw -echo 2>/dev/null
. /krelay/env
export KRELAY_VM_TLS_MODULE
cd /krelay
/bin/sh /krelay/cmd >/dev/ttyS1 2>&1 </dev/null
rc=$?
printf '\n<<krelay-vm>>EXIT=%d\n' "$rc" >/dev/ttyS1
sync
sleep 0.3
poweroff -f
INIT
chmod 755 "$st/init"

(cd "$st" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$run/initramfs.gz" \
	|| die "building the initramfs failed"

# --- boot -------------------------------------------------------------------
accel="-accel tcg,thread=multi -cpu max"
# KVM only on request (VM_KVM=1): on nested hosts `-cpu host` can abort qemu
# (failed to set MSR 0x10a); TCG works everywhere.
if [ -n "${VM_KVM:-}" ] && [ -w /dev/kvm ]; then accel="-accel kvm -cpu ${VM_KVM_CPU:-host}"; fi
: >"$run/console.log"; : >"$run/out.log"
t0=$(date +%s.%N)
set +e
# shellcheck disable=SC2086
timeout -k 5 "$timeout" qemu-system-x86_64 -nodefaults -no-user-config -display none \
	-machine pc $accel -smp 2 -m "$mem" -no-reboot \
	-kernel "$kernel" -initrd "$run/initramfs.gz" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
	-serial "file:$run/console.log" -serial "file:$run/out.log" >"$run/qemu.log" 2>&1
qrc=$?
set -e
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

tr -d '\r' <"$run/out.log" >"$run/out.txt"
mark='^<<krelay-vm>>EXIT=[0-9]*$'
if grep -q "$mark" "$run/out.txt"; then
	rc=$(grep "$mark" "$run/out.txt" | tail -1 | cut -d= -f2)
	# the output before the marker, less the newline the guest put before it
	awk '/^<<krelay-vm>>EXIT=[0-9]*$/ { exit } { if (n++) print prev; prev = $0 } END { if (n && prev != "") print prev }' "$run/out.txt"
	echo "vm.sh: guest command exited $rc; VM ran ${secs} s (kernel $kver, $( [ "$tls" = 1 ] && echo with || echo without ) tls.ko)" >&2
	exit "$rc"
fi
cat "$run/out.txt"
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	echo "vm.sh: TIMEOUT after $timeout s: the guest never reported EXIT (console tail follows)" >&2
	qrc=124
else
	echo "vm.sh: qemu exited $qrc without the guest reporting EXIT (console and qemu output follow)" >&2
	cat "$run/qemu.log" >&2
	[ "$qrc" = 0 ] && qrc=1
fi
tr -d '\r' <"$run/console.log" | tail -30 >&2
exit "$qrc"
