#!/usr/bin/env bash
# install-test.sh DEB: installs krelay's package into a brand-new Debian
# bookworm root (debootstrap minbase) with apt, as an admin would, and runs
# it from there without systemd: the unit's ExecStart line, as the unit's
# User= and Group= with the unit's AmbientCapabilities= and nothing more,
# on port 25 of a network namespace of its own.  A message goes through it
# to a second packaged krelay (started as root: it becomes krelay itself)
# that keeps it.  /proc/PID/status must show the unprivileged uid and gid
# and no capability beyond the unit's.  Then the package is purged.
#
# The root comes from a debootstrap tarball: $KRELAY_ROOT_TARBALL, else
# /var/tmp/krelay-fresh-bookworm.tgz when present, else one made once into
# build/pkgtest/ (needs deb.debian.org).  Prints one "ok ..." line a step;
# the last line is "package test: ok" or "package test: FAILED: why".
set -uo pipefail
deb=$(readlink -f "$1")
top=$(cd "$(dirname "$0")/../.." && pwd)
work=$top/build/pkgtest
root=$work/root
tarball=${KRELAY_ROOT_TARBALL:-}
if [ -z "$tarball" ]; then
	tarball=/var/tmp/krelay-fresh-bookworm.tgz
	[ -s "$tarball" ] || tarball=$work/bookworm.tgz
fi
relay_pid= sink_pid=

fail() { echo "package test: FAILED: $*"; exit 1; }
ok() { echo "ok $*"; }
umount_all() { for m in proc dev/pts dev; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done; }
cleanup() {
	[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
	# (unshare's parent ignores SIGTERM: its child goes, then it does)
	[ -n "${nsp:-}" ] && kill "$nsp" 2>/dev/null
	[ -n "${ns_pid:-}" ] && kill "$ns_pid" 2>/dev/null
	wait 2>/dev/null
	umount_all
	rm -rf "$root"
}
trap cleanup EXIT
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

[ -f "$deb" ] || fail "no package $1"
mkdir -p "$work"
umount_all
rm -rf "$root"
if [ ! -s "$tarball" ]; then
	debootstrap --variant=minbase --make-tarball="$tarball.tmp" bookworm "$work/tmp-root" \
		http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
		fail "debootstrap --make-tarball (see $work/debootstrap.log)"
	rm -rf "$work/tmp-root"
	mv "$tarball.tmp" "$tarball"
fi
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" \
	http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
	fail "debootstrap (see $work/debootstrap.log)"
ok "a fresh bookworm root from $(basename "$tarball")"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
	rm -f "$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

# -- install, as an admin would: apt resolves what dh_shlibdeps wrote
cp "$deb" "$root/tmp/"
in_root apt-get update -qq >"$work/apt.log" 2>&1 || fail "apt-get update (see $work/apt.log)"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	"/tmp/$(basename "$deb")" >>"$work/apt.log" 2>&1 || fail "apt-get install (see $work/apt.log)"
ok "apt-get install ./$(basename "$deb"): $(in_root dpkg-query -W -f='${Version} depends on ${Depends}' krelay)"
in_root id krelay >/dev/null || fail "postinst made no user krelay"
uid=$(in_root id -u krelay) gid=$(in_root id -g krelay)
spool=$(stat -c '%u:%g %a' "$root/var/spool/krelay") # (numbers: the root's own passwd)
[ "$spool" = "$uid:$gid 700" ] || fail "/var/spool/krelay is $spool, not krelay:krelay ($uid:$gid) 700"
ok "postinst: system user krelay ($uid:$gid), /var/spool/krelay krelay:krelay 0700"
in_root dpkg-query --showformat='${Conffiles}\n' --show krelay | grep -q /etc/krelay/krelay.conf ||
	fail "/etc/krelay/krelay.conf is not a conffile"
ok "/etc/krelay/krelay.conf is a conffile"

# -- the unit's lines, as systemd would use them
unit=$root/lib/systemd/system/krelay.service
[ -f "$unit" ] || fail "no krelay.service"
unit_val() { sed -n "s/^$1=//p" "$unit" | tail -n1; }
exec_start=$(unit_val ExecStart) user=$(unit_val User) group=$(unit_val Group)
ambient=$(unit_val AmbientCapabilities) bounding=$(unit_val CapabilityBoundingSet)
[ "$user" = krelay ] && [ "$group" = krelay ] || fail "the unit runs as $user:$group"
caps=$(echo "$ambient" | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g')
bcaps=$(echo "$bounding" | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g')
ok "unit: ExecStart=$exec_start User=$user Group=$group AmbientCapabilities=$ambient"

# -- the sink: a second packaged krelay that keeps what it gets, started as root
cat >"$root/etc/krelay/sink.conf" <<'CONF'
Listen=127.0.0.1:2526
QueueDirectory=/var/spool/krelay-sink
DeliveryMode=queueonly
CONF
# the relay: the installed configuration, relaying to the sink
cp "$root/etc/krelay/krelay.conf" "$root/etc/krelay/test.conf"
printf 'SmartHost=[127.0.0.1]:2526\nTLSPolicy=may\n' >>"$root/etc/krelay/test.conf"
exec_start=${exec_start//\/etc\/krelay\/krelay.conf//etc/krelay/test.conf}

# one network namespace for both, with its loopback up; port 25 is its own
unshare --net --fork --kill-child sleep 600 &
# (a bounded life: the namespace goes with the sleep, at the latest in 600 s)
ns_pid=$!
for _ in $(seq 50); do
	nsp=$(pgrep -P "$ns_pid" sleep) && break
	sleep 0.1
done
[ -n "${nsp:-}" ] || fail "no network namespace"
netns() { nsenter --net="/proc/$nsp/ns/net" "$@"; }
netns ip link set lo up || fail "lo up in the namespace"

# (nsenter, chroot and setpriv each exec the next: $! is krelay's pid)
nsenter --net="/proc/$nsp/ns/net" chroot "$root" /usr/sbin/krelay -C /etc/krelay/sink.conf \
	2>"$work/sink.log" &
sink_pid=$!
# shellcheck disable=SC2086 # ExecStart is split as systemd splits it (no quotes in it)
nsenter --net="/proc/$nsp/ns/net" chroot "$root" setpriv --reuid="$user" --regid="$group" --init-groups \
	--inh-caps=-all,+"$caps" --ambient-caps=-all,+"$caps" --bounding-set=-all,+"$bcaps" \
	--no-new-privs -- $exec_start 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 100); do
	grep -q "listening on" "$work/relay.log" && grep -q "listening on" "$work/sink.log" && break
	kill -0 "$relay_pid" 2>/dev/null || fail "the relay exited: $(tail -n3 "$work/relay.log")"
	kill -0 "$sink_pid" 2>/dev/null || fail "the sink exited: $(tail -n3 "$work/sink.log")"
	sleep 0.1
done
grep -q "listening on 127.0.0.1:25$" "$work/relay.log" || fail "relay not on port 25: $(cat "$work/relay.log")"
ok "relay listening on 127.0.0.1:25 as $user (the unit's ExecStart), sink on :2526 (started as root)"

# -- what the kernel says about them
field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status" | tr -s '\t ' ' '; }
cap_mask=$(printf '%016x' $((1 << 10))) # CAP_NET_BIND_SERVICE
[ "$(field "$relay_pid" Uid)" = "$uid $uid $uid $uid" ] || fail "relay Uid: $(field "$relay_pid" Uid)"
[ "$(field "$relay_pid" Gid)" = "$gid $gid $gid $gid" ] || fail "relay Gid: $(field "$relay_pid" Gid)"
for f in CapInh CapPrm CapEff CapAmb CapBnd; do
	[ "$(field "$relay_pid" $f)" = "$cap_mask" ] ||
		fail "relay $f=$(field "$relay_pid" $f), not $cap_mask (CAP_NET_BIND_SERVICE alone)"
done
[ "$(field "$relay_pid" NoNewPrivs)" = 1 ] || fail "relay NoNewPrivs=$(field "$relay_pid" NoNewPrivs)"
ok "relay /proc/$relay_pid/status: Uid $uid, Gid $gid, CapPrm=CapEff=CapAmb=CapBnd=$cap_mask (net_bind_service), NoNewPrivs 1"
[ "$(field "$sink_pid" Uid)" = "$uid $uid $uid $uid" ] || fail "sink Uid: $(field "$sink_pid" Uid)"
for f in CapInh CapPrm CapEff CapAmb; do
	[ "$(field "$sink_pid" $f)" = 0000000000000000 ] || fail "sink $f=$(field "$sink_pid" $f)"
done
ok "sink /proc/$sink_pid/status: became uid $uid from root, no capabilities left"

# -- a message through both (Python's smtplib from the host, in the namespace)
netns /usr/bin/python3 - <<'PY' || fail "smtplib could not send"
import smtplib
with smtplib.SMTP("127.0.0.1", 25, timeout=20) as s:
    s.sendmail("admin@example.org", ["postmaster@example.net"],
               b"Subject: packaged\r\n\r\nrelayed by the packaged krelay\r\n")
PY
for _ in $(seq 200); do
	grep -q "status=sent" "$work/relay.log" && [ -n "$(ls "$root/var/spool/krelay-sink/queue" 2>/dev/null)" ] && break
	sleep 0.1
done
grep -q "status=sent" "$work/relay.log" || fail "not relayed: $(tail -n5 "$work/relay.log")"
msg=$(ls "$root/var/spool/krelay-sink/queue")
grep -q "relayed by the packaged krelay" "$root/var/spool/krelay-sink/queue/$msg" ||
	fail "the sink's copy lacks the body"
owner=$(stat -c %u "$root/var/spool/krelay-sink/queue/$msg")
[ "$owner" = "$uid" ] || fail "the sink's file is uid $owner's"
ok "relayed: $(grep -o 'delivery to=[^ ]* relay=[^ ]* .*status=sent' "$work/relay.log" | cut -c1-100)"

kill -TERM "$relay_pid" "$sink_pid"
wait "$relay_pid" || fail "the relay exited $? on SIGTERM"
wait "$sink_pid" || fail "the sink exited $? on SIGTERM"
relay_pid= sink_pid=
kill "$nsp" 2>/dev/null
wait "$ns_pid" 2>/dev/null
ns_pid= nsp=
ok "both stopped on SIGTERM with status 0"

in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq krelay >>"$work/apt.log" 2>&1 ||
	fail "apt-get purge (see $work/apt.log)"
[ ! -e "$root/usr/sbin/krelay" ] && [ ! -e "$root/etc/krelay/krelay.conf" ] && [ ! -e "$root/var/spool/krelay" ] ||
	fail "purge left files behind"
ok "apt-get purge: binaries, conffile and the empty queue gone"
echo "package test: ok"
