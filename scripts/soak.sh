#!/usr/bin/env bash
# soak.sh — punchtun under a stream of real-world events (run as root,
# alone on the machine).
#
# Usage: scripts/soak.sh [MINUTES]     (default 30)
#
# One lab (scripts/lab.sh: NAT A easy, NAT B hard; a2's own firewall lets
# no UDP out of the LAN), one rendezvous, three pairs, each pinging across
# its tunnel five times a second the whole time:
#   easy-hard   a1 <-> b1   (birthday punching)
#   easy-none   a1 <-> pub
#   blocked     a2 <-> pub  (relay-tcp)
# Every EVERY seconds (15) one event, in turn: a peer killed (-9) and
# started again, a NAT router flushing its mappings, the rendezvous killed
# and started again, a2's peer stopped for 10 s (a laptop's lid) and
# continued, b1 gaining and losing an address (a network change).
# Prints, per process, goroutines (from its metrics), resident memory and
# open file descriptors after the pairs connect and at the end; per pair
# the longest gap between ping replies, and every gap over a second with
# the last event before it ended (a stopped peer's own gap is its 10 s). PUNCHTUN_BIN: a built punchtun; BENCH_KEEP: keep
# the logs.
set -euo pipefail

cd "$(dirname "$0")/.."
NAME=soak
PREFIX=ptsk
WORK=$(mktemp -d /tmp/ptsk.XXXXXX)
KEEP=${BENCH_KEEP-}
MINUTES=${1:-30}
EVERY=${EVERY:-15}
. scripts/deps.sh
. scripts/labkit.sh
need_go
need_packages "${DEMO_PACKAGES[@]}" conntrack
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "MINUTES must be a positive number"

BIN=${PUNCHTUN_BIN:-$WORK/punchtun}
[ -n "${PUNCHTUN_BIN-}" ] || go build -o "$BIN" ./cmd/punchtun

"$LAB" up "$PREFIX" easy hard >/dev/null
# a2's network blocks UDP beyond its LAN.
in_ns a2 nft -f - <<'EOF'
table inet soak {
	chain out {
		type filter hook output priority 0;
		ip daddr != 192.168.1.0/24 meta l4proto udp drop
	}
}
EOF

declare -A PID HOST METRICS
rv_start() {
	# ip netns exec execs punchtun: $! is the rendezvous itself.
	ip netns exec "$PREFIX-rv" "$BIN" rendezvous --listen 203.0.113.10:3478 --listen 203.0.113.10:3479 --key-file "$WORK/rv.key" \
		--state-file "$WORK/rv.state" --metrics 127.0.0.1:9090 2>>"$WORK/rv.log" &
	PID[rv]=$! HOST[rv]=rv METRICS[rv]=9090
	PIDS+=($!)
	wait_for "the rendezvous" 5 in_ns rv sh -c "test -s '$WORK/rv.key' && ss -Hlun 'sport = :3478' | grep -q 3478"
}
rv_start
RVPUB=$("$BIN" pubkey <"$WORK/rv.key")

# peer IFACE HOST ADDR PEER-IFACE PEER-ADDR METRICS-PORT: config and start.
peer_conf() {
	"$BIN" genkey >"$WORK/$1.key"
	HOST[$1]=$2 METRICS[$1]=$6
}
peer_start() {
	local i=$1
	ip netns exec "$PREFIX-${HOST[$i]}" "$BIN" up "$WORK/$i.conf" --run-dir "$WORK/run-$i" --state-dir "$WORK/state-$i" \
		--metrics "127.0.0.1:${METRICS[$i]}" 2>>"$WORK/$i.log" &
	PID[$i]=$!
	PIDS+=($!)
}
PAIRS=("ptsk1a a1 100.64.1.1 ptsk1b b1 100.64.1.2 easy-hard"
	"ptsk2a a1 100.64.2.1 ptsk2b pub 100.64.2.2 easy-none"
	"ptsk3a a2 100.64.3.1 ptsk3b pub 100.64.3.2 blocked")
port=9101
for p in "${PAIRS[@]}"; do
	read -r ia ha aa ib hb ab _ <<<"$p"
	peer_conf "$ia" "$ha" "$aa" "$ib" "$ab" $port
	peer_conf "$ib" "$hb" "$ab" "$ia" "$aa" $((port + 1))
	port=$((port + 2))
done
for p in "${PAIRS[@]}"; do
	read -r ia _ aa ib _ ab _ <<<"$p"
	write_conf "$WORK/$ia.conf" "$WORK/$ia.key" "$aa" "$("$BIN" pubkey <"$WORK/$ib.key")" "$ab"
	write_conf "$WORK/$ib.conf" "$WORK/$ib.key" "$ab" "$("$BIN" pubkey <"$WORK/$ia.key")" "$aa"
	peer_start "$ia"
	peer_start "$ib"
done
for p in "${PAIRS[@]}"; do
	read -r ia ha _ _ _ ab name <<<"$p"
	wait_for "pair $name" 30 in_ns "$ha" ping -c 1 -W 1 "$ab"
	in_ns "$ha" ping -D -n -i 0.2 "$ab" >"$WORK/ping-$name.log" 2>&1 &
	PIDS+=($!)
done

# metric PROC NAME: a value from the process's Prometheus metrics.
metric() {
	in_ns "${HOST[$1]}" bash -c "exec 3<>/dev/tcp/127.0.0.1/${METRICS[$1]} && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null |
		awk -v m="$2" '$1 == m {print $2}'
}
report() {
	printf '%-8s %-8s %10s %10s %6s\n' "$1" PROCESS GOROUTINES "RSS (KiB)" FDS
	local p
	for p in rv ptsk1a ptsk1b ptsk2a ptsk2b ptsk3a ptsk3b; do
		printf '%-8s %-8s %10s %10s %6s\n' "" "$p" "$(metric "$p" go_goroutines)" \
			"$(awk '/VmRSS/ {print $2}' "/proc/${PID[$p]}/status")" "$(ls "/proc/${PID[$p]}/fd" | wc -l)"
	done
}
sleep 5 # let the paths settle before the first figures
report start

event() { echo "$(date +%s.%N) $*" >>"$WORK/events.log"; }
end=$(($(date +%s) + MINUTES * 60))
n=0
peers=(ptsk1a ptsk1b ptsk2a ptsk2b ptsk3a ptsk3b)
while (($(date +%s) < end)); do
	sleep "$EVERY"
	case $((n % 5)) in
	0)
		i=${peers[$((n / 5 % ${#peers[@]}))]}
		event "restart $i"
		kill -KILL "${PID[$i]}"
		wait "${PID[$i]}" 2>/dev/null || true
		peer_start "$i"
		;;
	1)
		r=$( ((n / 5 % 2)) && echo natb || echo nata)
		event "flush $r"
		in_ns "$r" conntrack -F >/dev/null 2>&1 || true
		;;
	2)
		event "restart rendezvous"
		kill -KILL "${PID[rv]}"
		wait "${PID[rv]}" 2>/dev/null || true
		rv_start
		;;
	3)
		event "stop ptsk3a for 10 s"
		kill -STOP "${PID[ptsk3a]}"
		sleep 10
		kill -CONT "${PID[ptsk3a]}"
		event "continue ptsk3a"
		;;
	4)
		event "network change on b1"
		in_ns b1 ip addr add 192.168.1.50/24 dev eth0
		sleep 2
		in_ns b1 ip addr del 192.168.1.50/24 dev eth0
		;;
	esac
	n=$((n + 1))
done
sleep 5
report end

echo
printf '%-10s %8s %13s  %s\n' PAIR REPLIES "LONGEST GAP" "GAPS OVER 1 S (the last event before each ended)"
for p in "${PAIRS[@]}"; do
	read -r _ _ _ _ _ _ name <<<"$p"
	sed -n 's/^\[\([0-9.]*\)\].*bytes from.*/\1/p' "$WORK/ping-$name.log" >"$WORK/t-$name"
	awk -v name="$name" -v events="$WORK/events.log" '
		BEGIN { while ((getline l < events) > 0) { split(l, f, " "); et[++ne] = f[1]; sub(/^[^ ]* /, "", l); ev[ne] = l } }
		NR > 1 { g = $1 - last; if (g > max) max = g
			if (g > 1) { e = "start"; for (i = 1; i <= ne; i++) if (et[i] <= $1) e = ev[i]; gaps = gaps sprintf(" %.1fs(%s)", g, e) } }
		{ last = $1 }
		END { printf "%-10s %8d %12.2fs %s\n", name, NR, max, gaps }' "$WORK/t-$name"
done
echo "events: $n, every ${EVERY}s over $MINUTES minutes"
