#!/usr/bin/env bash
# demo.sh — punchtun end to end, in a lab of network namespaces (run as root).
#
# Builds punchtun, brings up scripts/lab.sh (an internet, a rendezvous host,
# two home routers with easy NAT and a host behind each — both LANs
# 192.168.1.0/24, both hosts 192.168.1.2), starts the rendezvous and one
# peer behind each router, waits until the peers have punched a direct path,
# prints `punchtun status`, pings, sends a file with nc across the tunnel,
# and tears everything down. Exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
PREFIX=ptdemo
LAB=scripts/lab.sh
WORK=$(mktemp -d)
BIN=$WORK/punchtun
PIDS=()

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; cat "$f" >&2; done; exit 1; }
in_ns() { local host=$1; shift; ip netns exec "$PREFIX-$host" "$@"; }

cleanup() {
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	"$LAB" down "$PREFIX" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces and TUN need it)" >&2; exit 1; }

say "building punchtun"
go build -o "$BIN" ./cmd/punchtun

say "bringing up the lab: two hosts behind two easy NATs"
"$LAB" up "$PREFIX" easy easy

say "starting the rendezvous on 203.0.113.10:3478"
in_ns rv "$BIN" rendezvous --listen 203.0.113.10:3478 --key-file "$WORK/rendezvous.key" 2>"$WORK/rendezvous.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/rendezvous.key" ] && break; sleep 0.05; done
[ -s "$WORK/rendezvous.key" ] || fail "rendezvous did not start"
RV_PUB=$("$BIN" pubkey <"$WORK/rendezvous.key")

# peer HOST IFACE ADDRESS PEER-ADDRESS PEER-NAME PEER-PUBKEY
write_config() {
	cat >"$WORK/$2.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/$1.key")
Address = $3/24
Rendezvous = 203.0.113.10:3478
RendezvousKey = $RV_PUB

[Peer]
Name = $5
PublicKey = $6
AllowedIPs = $4/32
EOF
	chmod 600 "$WORK/$2.conf"
}

"$BIN" genkey >"$WORK/a1.key"
"$BIN" genkey >"$WORK/b1.key"
write_config a1 alice0 100.64.0.1 100.64.0.2 bob "$("$BIN" pubkey <"$WORK/b1.key")"
write_config b1 bob0 100.64.0.2 100.64.0.1 alice "$("$BIN" pubkey <"$WORK/a1.key")"

say "punchtun up on alice (behind NAT A) and bob (behind NAT B)"
start=$(date +%s%N)
in_ns a1 "$BIN" up "$WORK/alice0.conf" --run-dir "$WORK/run-a" --state-dir "$WORK/state-a" 2>"$WORK/alice.log" &
PIDS+=($!)
in_ns b1 "$BIN" up "$WORK/bob0.conf" --run-dir "$WORK/run-b" --state-dir "$WORK/state-b" 2>"$WORK/bob.log" &
PIDS+=($!)

path=""
for _ in $(seq 200); do
	path=$(in_ns a1 "$BIN" status alice0 --json --run-dir "$WORK/run-a" 2>/dev/null | sed -n 's/.*"path": "\(.*\)".*/\1/p' | head -1)
	[ "$path" = direct ] && break
	sleep 0.05
done
[ "$path" = direct ] || fail "no direct path (path: ${path:-none})"
echo "direct path after $((($(date +%s%N) - start) / 1000000)) ms"

say "punchtun status (on alice)"
in_ns a1 "$BIN" status --run-dir "$WORK/run-a"

say "ping bob's virtual IP from alice"
in_ns a1 ping -c 3 -i 0.2 100.64.0.2 || fail "ping"

say "send a 1 MiB file from alice to bob with nc"
head -c 1048576 /dev/urandom >"$WORK/file"
in_ns b1 sh -c "exec nc -l -s 100.64.0.2 -p 9000 >'$WORK/received'" &
listener=$!
for _ in $(seq 100); do in_ns b1 ss -Hltn 'sport = :9000' | grep -q 9000 && break; sleep 0.05; done
in_ns a1 sh -c "nc -N -w 10 100.64.0.2 9000 <'$WORK/file'" || fail "nc send"
wait "$listener" || fail "nc receive"
sent=$(sha256sum <"$WORK/file" | cut -d' ' -f1)
got=$(sha256sum <"$WORK/received" | cut -d' ' -f1)
[ "$sent" = "$got" ] || fail "file differs after transfer"
echo "sha256 $got: intact"

say "punchtun status after traffic (on bob)"
in_ns b1 "$BIN" status --run-dir "$WORK/run-b"

say "demo passed; tearing down"
