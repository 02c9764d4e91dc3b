#!/usr/bin/env bash
# Quick start: builds anytls-server and anytls-client, runs both on loopback
# (the server with a self-signed certificate, the client pinned to it) and
# leaves them running until Ctrl-C. Then, in another terminal:
#
#   curl --socks5-hostname 127.0.0.1:1080 http://example.com/
#
# With --check it also starts a local web server, fetches a page through the
# proxy with curl (SOCKS5 and HTTP proxy), and exits: 0 when both worked.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[ "${1:-}" = "--check" ] && check=1
server_addr=127.0.0.1:${ANYTLS_DEMO_SERVER_PORT:-8443}
proxy_addr=127.0.0.1:${ANYTLS_DEMO_PROXY_PORT:-1080}
password=${ANYTLS_DEMO_PASSWORD:-demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}

bin=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building into $bin ..."
go build -o "$bin/" ./cmd/anytls-server ./cmd/anytls-client

"$bin/anytls-server" -l "$server_addr" -p "$password" 2>"$bin/server.log" &
pids+=($!)
# the server prints the client URI (with the certificate pin) once it listens
uri=
for _ in $(seq 1 100); do
	uri=$(sed -n 's/^client URI: //p' "$bin/server.log")
	[ -n "$uri" ] && break
	kill -0 "${pids[0]}" 2>/dev/null || { cat "$bin/server.log"; exit 1; }
	sleep 0.1
done
[ -n "$uri" ] || { echo "server did not start:"; cat "$bin/server.log"; exit 1; }
cat "$bin/server.log"

"$bin/anytls-client" -l "$proxy_addr" -s "$uri" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/${proxy_addr%:*}/${proxy_addr#*:}") 2>/dev/null && break
	sleep 0.1
done

if [ "$check" = 0 ]; then
	echo
	echo "server $server_addr and SOCKS5/HTTP proxy $proxy_addr are running. Try:"
	echo "  curl --socks5-hostname $proxy_addr http://example.com/"
	echo "Ctrl-C stops both."
	wait
	exit 0
fi

# --check: a local web server, one page through the SOCKS5 and the HTTP proxy
mkdir -p "$bin/www"
echo "hello through anytls $password" >"$bin/www/index.html"
web_port=${ANYTLS_DEMO_WEB_PORT:-18080}
(cd "$bin/www" && exec python3 -m http.server "$web_port" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
for _ in $(seq 1 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$web_port") 2>/dev/null && break
	sleep 0.1
done
want="hello through anytls $password"
got=$(curl -sS --max-time 20 --socks5-hostname "$proxy_addr" "http://localhost:$web_port/index.html")
[ "$got" = "$want" ] || { echo "SOCKS5 check failed: got '$got'"; exit 1; }
echo "curl --socks5-hostname: ok"
got=$(curl -sS --max-time 20 --proxy "http://$proxy_addr" "http://localhost:$web_port/index.html")
[ "$got" = "$want" ] || { echo "HTTP proxy check failed: got '$got'"; exit 1; }
echo "curl --proxy http://: ok"
echo "demo check passed"
