#!/usr/bin/env bash
# mtu_bench.sh — TCP through punchtun over a path smaller than its packets
# (run as root, alone on the machine).
#
# Usage: scripts/mtu_bench.sh [PATH_MTU...]   (default: 1300 1200 v6:1280)
#
# For each path MTU, a lab of two hosts behind easy NATs whose WAN links
# (and so the internet path between them) take PATH_MTU bytes, routers
# answering bigger packets with ICMP fragmentation-needed; v6:PATH_MTU is
# the same over IPv6 (the lab's ipv6 option, hard NATs: the direct path is
# IPv6, routed, not NATed). Measures TCP a->b with iperf3 (BENCH_TIME
# seconds, 5; BENCH_ROUNDS rounds, 3, alternating) through punchtun as
# configured out of the box (MTU 1280, which does not fit) and with MTU set
# by hand to what fits (PATH_MTU - 60, - 80 over IPv6), and prints the
# medians and their ratio. PUNCHTUN_BIN: a built punchtun.
set -euo pipefail

cd "$(dirname "$0")/.."
NAME=mtu_bench
PREFIX=ptu
WORK=$(mktemp -d /tmp/ptu.XXXXXX)
KEEP=${BENCH_KEEP-}
T=${BENCH_TIME:-5}
ROUNDS=${BENCH_ROUNDS:-3}
MTUS=("$@")
[ ${#MTUS[@]} -gt 0 ] || MTUS=(1300 1200 v6:1280)
. scripts/deps.sh
. scripts/labkit.sh
need_go
need_packages "${DEMO_PACKAGES[@]}" iperf3 jq

BIN=${PUNCHTUN_BIN:-$WORK/punchtun}
[ -n "${PUNCHTUN_BIN-}" ] || go build -o "$BIN" ./cmd/punchtun
"$BIN" genkey >"$WORK/a.key"
"$BIN" genkey >"$WORK/b.key"

# up TUNNEL_MTU: both peers, waiting for a direct path; "" for the default.
up() {
	local mtu=$1 side key addr peer peeraddr host
	for side in a b; do
		if [ $side = a ]; then host=a1 key=a addr=100.64.0.1 peer=b peeraddr=100.64.0.2; else host=b1 key=b addr=100.64.0.2 peer=a peeraddr=100.64.0.1; fi
		write_conf "$WORK/ptu$side.conf" "$WORK/$key.key" $addr "$("$BIN" pubkey <"$WORK/$peer.key")" $peeraddr
		[ -n "$mtu" ] && sed -i "/^Address/a MTU = $mtu" "$WORK/ptu$side.conf"
		in_ns $host "$BIN" up "$WORK/ptu$side.conf" --run-dir "$WORK/run-$side" --state-dir - 2>"$WORK/ptu$side-$mtu.log" &
		PIDS+=($!) PEERS+=($!)
	done
	wait_for "a direct path" 20 sh -c "ip netns exec $PREFIX-a1 '$BIN' status ptua --json --run-dir '$WORK/run-a' | grep -q '\"path\": \"direct\"'"
}

# down stops the peers (stop_all, at the end, the rest).
PEERS=()
down() {
	local pid
	for pid in "${PEERS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PEERS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PEERS=()
}

# tcp: one iperf3 run a1 -> b1 through the tunnel, in Mbit/s.
tcp() {
	timeout $((T + 20)) ip netns exec "$PREFIX-a1" iperf3 -c 100.64.0.2 -t "$T" -J 2>/dev/null |
		jq '.end.sum_received.bits_per_second / 1e6 | floor'
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

printf '%-9s %-22s %-22s %s\n' "PATH MTU" "DEFAULT (MTU 1280)" "BY HAND (PATH-60/80)" "RATIO"
for spec in "${MTUS[@]}"; do
	pmtu=${spec#v6:} overhead=60 nats=(easy easy)
	[ "$spec" = "$pmtu" ] || overhead=80 nats=(hard hard ipv6)
	"$LAB" up "$PREFIX" "${nats[@]}" >/dev/null 2>&1
	for r in nata natb; do
		in_ns $r ip link set wan mtu "$pmtu"
		in_ns inet ip link set "$PREFIX-$r" mtu "$pmtu"
	done
	start_rendezvous "$BIN"
	in_ns b1 iperf3 -s >/dev/null 2>&1 &
	PIDS+=($!)
	wait_for "iperf3 server" 5 in_ns b1 sh -c "ss -Hltn 'sport = :5201' | grep -q 5201"
	: >"$WORK/default" && : >"$WORK/hand"
	for ((i = 0; i < ROUNDS; i++)); do
		up "" && tcp >>"$WORK/default" && down
		up $((pmtu - overhead)) && tcp >>"$WORK/hand" && down
	done
	d=$(median <"$WORK/default") h=$(median <"$WORK/hand")
	printf '%-9s %-22s %-22s %s\n' "$spec" "$d Mbit/s" "$h Mbit/s" "$(awk -v d="$d" -v h="$h" 'BEGIN {printf "%.2f", d / h}')"
	stop_all
done
