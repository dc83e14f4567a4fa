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
NAME=connect_time
PREFIX=ptb
RUNS=${1:-20}
WORK=$(mktemp -d /tmp/ptb-connect.XXXXXX)
KEEP=${BENCH_KEEP-}
. scripts/labkit.sh

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"

BIN=${PUNCHTUN_BIN:-$WORK/punchtun}
[ -n "${PUNCHTUN_BIN-}" ] || go build -o "$BIN" ./cmd/punchtun

"$LAB" up "$PREFIX" easy easy 2>/dev/null
start_rendezvous "$BIN"
"$BIN" genkey >"$WORK/x.key"
"$BIN" genkey >"$WORK/y.key"

# conf NAME KEY ADDR PEERKEY PEERADDR
conf() { write_conf "$WORK/$1.conf" "$WORK/$2.key" "$3" "$("$BIN" pubkey <"$WORK/$4.key")" "$5"; }
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
