#!/usr/bin/env bash
# demo.sh — punchtun end to end, in a lab of network namespaces (run as root).
#
# Builds punchtun, brings up scripts/lab.sh (an internet, a rendezvous host,
# two home routers with easy NAT and a host behind each — both LANs
# 192.168.1.0/24, both hosts 192.168.1.2), starts the rendezvous and one
# peer behind each router, waits until the peers have punched a direct path,
# prints `punchtun status`, pings, sends a file with nc across the tunnel,
# and tears everything down. Exits non-zero if any step fails. Installs
# the Debian packages it needs (scripts/deps.sh) when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
NAME=demo
PREFIX=ptdemo
WORK=$(mktemp -d)
BIN=$WORK/punchtun
. scripts/deps.sh
. scripts/labkit.sh
need_go
need_packages "${DEMO_PACKAGES[@]}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "building punchtun"
go build -o "$BIN" ./cmd/punchtun

say "bringing up the lab: two hosts behind two easy NATs"
"$LAB" up "$PREFIX" easy easy

say "starting the rendezvous on 203.0.113.10:3478"
start_rendezvous "$BIN"

"$BIN" genkey >"$WORK/a1.key"
"$BIN" genkey >"$WORK/b1.key"
write_conf "$WORK/alice0.conf" "$WORK/a1.key" 100.64.0.1 "$("$BIN" pubkey <"$WORK/b1.key")" 100.64.0.2 "" bob
write_conf "$WORK/bob0.conf" "$WORK/b1.key" 100.64.0.2 "$("$BIN" pubkey <"$WORK/a1.key")" 100.64.0.1 "" alice

say "punchtun up on alice (behind NAT A) and bob (behind NAT B)"
start=$(now_ns)
in_ns a1 "$BIN" up "$WORK/alice0.conf" --run-dir "$WORK/run-a" --state-dir "$WORK/state-a" 2>"$WORK/alice.log" &
PIDS+=($!)
in_ns b1 "$BIN" up "$WORK/bob0.conf" --run-dir "$WORK/run-b" --state-dir "$WORK/state-b" 2>"$WORK/bob.log" &
PIDS+=($!)

path_is_direct() {
	in_ns a1 "$BIN" status alice0 --json --run-dir "$WORK/run-a" 2>/dev/null | grep -q '"path": "direct"'
}
wait_for "a direct path" 10 path_is_direct
echo "direct path after $((($(now_ns) - start) / 1000000)) ms"

say "punchtun status (on alice)"
in_ns a1 "$BIN" status --run-dir "$WORK/run-a"

say "ping bob's virtual IP from alice"
in_ns a1 ping -c 3 -i 0.2 100.64.0.2 || die "ping"

say "send a 1 MiB file from alice to bob with nc"
head -c 1048576 /dev/urandom >"$WORK/file"
in_ns b1 sh -c "exec nc -l -s 100.64.0.2 -p 9000 >'$WORK/received'" &
listener=$!
wait_for "nc listening" 5 in_ns b1 sh -c "ss -Hltn 'sport = :9000' | grep -q 9000"
in_ns a1 sh -c "nc -N -w 10 100.64.0.2 9000 <'$WORK/file'" || die "nc send"
wait "$listener" || die "nc receive"
sent=$(sha256sum <"$WORK/file" | cut -d' ' -f1)
got=$(sha256sum <"$WORK/received" | cut -d' ' -f1)
[ "$sent" = "$got" ] || die "file differs after transfer"
echo "sha256 $got: intact"

say "punchtun status after traffic (on bob)"
in_ns b1 "$BIN" status --run-dir "$WORK/run-b"

say "demo passed; tearing down"
