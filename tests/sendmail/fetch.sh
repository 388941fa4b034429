#!/usr/bin/env bash
# fetch.sh: Debian's Sendmail 8.17 (sendmail-bin, sendmail-base, sendmail-cf),
# downloaded with apt-get download and unpacked with dpkg -x into
# build/sendmail/root: never installed (that would replace the machine's MTA,
# Postfix here, which the tests use as a peer).  Prints the root's path.
# Idempotent: an unpacked root is used as it is.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=$top/build/sendmail
root=$dir/root
pkgs=(sendmail-bin sendmail-base sendmail-cf)
if [ -x "$root/usr/libexec/sendmail/sendmail" ] && [ -f "$root/usr/share/sendmail/cf/m4/cf.m4" ]; then
	echo "$root"
	exit 0
fi
rm -rf "$dir"
mkdir -p "$dir/debs"
cd "$dir/debs"
if ! apt-get download "${pkgs[@]}" >"$dir/download.log" 2>&1; then
	apt-get update -qq >>"$dir/download.log" 2>&1 || true
	apt-get download "${pkgs[@]}" >>"$dir/download.log" 2>&1 ||
		{ echo "fetch.sh: apt-get download ${pkgs[*]} failed (see $dir/download.log)" >&2; exit 1; }
fi
for d in ./*.deb; do dpkg -x "$d" "$root"; done
echo "$root"
