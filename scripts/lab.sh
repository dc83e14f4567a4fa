#!/usr/bin/env bash
# lab.sh — network-namespace lab for testing punchtun (NAT traversal VPN).
#
# Usage:
#   lab.sh up   PREFIX NAT_A NAT_B [ipv6]  # NAT_A, NAT_B: easy | hard | cone | blocked
#   lab.sh down PREFIX               # never fails if parts are missing
#   lab.sh exec PREFIX HOST cmd...   # = ip netns exec PREFIX-HOST cmd...
#
# PREFIX: 1-10 chars of [A-Za-z0-9_] (interface names embed it; max 15 chars).
# Namespaces (all named PREFIX-NAME):
#   inet  "internet": bridge br0 joining every public address, 203.0.113.0/24
#   rv    rendezvous host  eth0 203.0.113.10/24 + 203.0.113.11/24
#   pub   public host      eth0 203.0.113.20/24 (no NAT)
#   nata  NAT router A     wan 203.0.113.21/24, bridge lan 192.168.1.1/24
#   a1,a2 behind A         eth0 192.168.1.2/24, 192.168.1.3/24, default via .1
#   natb  NAT router B     wan 203.0.113.22/24, bridge lan 192.168.1.1/24
#   b1    behind B         eth0 192.168.1.2/24 (same as a1 on purpose)
# NAT types: easy = nft "masquerade" (endpoint-independent mapping),
#            hard = nft "masquerade random" (endpoint-dependent mapping),
#            cone = easy plus UDP port 51820 forwarded to the first LAN host
#                   (192.168.1.2): a full cone for a peer with ListenPort 51820,
#            blocked = easy, but all UDP from the LAN is dropped (TCP passes).
set -euo pipefail

readonly HOSTS=(inet rv pub nata natb a1 a2 b1)
readonly PUB_NET_LEN=24
readonly LAN_GW=192.168.1.1
readonly LINK_DEADLINE_S=5
readonly CONE_PORT=51820
readonly CONE_HOST=192.168.1.2
# With "ipv6", every host also gets a global IPv6 address: the public side
# 2001:db8::/64, LAN A 2001:db8:a::/64, LAN B 2001:db8:b::/64, routed (not
# NATed) by the routers, whose firewall still drops what the LAN did not ask
# for, as home routers do.
readonly V6_PUB=2001:db8:: V6_LEN=64
IPV6=""

PREFIX=""

die()  { echo "lab.sh: error: $*" >&2; exit 1; }
info() { echo "lab.sh: $*" >&2; }

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit 2
}

# ---------------------------------------------------------------- helpers

set_prefix() {
	[[ ${1-} =~ ^[A-Za-z0-9_]{1,10}$ ]] ||
		die "bad PREFIX '${1-}' (want 1-10 chars of [A-Za-z0-9_])"
	PREFIX=$1
}

ns()  { echo "$PREFIX-$1"; }                     # namespace name of a host
nsx() { local h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }
nip() { local h=$1; shift; ip -n "$(ns "$h")" "$@"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF -- "$1"; }

# sysctls_if_exist HOST KEY=VALUE...: write sysctls inside a host's
# namespace, each only if it exists, in one process (labs are built often).
sysctls_if_exist() {
	local host=$1; shift
	# shellcheck disable=SC2016 # expanded by the inner bash
	nsx "$host" bash -c 'for kv; do f=/proc/sys/${kv%%=*}; f=${f//.//}; [[ ! -e $f ]] || echo "${kv#*=}" >"$f" || exit 1; done' sysctls "$@"
}

# Bridged traffic must not go through the IP netfilter hooks (needs
# br_netfilter for the sysctls to exist; silently skipped otherwise).
readonly NO_BRIDGE_NF=(net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0)

# new_ns HOST [KEY=VALUE...]: a namespace with lo up, quiet IPv6 on the
# interfaces created later (no DAD, no router solicitations), and the
# sysctls given.
new_ns() {
	local host=$1; shift
	ip netns add "$(ns "$host")"
	nip "$host" link set lo up
	sysctls_if_exist "$host" net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.dad_transmits=0 \
		net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.accept_ra=0 "$@"
}

# veth HOST_A IF_A HOST_B IF_B: a pair created directly inside the two
# namespaces, so nothing ever appears (or clashes) in the root namespace.
veth() {
	ip link add "$2" netns "$(ns "$1")" type veth peer name "$4" netns "$(ns "$3")"
}

add_bridge() {
	local host=$1 br=$2
	nip "$host" link add "$br" type bridge stp_state 0 forward_delay 0
	nip "$host" link set "$br" up
}

# Plug HOST's interface IFACE into the internet bridge (port name PREFIX-HOST).
attach_to_inet() {
	local host=$1 iface=$2 port="$PREFIX-$1"
	veth "$host" "$iface" inet "$port"
	nip inet link set "$port" master br0 up
	nip "$host" link set "$iface" up
}

# ---------------------------------------------------------------- topology

build_inet() {
	new_ns inet "${NO_BRIDGE_NF[@]}"
	add_bridge inet br0
}

# public_host HOST ADDR...  (first address is primary)
build_public_host() {
	local host=$1; shift
	local a
	new_ns "$host"
	attach_to_inet "$host" eth0
	for a in "$@"; do
		if [[ $a == *:* ]]; then
			nip "$host" addr add "$a/$V6_LEN" dev eth0
		else
			nip "$host" addr add "$a/$PUB_NET_LEN" dev eth0
		fi
	done
}

nat_rules() {
	local type=$1 masq="masquerade" prerouting="" forward=""
	case $type in
		easy) ;;
		hard) masq="masquerade random" ;;
		cone)
			prerouting="iifname \"wan\" udp dport $CONE_PORT dnat to $CONE_HOST:$CONE_PORT"
			forward="ct status dnat accept"
			;;
		blocked) forward="iifname \"lan\" meta l4proto udp drop" ;;
		*) die "bad NAT type '$type'" ;;
	esac
	cat <<-EOF
	table ip nat {
		chain prerouting {
			type nat hook prerouting priority dstnat; policy accept;
			$prerouting
		}
		chain postrouting {
			type nat hook postrouting priority srcnat; policy accept;
			oifname "wan" $masq
		}
	}
	table inet filter {
		chain input {
			type filter hook input priority filter; policy accept;
			iifname "wan" ct state new drop
		}
		chain forward {
			type filter hook forward priority filter; policy accept;
			$forward
			iifname "wan" ct state new drop
		}
	}
	EOF
}

# build_nat ROUTER TYPE WAN_ADDR LANHOST=ADDR...
build_nat() {
	local router=$1 type=$2 wan_addr=$3; shift 3
	local spec host addr port
	new_ns "$router" net.ipv4.ip_forward=1 "${NO_BRIDGE_NF[@]}"

	attach_to_inet "$router" wan
	nip "$router" addr add "$wan_addr/$PUB_NET_LEN" dev wan

	add_bridge "$router" lan
	nip "$router" addr add "$LAN_GW/24" dev lan
	if [[ -n $IPV6 ]]; then
		local lan6=$1 wan6=$2; shift 2
		nsx "$router" sysctl -qw net.ipv6.conf.all.forwarding=1
		nip "$router" addr add "$wan6/$V6_LEN" dev wan
		nip "$router" addr add "${lan6}1/$V6_LEN" dev lan
	fi

	nat_rules "$type" | nsx "$router" nft -f - ||
		die "loading nftables rules into $(ns "$router") failed"

	for spec in "$@"; do
		host=${spec%%=*} addr=${spec#*=} port="$PREFIX-$host"
		new_ns "$host"
		veth "$host" eth0 "$router" "$port"
		nip "$router" link set "$port" master lan up
		nip "$host" link set eth0 up
		nip "$host" addr add "$addr/24" dev eth0
		nip "$host" route add default via "$LAN_GW"
		if [[ -n $IPV6 ]]; then
			nip "$host" addr add "${lan6}${addr##*.}/$V6_LEN" dev eth0
			nip "$host" -6 route add default via "${lan6}1"
		fi
	done
}

# IPv6 routes between the public side and the two LANs.
route_ipv6() {
	local h
	for h in rv pub; do
		nip "$h" -6 route add 2001:db8:a::/64 via "${V6_PUB}21"
		nip "$h" -6 route add 2001:db8:b::/64 via "${V6_PUB}22"
	done
	nip nata -6 route add 2001:db8:b::/64 via "${V6_PUB}22"
	nip natb -6 route add 2001:db8:a::/64 via "${V6_PUB}21"
}

# Poll (with a deadline) until every non-lo link in the lab is operationally UP.
wait_links_up() {
	local deadline=$((SECONDS + LINK_DEADLINE_S)) h d down pending=("${HOSTS[@]}") still
	while :; do
		down="" still=()
		for h in "${pending[@]}"; do
			d=$(nip "$h" -br link show | awk -v h="$h" '$1 != "lo" && $2 != "UP" {printf " %s:%s(%s)", h, $1, $2}')
			[[ -z $d ]] || { down+=$d; still+=("$h"); }
		done
		[[ -z $down ]] && return 0
		pending=("${still[@]}") # the hosts all up are not asked again
		((SECONDS < deadline)) || die "links not up after ${LINK_DEADLINE_S}s:$down"
		sleep 0.05
	done
}

# ---------------------------------------------------------------- commands

cmd_up() {
	(($# == 3 || $# == 4)) || usage
	set_prefix "$1"
	local nat_a=$2 nat_b=$3 t
	case ${4-} in
		"") ;;
		ipv6) IPV6=1 ;;
		*) die "bad option '$4' (want ipv6)" ;;
	esac
	for t in "$nat_a" "$nat_b"; do
		[[ $t =~ ^(easy|hard|cone|blocked)$ ]] || die "bad NAT type '$t' (want easy|hard|cone|blocked)"
	done
	command -v nft >/dev/null || die "nft not found (apt-get install -y nftables)"

	cmd_down_quiet # idempotent: rebuild from scratch

	trap 'rc=$?; trap - EXIT; if ((rc)); then info "up $PREFIX failed (exit $rc); cleaning up"; cmd_down_quiet; fi; exit $rc' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	build_inet
	if [[ -n $IPV6 ]]; then
		build_public_host rv 203.0.113.10 203.0.113.11 "${V6_PUB}10"
		build_public_host pub 203.0.113.20 "${V6_PUB}20"
		build_nat nata "$nat_a" 203.0.113.21 2001:db8:a:: "${V6_PUB}21" a1=192.168.1.2 a2=192.168.1.3
		build_nat natb "$nat_b" 203.0.113.22 2001:db8:b:: "${V6_PUB}22" b1=192.168.1.2
		route_ipv6
	else
		build_public_host rv 203.0.113.10 203.0.113.11
		build_public_host pub 203.0.113.20
		build_nat nata "$nat_a" 203.0.113.21 a1=192.168.1.2 a2=192.168.1.3
		build_nat natb "$nat_b" 203.0.113.22 b1=192.168.1.2
	fi
	wait_links_up

	trap - EXIT INT TERM
	info "lab $PREFIX up (nata=$nat_a, natb=$nat_b${IPV6:+, ipv6})"
}

# Kill whatever still runs inside a namespace (keeps it alive otherwise).
kill_ns_procs() {
	local n=$1 pids deadline
	pids=$(ip netns pids "$n" 2>/dev/null || true)
	[[ -n $pids ]] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	deadline=$((SECONDS + 2))
	while [[ -n $(ip netns pids "$n" 2>/dev/null || true) ]] && ((SECONDS < deadline)); do
		sleep 0.05
	done
	pids=$(ip netns pids "$n" 2>/dev/null || true)
	# shellcheck disable=SC2086
	[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_down_quiet() {
	local h n
	for h in "${HOSTS[@]}"; do
		n=$(ns "$h")
		ns_exists "$n" || continue
		kill_ns_procs "$n"
		ip netns del "$n" 2>/dev/null || true
	done
	return 0
}

cmd_down() {
	(($# == 1)) || usage
	set_prefix "$1"
	cmd_down_quiet
}

cmd_exec() {
	(($# >= 3)) || usage
	set_prefix "$1"
	local host=$2; shift 2
	ns_exists "$(ns "$host")" || die "no namespace $(ns "$host") (is lab $PREFIX up? hosts: ${HOSTS[*]})"
	exec ip netns exec "$(ns "$host")" "$@"
}

main() {
	(($# >= 1)) || usage
	[[ $EUID -eq 0 ]] || die "must run as root"
	local cmd=$1; shift
	case $cmd in
		up)   cmd_up "$@" ;;
		down) cmd_down "$@" ;;
		exec) cmd_exec "$@" ;;
		-h|--help|help) usage ;;
		*) usage ;;
	esac
}

main "$@"
