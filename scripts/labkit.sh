# labkit.sh — what the lab scripts (demo.sh, bench.sh, connect_time.sh)
# share. Source it from the repository's root after setting NAME (for
# messages), PREFIX (the lab's prefix) and WORK (a fresh work directory).
# It installs traps: on exit every process in PIDS is stopped, the lab is
# taken down and WORK removed (kept, and said so, when KEEP is set).
# shellcheck shell=bash

LAB=scripts/lab.sh
PIDS=()

die() {
	echo "$NAME: error: $*" >&2
	local f
	for f in "$WORK"/*.log; do [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -n 20 "$f" >&2; }; done
	exit 1
}
in_ns() { local host=$1; shift; ip netns exec "$PREFIX-$host" "$@"; }
now_ns() { date +%s%N; }

# stop_all stops every process in PIDS (SIGTERM, then waits) and takes the
# lab down.
stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
	"$LAB" down "$PREFIX" >/dev/null 2>&1 || true
}
trap 'stop_all; if [ -n "${KEEP-}" ]; then echo "$NAME: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || { echo "$NAME: run as root (network namespaces and TUN need it)" >&2; exit 1; }

# wait_for DESC TIMEOUT_S CMD...: polls CMD every 20 ms until it succeeds,
# or dies after TIMEOUT_S seconds.
wait_for() {
	local desc=$1 timeout=$2; shift 2
	local deadline=$(($(now_ns) + timeout * 1000000000))
	until "$@" >/dev/null 2>&1; do
		(($(now_ns) < deadline)) || die "timed out waiting for $desc"
		sleep 0.02
	done
}

# start_rendezvous BIN [FLAGS...]: `BIN rendezvous FLAGS` (relay on) at 203.0.113.10:3478 on
# the lab's rendezvous host, and on port 3479 for peers to tell easy NATs
# from hard ones; sets RVPUB to its public key.
start_rendezvous() {
	local bin=$1
	shift
	in_ns rv "$bin" rendezvous --listen 203.0.113.10:3478 --listen 203.0.113.10:3479 --key-file "$WORK/rv.key" "$@" 2>"$WORK/rv.log" &
	PIDS+=($!)
	wait_for "the rendezvous" 5 in_ns rv sh -c "test -s '$WORK/rv.key' && ss -Hlun 'sport = :3478' | grep -q 3478"
	RVPUB=$("$bin" pubkey <"$WORK/rv.key")
}

# start_coturn SECRET: Debian's coturn on the public host (203.0.113.20:3478,
# UDP and TCP), checking TURN REST credentials made with SECRET.
start_coturn() {
	in_ns pub turnserver -n --listening-ip=203.0.113.20 --relay-ip=203.0.113.20 --listening-port=3478 \
		--use-auth-secret --static-auth-secret="$1" --realm=punchtun.lab --no-tls --no-dtls --no-cli \
		--log-file=stdout --simple-log --pidfile="$WORK/coturn.pid" --userdb="$WORK/coturn.db" >"$WORK/coturn.log" 2>&1 &
	PIDS+=($!)
	wait_for "coturn" 5 in_ns pub sh -c "ss -Hlun 'sport = :3478' | grep -q 3478"
}

# write_conf FILE KEYFILE ADDRESS PEER-PUBKEY PEER-ADDRESS [LISTENPORT [PEER-NAME]]:
# a punchtun config with one peer, through the lab's rendezvous.
write_conf() {
	{
		echo "[Interface]"
		echo "PrivateKey = $(cat "$2")"
		[ -n "${6-}" ] && echo "ListenPort = $6"
		echo "Address = $3/24"
		echo "Rendezvous = 203.0.113.10:3478"
		echo "RendezvousKey = $RVPUB"
		echo
		echo "[Peer]"
		[ -n "${7-}" ] && echo "Name = $7"
		echo "PublicKey = $4"
		echo "AllowedIPs = $5/32"
	} >"$1"
	chmod 600 "$1"
}
