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

# A lab is built ~70 times a test suite, and a process per command was most
# of its time, so the build_* functions only queue work and build_lab runs
# it in phases of one process per namespace at most: the namespaces (one
# ip -batch); each namespace's setup shell (sysctls, the routers' nftables
# rules: the IPv6 defaults must be set before its interfaces exist); the
# links, made from the root namespace in the order the build_* functions
# queue them (so are the ifindexes); each namespace's ip commands
# (ip -n NS -batch).
declare -A SYSCTLS=() NFT_RULES=() IP_CMDS=()
# LINK_STEPS: "ip ARGS" (run with its neighbours in one root ip -batch) or
# "sysctl HOST KEY=VALUE" (set in HOST's namespace once the links before it
# exist: IPv6 forwarding puts the interfaces then present, and only those,
# into the all-routers multicast groups of every scope).
LINK_STEPS=()

# ip_cmd HOST ARGS...: queue `ip ARGS` for HOST's namespace. Batch lines take
# no options: ip tells IPv6 from the addresses (no -6).
ip_cmd() { local h=$1; shift; IP_CMDS[$h]+="$*"$'\n'; }

# sysctls HOST KEY=VALUE...: queue sysctls for HOST's namespace, each set
# only if it exists; a KEY prefixed with "!" must exist.
sysctls() { local h=$1; shift; SYSCTLS[$h]+=" $*"; }

# root_link ARGS...: queue `ip ARGS` (a link created in a lab namespace) for
# the root namespace.
root_link() { LINK_STEPS+=("ip $*"); }

# The setup shell run inside a namespace: sysctls as arguments, nftables
# rules (if any) on stdin.
# shellcheck disable=SC2016 # expanded by the inner bash
readonly NS_SETUP='
ns=$1; shift
for kv; do
	must=""; [[ $kv != !* ]] || { must=1; kv=${kv#!}; }
	f=/proc/sys/${kv%%=*}; f=${f//.//}
	if [[ -e $f ]]; then
		echo "${kv#*=}" >"$f" || exit 1
	elif [[ -n $must ]]; then
		echo "lab.sh: error: no sysctl ${kv%%=*} in $ns" >&2; exit 1
	fi
done
if [[ -n $LAB_NFT ]]; then
	nft -f - || { echo "lab.sh: error: loading nftables rules into $ns failed" >&2; exit 1; }
fi'

# ns_setup HOST NFT_RULES [KEY=VALUE...]: run the setup shell in HOST's
# namespace.
ns_setup() {
	local n=$PREFIX-$1 rules=$2; shift 2
	LAB_NFT=${rules:+1} ip netns exec "$n" bash -c "$NS_SETUP" setup "$n" "$@" <<<"$rules" ||
		die "setting up $n failed"
}

# ns_batch [IP_OPTION...] COMMANDS: the ip commands (one a line) in one process.
ns_batch() {
	local cmds=${*: -1}
	ip "${@:1:$#-1}" -batch - <<<"$cmds" ||
		die "ip ${*:1:$#-1} -batch failed; its lines:"$'\n'"$cmds"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF -- "$1"; }

# lab_namespaces: the names of this lab's namespaces that exist.
lab_namespaces() {
	local listed=" " name _ h
	while read -r name _; do listed+="$name "; done <<<"$(ip netns list)"
	for h in "${HOSTS[@]}"; do
		[[ $listed != *" $PREFIX-$h "* ]] || echo "$PREFIX-$h"
	done
}

# Bridged traffic must not go through the IP netfilter hooks (needs
# br_netfilter for the sysctls to exist; silently skipped otherwise).
readonly NO_BRIDGE_NF=(net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0)

# new_ns HOST [KEY=VALUE...]: a namespace with lo up, quiet IPv6 on the
# interfaces created later (no DAD, no router solicitations), and the
# sysctls given.
new_ns() {
	local host=$1; shift
	sysctls "$host" net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.dad_transmits=0 \
		net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.default.accept_ra=0 "$@"
	ip_cmd "$host" link set lo up
}

# veth HOST_A IF_A HOST_B IF_B: a pair created directly inside the two
# namespaces, so nothing ever appears (or clashes) in the root namespace.
veth() {
	root_link link add "$2" netns "$PREFIX-$1" type veth peer name "$4" netns "$PREFIX-$3"
}

add_bridge() {
	local host=$1 br=$2
	root_link link add "$br" netns "$PREFIX-$host" type bridge stp_state 0 forward_delay 0
	ip_cmd "$host" link set "$br" up
}

# Plug HOST's interface IFACE into the internet bridge (port name PREFIX-HOST).
attach_to_inet() {
	local host=$1 iface=$2 port="$PREFIX-$1"
	veth "$host" "$iface" inet "$port"
	ip_cmd inet link set "$port" master br0 up
	ip_cmd "$host" link set "$iface" up
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
			ip_cmd "$host" addr add "$a/$V6_LEN" dev eth0
		else
			ip_cmd "$host" addr add "$a/$PUB_NET_LEN" dev eth0
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
	NFT_RULES[$router]=$(nat_rules "$type")

	attach_to_inet "$router" wan
	ip_cmd "$router" addr add "$wan_addr/$PUB_NET_LEN" dev wan

	add_bridge "$router" lan
	ip_cmd "$router" addr add "$LAN_GW/24" dev lan
	if [[ -n $IPV6 ]]; then
		local lan6=$1 wan6=$2; shift 2
		LINK_STEPS+=("sysctl $router !net.ipv6.conf.all.forwarding=1")
		ip_cmd "$router" addr add "$wan6/$V6_LEN" dev wan
		ip_cmd "$router" addr add "${lan6}1/$V6_LEN" dev lan
	fi

	for spec in "$@"; do
		host=${spec%%=*} addr=${spec#*=} port="$PREFIX-$host"
		new_ns "$host"
		veth "$host" eth0 "$router" "$port"
		ip_cmd "$router" link set "$port" master lan up
		ip_cmd "$host" link set eth0 up
		ip_cmd "$host" addr add "$addr/24" dev eth0
		ip_cmd "$host" route add default via "$LAN_GW"
		if [[ -n $IPV6 ]]; then
			ip_cmd "$host" addr add "${lan6}${addr##*.}/$V6_LEN" dev eth0
			ip_cmd "$host" route add default via "${lan6}1"
		fi
	done
}

# IPv6 routes between the public side and the two LANs.
route_ipv6() {
	local h
	for h in rv pub; do
		ip_cmd "$h" route add 2001:db8:a::/64 via "${V6_PUB}21"
		ip_cmd "$h" route add 2001:db8:b::/64 via "${V6_PUB}22"
	done
	ip_cmd nata route add 2001:db8:b::/64 via "${V6_PUB}22"
	ip_cmd natb route add 2001:db8:a::/64 via "${V6_PUB}21"
}

# build_lab: run what the build_* functions queued, phase by phase.
build_lab() {
	local h step links="" host kv
	ns_batch "$(printf 'netns add %s\n' "${HOSTS[@]/#/$PREFIX-}")"
	for h in "${HOSTS[@]}"; do
		# shellcheck disable=SC2086 # KEY=VALUE words
		ns_setup "$h" "${NFT_RULES[$h]-}" ${SYSCTLS[$h]-}
	done
	for step in "${LINK_STEPS[@]}" end; do
		if [[ $step == "ip "* ]]; then
			links+=${step#ip }$'\n'
			continue
		fi
		[[ -z $links ]] || ns_batch "$links"
		links=""
		[[ $step == end ]] || { read -r _ host kv <<<"$step"; ns_setup "$host" "" "$kv"; }
	done
	for h in "${HOSTS[@]}"; do
		ns_batch -n "$PREFIX-$h" "${IP_CMDS[$h]}"
	done
}

# down_links HOST: set DOWN to HOST's links not operationally UP but lo,
# as " HOST:LINK(STATE)...".
down_links() {
	local links name state _
	links=$(ip -n "$PREFIX-$1" -br link show)
	DOWN=""
	while read -r name state _; do
		[[ $name == lo || $state == UP ]] || DOWN+=" $1:$name($state)"
	done <<<"$links"
}

# Poll (with a deadline) until every non-lo link in the lab is operationally
# UP. The hosts all up are not asked again, and a round stops at the first
# host with a link down: the links left down are the bridges, which the
# kernel brings UP together (in its linkwatch run, at most once a second).
wait_links_up() {
	local deadline=$((SECONDS + LINK_DEADLINE_S)) pending=("${HOSTS[@]}") h down DOWN
	while :; do
		while ((${#pending[@]})); do
			down_links "${pending[0]}"
			[[ -z $DOWN ]] || break
			pending=("${pending[@]:1}")
		done
		((${#pending[@]})) || return 0
		if ((SECONDS >= deadline)); then
			down=""
			for h in "${pending[@]}"; do down_links "$h"; down+=$DOWN; done
			[[ -z $down ]] || die "links not up after ${LINK_DEADLINE_S}s:$down"
		fi
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
	build_lab
	wait_links_up

	trap - EXIT INT TERM
	info "lab $PREFIX up (nata=$nat_a, natb=$nat_b${IPV6:+, ipv6})"
}

# pids_in NS...: the processes running inside the namespaces.
pids_in() {
	(($#)) || return 0
	ip -force -batch - 2>/dev/null <<<"$(printf 'netns pids %s\n' "$@")" || true
}

# Kill whatever still runs inside the namespaces (keeps them alive otherwise).
kill_ns_procs() {
	local pids deadline
	pids=$(pids_in "$@")
	[[ -n $pids ]] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	deadline=$((SECONDS + 2))
	while [[ -n $(pids_in "$@") ]] && ((SECONDS < deadline)); do
		sleep 0.05
	done
	pids=$(pids_in "$@")
	# shellcheck disable=SC2086
	[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_down_quiet() {
	local present
	mapfile -t present < <(lab_namespaces || true)
	((${#present[@]})) || return 0
	kill_ns_procs "${present[@]}"
	ip -force -batch - 2>/dev/null <<<"$(printf 'netns del %s\n' "${present[@]}")" || true
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
	ns_exists "$PREFIX-$host" || die "no namespace $PREFIX-$host (is lab $PREFIX up? hosts: ${HOSTS[*]})"
	exec ip netns exec "$PREFIX-$host" "$@"
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
