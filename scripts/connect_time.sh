#!/usr/bin/env bash
# connect_time.sh — how long punchtun takes to connect (root).
#
# Usage: sudo scripts/connect_time.sh [RUNS]     (RUNS: 20)
#
# In the lab (scripts/lab.sh, prefix ptb, easy NAT on both sides), with the
# rendezvous already running, RUNS times each for two pairs:
#   easy/easy  a1 (behind NAT A) and b1 (behind NAT B): a direct path
#   same LAN   a1 and a2 (both behind NAT A): a LAN path
# starts both peers at once and measures the time from their start to the
# first ping reply through the tunnel (ping every 10 ms from a1 once its
# tunnel address exists), then stops them (SIGTERM, waiting for their exit).
# Prints every run, and the median and worst per pair.
# PUNCHTUN_BIN: a built punchtun to use (default: build one); BENCH_KEEP:
# keep the work directory with the logs.
set -euo pipefail

cd "$(dirname "$0")/.."
PREFIX=ptb
LAB=scripts/lab.sh
RUNS=${1:-20}
WORK=$(mktemp -d /tmp/ptb-connect.XXXXXX)
PIDS=()

die() { echo "connect_time: error: $*" >&2; exit 1; }
in_ns() { local h=$1; shift; ip netns exec "$PREFIX-$h" "$@"; }
now_ns() { date +%s%N; }

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
	"$LAB" down "$PREFIX" >/dev/null 2>&1 || true
}
trap 'cleanup; if [ -n "${BENCH_KEEP-}" ]; then echo "connect_time: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || die "run as root (network namespaces, TUN)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"

BIN=${PUNCHTUN_BIN:-$WORK/punchtun}
[ -n "${PUNCHTUN_BIN-}" ] || go build -o "$BIN" ./cmd/punchtun

"$LAB" up "$PREFIX" easy easy 2>/dev/null
ip netns exec "$PREFIX-rv" "$BIN" rendezvous --listen 203.0.113.10:3478 --key-file "$WORK/rv.key" 2>"$WORK/rv.log" &
PIDS+=($!)
deadline=$(($(now_ns) + 5000000000))
until [ -s "$WORK/rv.key" ] && in_ns rv ss -Hlun 'sport = :3478' | grep -q 3478; do
	(($(now_ns) < deadline)) || die "rendezvous did not start"
	sleep 0.01
done
RVPUB=$("$BIN" pubkey <"$WORK/rv.key")
"$BIN" genkey >"$WORK/x.key"
"$BIN" genkey >"$WORK/y.key"

# conf NAME KEY ADDR PEERKEY PEERADDR
conf() {
	cat >"$WORK/$1.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/$2.key")
Address = $3/24
Rendezvous = 203.0.113.10:3478
RendezvousKey = $RVPUB

[Peer]
PublicKey = $("$BIN" pubkey <"$WORK/$4.key")
AllowedIPs = $5/32
EOF
	chmod 600 "$WORK/$1.conf"
}
conf ptbcx x 100.64.0.1 y 100.64.0.2
conf ptbcy y 100.64.0.2 x 100.64.0.1

# one_run PEER_HOST: prints milliseconds from start to first ping reply.
one_run() {
	local other=$1 t0 pa pb ms rc=0
	t0=$(now_ns)
	ip netns exec "$PREFIX-a1" "$BIN" up "$WORK/ptbcx.conf" --run-dir "$WORK/run" 2>>"$WORK/x.log" &
	pa=$!
	ip netns exec "$PREFIX-$other" "$BIN" up "$WORK/ptbcy.conf" --run-dir "$WORK/run" 2>>"$WORK/y.log" &
	pb=$!
	PIDS+=("$pa" "$pb")
	# ping needs the address (and so the route) to exist before it starts.
	until in_ns a1 ip -4 addr show dev ptbcx 2>/dev/null | grep -q 100.64.0.1; do
		(($(now_ns) - t0 < 10000000000)) || { rc=1; break; }
		sleep 0.005
	done
	((rc == 0)) && { in_ns a1 ping -c 1 -i 0.01 -w 10 -q 100.64.0.2 >/dev/null 2>&1 || rc=1; }
	ms=$((($(now_ns) - t0) / 1000000))
	kill -TERM "$pa" "$pb" 2>/dev/null || true
	wait "$pa" "$pb" 2>/dev/null || true
	PIDS=("${PIDS[@]:0:1}") # the rendezvous stays
	((rc == 0)) && echo "$ms" || echo "FAIL"
}

stats() { # values... -> "median worst" (a FAIL is the worst)
	local fails
	fails=$(printf '%s\n' "$@" | grep -c FAIL || true)
	printf '%s\n' "$@" | { grep -v FAIL || true; } | sort -n | awk -v fail="$fails" '{v[++n] = $1} END {
		if (!n) { print "NA NA"; exit }
		m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%d %s\n", m, fail ? "FAIL(" fail ")" : v[n] }'
}

echo "== time to connect: $RUNS runs each, from starting both peers to the first ping reply (ms)"
declare -A OUT
for pair in "easy/easy b1" "same-LAN a2"; do
	read -r name host <<<"$pair"
	vals=()
	for ((i = 1; i <= RUNS; i++)); do vals+=("$(one_run "$host")"); done
	read -r med worst <<<"$(stats "${vals[@]}")"
	OUT[$name]="median $med ms, worst $worst ms"
	printf '%-10s %s\n' "$name" "${vals[*]}"
done
for name in easy/easy same-LAN; do printf '%-10s %s\n' "$name" "${OUT[$name]}"; done
