#!/usr/bin/env bash
# deps.sh: installs everything krelay needs to build and test, from Debian
# bookworm's packages only.  Idempotent: does nothing when all is there.
#   scripts/deps.sh          install what is missing (needs root)
#   scripts/deps.sh --check  exit 0 when nothing is missing, else list it
set -euo pipefail

PKGS=(
		build-essential pkg-config libssl-dev openssl liburing-dev libc-ares-dev
	# DANE: libunbound validates DNSSEC; dns-root-data is the root trust
	# anchor (DNSSECTrustAnchorFile's default); the tests sign a zone with
	# ldnsutils and serve it with nsd
	libunbound-dev dns-root-data nsd ldnsutils
	# MTA-STS: policies fetched over HTTPS with libcurl (its OpenSSL flavour)
	libcurl4-openssl-dev ca-certificates
	# TLS reports are sent gzip'd (RFC 8460)
	zlib1g-dev
	# ThrottleStore=redis://: hiredis; the cluster tests start a redis-server
	libhiredis-dev redis-server
	clang-format
	# the libFuzzer harnesses (tests/fuzz): clang and its fuzzer runtime
	clang libclang-rt-14-dev
	python3 python3-pytest python3-cryptography
	# TLS reports are checked against RFC 8460's report format as a JSON Schema
	python3-jsonschema
	# swaks's TLS and IPv6 come from Recommends, which --no-install-recommends
	# drops: each package a test uses is named here
	swaks libnet-ssleay-perl libio-socket-inet6-perl
	dnsmasq-base postfix
	qemu-system-x86 busybox-static cpio kmod
	iproute2 procps util-linux mount e2fsprogs
	iperf3 gnuplot-nox
	sslscan
	# the man pages (man/): rendered and checked by the tests
	man-db
	# systemd-analyze verify/security of scripts/krelay.service
	systemd
	# make deb (debian/), lintian, and the packaged install test's fresh root
	debhelper lintian fakeroot debootstrap
	# krelay import-sendmail is tested on sendmail.cf files m4 makes from .mc
	m4
	# the libraries Debian's sendmail binary links with: the SendmailQueue
	# tests run it, unpacked (tests/sendmail/fetch.sh), never installed
	libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libwrap0
)

# The relay, started as root, runs as this user (RunAsUser's default), as
# the package's postinst makes it: make demo and the privilege tests use it.
user_missing() { ! getent passwd krelay >/dev/null; }
add_user() {
	user_missing || return 0
	[ "$(id -u)" -eq 0 ] || { echo "deps.sh: need root to add the user krelay" >&2; exit 1; }
	useradd --system --user-group --home-dir /var/spool/krelay --no-create-home \
		--shell /usr/sbin/nologin --comment "krelay mail relay" krelay
	echo "deps.sh: added the system user krelay"
}

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${1:-}" = "--check" ]; then
	user_missing && missing+=("(user krelay)")
	if [ ${#missing[@]} -gt 0 ]; then
		echo "missing: ${missing[*]}"
		exit 1
	fi
	exit 0
fi

[ ${#missing[@]} -eq 0 ] && { add_user; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix is a test peer run as private instances on loopback ports, never
# the system's MTA: install it unconfigured.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# iperf3 measures loopback TCP for make bench; never as a system daemon.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
# Refresh the package lists once when they are missing or a day old.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mtime -1 2>/dev/null | head -n1)" ]; then
	apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
add_user
echo "deps.sh: done"
