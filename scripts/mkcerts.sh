#!/usr/bin/env bash
# mkcerts.sh: a private CA plus a server and a client certificate, for krelay
# (or Sendmail, or Postfix).  ECDSA P-256 by default, RSA 3072 with --rsa;
# never the 1024-bit RSA of old how-tos, which OpenSSL's default security
# level refuses.
#
#   scripts/mkcerts.sh DIR [--rsa] [--name HOSTNAME] [--days N]
#
# Writes DIR/ca.crt ca.key server.crt server.key client.crt client.key, and
# hash links for CACertPath (openssl rehash).  Keys are mode 600.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

dir="" algo=ec name="$(hostname -f 2>/dev/null || hostname)" days=825
while [ $# -gt 0 ]; do
	case "$1" in
	--rsa) algo=rsa ;;
	--name) name="$2"; shift ;;
	--days) days="$2"; shift ;;
	-h|--help) usage 0 ;;
	-*) echo "mkcerts.sh: unknown option $1" >&2; usage 2 ;;
	*) dir="$1" ;;
	esac
	shift
done
[ -n "$dir" ] || usage 2
mkdir -p "$dir"
umask 077

newkey() {
	if [ "$algo" = rsa ]; then
		openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1"
	else
		openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
	fi
}

cd "$dir"
newkey ca.key
openssl req -new -x509 -key ca.key -out ca.crt -days "$days" -subj "/CN=krelay test CA ($name)" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

sign() { # sign NAME CN EKU SAN
	newkey "$1.key"
	openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
		"$3" "$4" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
		-days "$days" -extfile "$1.ext" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}

sign server "$name" "serverAuth,clientAuth" "DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1"
sign client "$name client" "clientAuth,serverAuth" "DNS:$name"
rm -f ca.srl
chmod 600 ./*.key
chmod 644 ./*.crt
openssl rehash . 2>/dev/null || true
echo "mkcerts.sh: wrote $(pwd)/{ca,server,client}.{crt,key} ($algo)"
