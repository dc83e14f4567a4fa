#!/usr/bin/env bash
# lab_selftest.sh — self-test for lab.sh.
#
# Usage: scripts/lab_selftest.sh    (as root; takes a few seconds)
#
# Brings up lab "ptst" with nata=easy, natb=hard; checks connectivity, the
# NAT routers' firewalls, and NAT mapping behaviour (easy: same public port
# for two destinations; hard: different ports); always tears the lab down.
set -euo pipefail

readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly LAB="$HERE/lab.sh"
readonly P=ptst
readonly RV1=203.0.113.10 RV2=203.0.113.11
readonly NATA_WAN=203.0.113.21 NATB_WAN=203.0.113.22
readonly LPORT=5000 SPORT=40000

TMP=""
LISTENER_PIDS=()
FAILS=0

lab()  { "$LAB" exec "$P" "$@"; }
ok()   { echo "ok   - $*"; }
bad()  { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
die()  { echo "lab_selftest: error: $*" >&2; exit 1; }

# socat (fork mode) keeps one child per peer alive; stop those first and let
# socat reap them, so nothing is left as a zombie, then stop socat itself.
stop_listener() {
	local pid=$1
	pkill -TERM -P "$pid" 2>/dev/null || true
	until_ok 2 no_children "$pid" || true
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

no_children() { ! pgrep -P "$1" >/dev/null; }

cleanup() {
	local rc=$? pid
	trap - EXIT
	for pid in "${LISTENER_PIDS[@]}"; do
		stop_listener "$pid"
	done
	"$LAB" down "$P" || true
	[[ -z $TMP ]] || rm -rf "$TMP"
	exit "$rc"
}

# until_ok SECONDS cmd...: poll cmd until it succeeds or the deadline passes.
until_ok() {
	local deadline=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.05
	done
}

need_tools() {
	local missing=()
	command -v socat >/dev/null || missing+=(socat)
	command -v nc >/dev/null || missing+=(netcat-openbsd)
	command -v ping >/dev/null || missing+=(iputils-ping)
	((${#missing[@]} == 0)) && return 0
	echo "installing: ${missing[*]}" >&2
	apt-get install -y "${missing[@]}" >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; } ||
		die "cannot install ${missing[*]}"
}

# --------------------------------------------------------------- checks

check_reach() {  # check_reach HOST DST
	if until_ok 5 lab "$1" ping -c1 -W1 -q "$2"; then
		ok "$1 can ping $2"
	else
		bad "$1 cannot ping $2"
	fi
}

check_no_reach() {  # check_no_reach HOST DST WHY
	if lab "$1" ping -c1 -W1 -q "$2" >/dev/null 2>&1; then
		bad "$1 reached $2 ($3)"
	else
		ok "$1 cannot reach $2 ($3)"
	fi
}

check_firewall() {
	check_no_reach pub 192.168.1.2 "no route to private LAN"
	# Even with a route via nata's WAN, the forward chain must drop new inbound.
	lab pub ip route add 192.168.1.0/24 via "$NATA_WAN"
	check_no_reach pub 192.168.1.2 "route via nata WAN; forward drops new"
	lab pub ip route del 192.168.1.0/24 via "$NATA_WAN"
	# Unsolicited packets to the router itself are dropped by its input chain...
	check_no_reach pub "$NATA_WAN" "nata input drops new from wan"
	# ...but its own outgoing traffic gets replies.
	check_reach nata "$RV1"
}

# Listener in rv on ADDR:LPORT appending "TAG PEERADDR PEERPORT" per datagram.
start_listener() {
	local addr=$1 log=$2
	lab rv socat -u "UDP4-RECVFROM:$LPORT,bind=$addr,fork" \
		"EXEC:sh $TMP/record.sh $log" &
	LISTENER_PIDS+=($!)
}

listeners_ready() {
	[[ -n $(lab rv ss -Hlun "src $RV1:$LPORT") ]] &&
		[[ -n $(lab rv ss -Hlun "src $RV2:$LPORT") ]]
}

send_from() {  # send_from HOST: one datagram to each rv address from SPORT
	local host=$1 dst
	for dst in "$RV1" "$RV2"; do
		echo "$host" | lab "$host" nc -u -p "$SPORT" -w1 "$dst" "$LPORT"
	done
}

have_line() { grep -q "^$1 " "$2" 2>/dev/null; }

all_received() {
	local h f
	for h in a1 b1; do
		for f in "$TMP/rv1.log" "$TMP/rv2.log"; do
			have_line "$h" "$f" || return 1
		done
	done
}

# observed HOST LOG -> "ADDR PORT" as seen by rv
observed() { awk -v h="$1" '$1 == h {print $2, $3; exit}' "$2"; }

check_mapping() {
	cat >"$TMP/record.sh" <<-'EOF'
	read -r tag
	echo "$tag $SOCAT_PEERADDR $SOCAT_PEERPORT" >> "$1"
	EOF
	start_listener "$RV1" "$TMP/rv1.log"
	start_listener "$RV2" "$TMP/rv2.log"
	until_ok 5 listeners_ready || die "rv listeners did not come up"

	send_from a1 & local pa=$!
	send_from b1 & local pb=$!
	wait "$pa" || bad "sending from a1 failed"
	wait "$pb" || bad "sending from b1 failed"
	until_ok 5 all_received || { bad "rv did not receive all datagrams"; cat "$TMP"/rv*.log; return; }

	local a_1 a_2 b_1 b_2
	a_1=$(observed a1 "$TMP/rv1.log") a_2=$(observed a1 "$TMP/rv2.log")
	b_1=$(observed b1 "$TMP/rv1.log") b_2=$(observed b1 "$TMP/rv2.log")
	echo "     a1:$SPORT via nata(easy): ->$RV1 seen as $a_1, ->$RV2 seen as $a_2"
	echo "     b1:$SPORT via natb(hard): ->$RV1 seen as $b_1, ->$RV2 seen as $b_2"

	[[ ${a_1% *} == "$NATA_WAN" && ${a_2% *} == "$NATA_WAN" ]] &&
		ok "a1 is masqueraded to $NATA_WAN" || bad "a1 not masqueraded to $NATA_WAN"
	[[ ${b_1% *} == "$NATB_WAN" && ${b_2% *} == "$NATB_WAN" ]] &&
		ok "b1 is masqueraded to $NATB_WAN" || bad "b1 not masqueraded to $NATB_WAN"
	[[ ${a_1#* } == "${a_2#* }" ]] &&
		ok "easy NAT: same public port (${a_1#* }) for both destinations" ||
		bad "easy NAT: public ports differ (${a_1#* } vs ${a_2#* })"
	[[ ${b_1#* } != "${b_2#* }" ]] &&
		ok "hard NAT: public ports differ (${b_1#* } vs ${b_2#* })" ||
		bad "hard NAT: same public port (${b_1#* }) for both destinations"
}

main() {
	[[ $EUID -eq 0 ]] || die "must run as root"
	need_tools
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	TMP=$(mktemp -d)

	"$LAB" up "$P" easy hard
	check_reach a1 "$RV1"
	check_reach b1 "$RV1"
	check_reach a2 "$RV2"
	check_firewall
	check_mapping

	if ((FAILS)); then
		echo "lab_selftest: $FAILS check(s) FAILED"
		exit 1
	fi
	echo "lab_selftest: all checks passed"
}

main "$@"
