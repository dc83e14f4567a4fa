#!/usr/bin/env bash
# bench.sh — punchtun against plain wireguard-go and the bare lab path (root).
#
# Usage: sudo scripts/bench.sh
#
# Builds punchtun and wireguard-go (the module version go.mod pins), brings up
# the lab (scripts/lab.sh, prefix ptb, easy NAT on both sides) and measures,
# between a1 (behind NAT A) and b1 (behind NAT B):
#   punchtun  punchtun's direct path, found through the rendezvous
#   wg        plain wireguard-go, fixed endpoints (each side the other's NAT
#             address, port 51820 on both: the easy NATs keep the port), so it
#             crosses the very hops punchtun's direct path does:
#             a1 -> NAT A (masquerade) -> internet bridge -> NAT B -> b1
#   raw       no tunnel: NAT B forwards iperf3's port 5201 and ICMP echo to b1
#             (an extra DNAT rule); same hops again, MTU 1500 instead of 1280
#   relay     punchtun between a2 (behind NAT A) and a second punchtun on b1,
#             with NAT A dropping a2's UDP to NAT B: the rendezvous relays
#   easyhard  punchtun's direct path from an easy NAT to a hard one, found by
#             birthday punching: a second lab (prefix ptbh, NAT A easy, NAT B
#             hard) with a rendezvous of its own, a1 <-> b1
#   turn      punchtun relayed through coturn (Debian's, on the public host):
#             in lab ptbh, a2 <-> b1 with NAT A dropping a2's UDP to NAT B;
#             that lab's rendezvous relays nothing itself (--relay=false) and
#             hands out the TURN server
#   member    punchtun's direct path between two members of a network (no
#             [Peer] sections: found on demand), a1 <-> b1, no policy
#   policy    the same with a 20-rule policy (Policy =), 19 rules that do not
#             match and a last that allows: every packet from a member is
#             judged (a flow's first by the rules, the rest by the flow
#             table); ratio policy/member is the filter's cost
#   base, basehard, baserelay, baseturn
#             only when BENCH_BASELINE names another punchtun binary (the
#             code before a change, say): its direct path (a1 <-> b1, lab
#             ptb), its easy/hard path (lab ptbh), its path through the
#             rendezvous's relay (a2 <-> b1, lab ptb) and through coturn
#             (a2 <-> b1, lab ptbh), each on the same hosts, rendezvous and
#             coturn as this build's path and beside it in the same rounds,
#             so that the two builds are compared under the same drift;
#             ratios punchtun/base, easyhard/basehard, relay/baserelay and
#             turn/baseturn, and the baseline peers' memory beside this
#             build's
#   nebula    only when NEBULA names a nebula binary (nebula-cert beside it,
#             or NEBULA_CERT): Nebula between a1 and b1 in lab ptb, each
#             side the other's NAT address in static_host_map (port 51829
#             on both, kept by the easy NATs), no lighthouse: the same hops
#             as the wg path; socket buffers 7 MiB as wireguard-go's and
#             punchtun's (Nebula's default is the system's, 208 KiB), its
#             defaults otherwise (GSO/GRO and TUN offloads on, 1 routine),
#             tun MTU 1280
# Each round runs every path in turn (punchtun, wg, raw, relay, punchtun, ...)
# so that drift hits all of them; a figure is the median over the rounds. Per
# path: TCP throughput a->b and b->a (iperf3), UDP throughput a->b (iperf3 -u,
# received rate and loss), ping RTT (average of PINGS pings). Then the
# resident memory (VmRSS) of the tunnel processes of every path but member
# and policy: idle (connected, before any load), after the first round (one
# 5 s iperf3 run per direction plus UDP) and at the end, and the peak (VmHWM)
# over the whole run; the ratios' peak columns divide the two paths' peaks,
# a side by a side. Then, unless BENCH_CONNECT=0, scripts/connect_time.sh.
#
# Environment: BENCH_TIME (iperf3 seconds, 5), BENCH_ROUNDS (3), BENCH_UDP_RATE
# (iperf3 -b, 10G), BENCH_UDP_LEN (datagram size, 1200: fits MTU 1280),
# PUNCHTUN_BIN (a built punchtun to use instead of building one), BENCH_BASELINE (another punchtun to measure beside it: base, basehard, baserelay, baseturn), BENCH_KEEP (set: keep the work directory with the logs), BENCH_PINGS (50), BENCH_KINDS (the paths to measure, "punchtun wg raw relay";
# ratios of absent paths print NA), BENCH_CONNECT (1), PUNCHTUN_GOMEMLIMIT (unset: passed to
# the punchtun peers as GOMEMLIMIT when set), BENCH_UDP (0: no UDP test, so
# that the peak memory is TCP's), PUNCHTUN_GOGC (likewise, GOGC), BENCH_PROFILE (set: after the
# rounds, a CPU profile of both direct-path peers during one more TCP a->b
# run, its top entries printed; the peers serve /debug/pprof/ on loopback
# for it, PUNCHTUN_PPROF=1; BENCH_PROFILE=easyhard: the easy/hard pair's
# peers instead; BENCH_PROFILE_TOP: entries shown, 15).
set -euo pipefail

cd "$(dirname "$0")/.."
NAME=bench
PREFIX=ptb
HPREFIX=ptbh
T=${BENCH_TIME:-5}
ROUNDS=${BENCH_ROUNDS:-3}
UDP_RATE=${BENCH_UDP_RATE:-10G}
UDP_LEN=${BENCH_UDP_LEN:-1200}
PINGS=${BENCH_PINGS:-50}
WORK=$(mktemp -d /tmp/ptb-bench.XXXXXX)
KEEP=${BENCH_KEEP-}
. scripts/labkit.sh

if [ -n "${NEBULA-}" ]; then
	NEBULA_CERT=${NEBULA_CERT:-$(dirname "$NEBULA")/nebula-cert}
	[ -x "$NEBULA" ] && [ -x "$NEBULA_CERT" ] || die "NEBULA=$NEBULA: want nebula and nebula-cert (NEBULA_CERT) binaries"
fi
if [ -n "${BENCH_BASELINE-}" ]; then
	[ -x "$BENCH_BASELINE" ] || die "BENCH_BASELINE=$BENCH_BASELINE: not an executable punchtun"
fi
for c in iperf3 jq nft wg ping turnserver ${BENCH_PROFILE:+curl}; do command -v $c >/dev/null || die "$c not found"; done

echo "== building"
BIN=${PUNCHTUN_BIN:-$WORK/punchtun} WGBIN=$WORK/wireguard-go
[ -n "${PUNCHTUN_BIN-}" ] || go build -o "$BIN" ./cmd/punchtun
go build -o "$WGBIN" golang.zx2c4.com/wireguard
WGVER=$(go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)

echo "== lab $PREFIX: a1, a2 behind easy NAT A; b1 behind easy NAT B; lab $HPREFIX: a1 behind easy NAT A, b1 behind hard NAT B"
eval "lab_$(declare -f stop_all)"
stop_all() { lab_stop_all; "$LAB" down "$HPREFIX" >/dev/null 2>&1 || true; }
"$LAB" up "$PREFIX" easy easy
"$LAB" up "$HPREFIX" easy hard

# raw path: NAT B forwards iperf3 and ping to b1.
in_ns natb nft add rule ip nat prerouting iifname wan meta l4proto '{ tcp, udp }' th dport 5201 dnat to 192.168.1.2
in_ns natb nft add rule ip nat prerouting iifname wan icmp type echo-request dnat to 192.168.1.2
in_ns natb nft insert rule inet filter forward ct status dnat accept
# relay path: NAT A drops a2's UDP to NAT B (the rendezvous stays reachable);
# the same in the other lab for the TURN path.
in_ns nata nft insert rule inet filter forward ip saddr 192.168.1.3 ip daddr 203.0.113.22 meta l4proto udp drop
ip netns exec "$HPREFIX-nata" nft insert rule inet filter forward ip saddr 192.168.1.3 ip daddr 203.0.113.22 meta l4proto udp drop

# No tunnel inside a tunnel: punchtun lists every local address as a LAN
# candidate, the plain WireGuard tunnel's too, and a LAN path wins: without
# this, punchtun would end up running inside the wireguard-go tunnel. The
# tunnels' sockets use ports 51820-51841; nothing goes there through a tunnel.
for ns in "$PREFIX"-{a1,a2,b1} "$HPREFIX"-{a1,a2,b1}; do
	ip netns exec "$ns" nft -f - <<-'EOF'
	table inet ptbbench {
		chain output {
			type filter hook output priority filter; policy accept;
			oifname { "ptbwga", "ptbwgb", "ptbpa", "ptbpb", "ptbma", "ptbmb", "ptbna", "ptbnb", "ptbra", "ptbrb", "ptbha", "ptbhb", "ptbta", "ptbtb", "ptbnba", "ptbnbb", "ptbqa", "ptbqb", "ptbga", "ptbgb", "ptbsa", "ptbsb", "ptbua", "ptbub" } udp dport 51820-51841 drop
		}
	}
	EOF
done

echo "== rendezvous at 203.0.113.10:3478 in each lab: relay on in $PREFIX; in $HPREFIX relay off, coturn at 203.0.113.20:3478 handed out"
MAINPREFIX=$PREFIX PREFIX=$HPREFIX WORK=$WORK/h
mkdir -p "$WORK"
echo bench-secret >"$WORK/turn-secret"
start_coturn bench-secret
start_rendezvous "$BIN" --relay=false --turn turn:203.0.113.20:3478 --turn-secret-file "$WORK/turn-secret"
HRVPUB=$RVPUB PREFIX=$MAINPREFIX WORK=${WORK%/h}
start_rendezvous "$BIN"

for k in pa pb ra rb wa wb ha hb ta tb qa qb ga gb sa sb ua ub ma mb na nb; do "$BIN" genkey >"$WORK/$k.key"; done
pub() { "$BIN" pubkey <"$WORK/$1.key"; }

# pt_conf NAME KEY ADDR PEERKEY PEERADDR PORT
pt_conf() { write_conf "$WORK/$1.conf" "$WORK/$2.key" "$3" "$(pub "$4")" "$5" "$6"; }
pt_conf ptbpa pa 100.64.0.1 pb 100.64.0.2 51821
pt_conf ptbpb pb 100.64.0.2 pa 100.64.0.1 51822
pt_conf ptbra ra 100.65.0.1 rb 100.65.0.2 51823
pt_conf ptbrb rb 100.65.0.2 ra 100.65.0.1 51824
pt_conf ptbqa qa 100.68.0.1 qb 100.68.0.2 51830
pt_conf ptbqb qb 100.68.0.2 qa 100.68.0.1 51831
pt_conf ptbsa sa 100.72.0.1 sb 100.72.0.2 51838
pt_conf ptbsb sb 100.72.0.2 sa 100.72.0.1 51839
RVPUB_MAIN=$RVPUB RVPUB=$HRVPUB
pt_conf ptbha ha 100.66.0.1 hb 100.66.0.2 51825
pt_conf ptbhb hb 100.66.0.2 ha 100.66.0.1 51826
pt_conf ptbta ta 100.67.0.1 tb 100.67.0.2 51827
pt_conf ptbtb tb 100.67.0.2 ta 100.67.0.1 51828
pt_conf ptbga ga 100.69.0.1 gb 100.69.0.2 51832
pt_conf ptbgb gb 100.69.0.2 ga 100.69.0.1 51833
pt_conf ptbua ua 100.73.0.1 ub 100.73.0.2 51840
pt_conf ptbub ub 100.73.0.2 ua 100.73.0.1 51841
RVPUB=$RVPUB_MAIN

# Members of a network (member, policy): certificates of the group bench;
# the policy's 19 first rules name other groups, its last allows bench.
"$BIN" network new >"$WORK/net.key"
chmod 600 "$WORK/net.key"
NETPUB=$("$BIN" network pub <"$WORK/net.key")
for ((i = 1; i <= 19; i++)); do printf '[Rule]\nFrom = group:g%d\nTo = group:h%d\nAllow = tcp/%d, udp/%d\n\n' $i $i $((1000 + i)) $((2000 + i)); done >"$WORK/rules.ini"
printf '[Rule]\nFrom = group:bench\nTo = group:bench\nAllow = any\n' >>"$WORK/rules.ini"
"$BIN" network policy --key "$WORK/net.key" "$WORK/rules.ini" >"$WORK/policy.doc"
# member_conf NAME KEY ADDR PORT [POLICY]
member_conf() {
	{
		echo "[Interface]"
		echo "PrivateKey = $(cat "$WORK/$2.key")"
		echo "ListenPort = $4"
		echo "Rendezvous = 203.0.113.10:3478"
		echo "RendezvousKey = $RVPUB"
		echo "Network = $NETPUB"
		echo "Certificate = $("$BIN" network sign --key "$WORK/net.key" --name "$1" --address "$3/24" --group bench "$(pub "$2")" 2>/dev/null)"
		[ -n "${5-}" ] && echo "Policy = $5"
	} >"$WORK/$1.conf"
	chmod 600 "$WORK/$1.conf"
}
member_conf ptbma ma 100.70.0.1 51834
member_conf ptbmb mb 100.70.0.2 51835
member_conf ptbna na 100.71.0.1 51836 "$WORK/policy.doc"
member_conf ptbnb nb 100.71.0.2 51837 "$WORK/policy.doc"

declare -A PID
MEMPROCS=() # the tunnel processes whose memory is reported
declare -A PPROF=([ptbpa]=127.0.0.1:9111 [ptbpb]=127.0.0.1:9112 [ptbha]=127.0.0.1:9113 [ptbhb]=127.0.0.1:9114)
# Each path's tunnel processes (its a side, then its b side on b1), the
# namespace its measurements start from (the a side's) and the address they
# go to (the b side's in the tunnel).
declare -A PROCS=([punchtun]="ptbpa ptbpb" [wg]="ptbwga ptbwgb" [relay]="ptbra ptbrb" [easyhard]="ptbha ptbhb" [turn]="ptbta ptbtb" [nebula]="ptbnba ptbnbb" [member]="ptbma ptbmb" [policy]="ptbna ptbnb" [base]="ptbqa ptbqb" [basehard]="ptbga ptbgb" [baserelay]="ptbsa ptbsb" [baseturn]="ptbua ptbub")
declare -A SRC=([punchtun]=$PREFIX-a1 [wg]=$PREFIX-a1 [raw]=$PREFIX-a1 [relay]=$PREFIX-a2 [easyhard]=$HPREFIX-a1 [turn]=$HPREFIX-a2 [nebula]=$PREFIX-a1 [member]=$PREFIX-a1 [policy]=$PREFIX-a1 [base]=$PREFIX-a1 [basehard]=$HPREFIX-a1 [baserelay]=$PREFIX-a2 [baseturn]=$HPREFIX-a2)
declare -A DST=([punchtun]=100.64.0.2 [wg]=10.99.0.2 [raw]=203.0.113.22 [relay]=100.65.0.2 [easyhard]=100.66.0.2 [turn]=100.67.0.2 [nebula]=10.98.0.2 [member]=100.70.0.2 [policy]=100.71.0.2 [base]=100.68.0.2 [basehard]=100.69.0.2 [baserelay]=100.72.0.2 [baseturn]=100.73.0.2)
# The path each pair of static peers must be on before it is measured; a
# baseline path must be on its counterpart's, this build's path it stands
# beside.
declare -A WANT=([punchtun]=direct [easyhard]=direct [relay]="relay via 203.0.113.10:3478" [turn]="relay via turn:203.0.113.20:3478")
BASE_KINDS="base basehard baserelay baseturn"
declare -A COUNTERPART=([base]=punchtun [basehard]=easyhard [baserelay]=relay [baseturn]=turn)
# [PT_BIN=binary] pt_up HOST IFACE [LAB-PREFIX]
pt_up() {
	local env=(env) flags=()
	[ -n "${PUNCHTUN_GOMEMLIMIT-}" ] && env+=("GOMEMLIMIT=$PUNCHTUN_GOMEMLIMIT")
	[ -n "${PUNCHTUN_GOGC-}" ] && env+=("GOGC=$PUNCHTUN_GOGC")
	if [ -n "${BENCH_PROFILE-}" ] && [ -n "${PPROF[$2]-}" ]; then
		env+=(PUNCHTUN_PPROF=1)
		flags=(--metrics "${PPROF[$2]}")
	fi
	ip netns exec "${3:-$PREFIX}-$1" "${env[@]}" "${PT_BIN:-$BIN}" up "$WORK/$2.conf" --run-dir "$WORK/run" --state-dir - "${flags[@]}" 2>"$WORK/$2.log" &
	PIDS+=($!)
	PID[$2]=$!
}
# pt_path NAMESPACE IFACE -> the path IFACE's peer is on: "direct", "relay
# via" the relay (a rendezvous's address, a TURN server's URI), ...
pt_path() { ip netns exec "$1" "$BIN" status "$2" --json --run-dir "$WORK/run" | jq -r '.peers[0] | .path + (if .via then " via " + .via else "" end)'; }
path_is() { [ "$(pt_path "$1" "$2" 2>/dev/null)" = "$3" ]; }
ping1() { in_ns "$1" ping -c 1 -W 1 "$2"; }
# [PT_BIN=binary] pairs_up KIND...: starts each KIND's two peers (PROCS: the
# a side on SRC's host, the b side on b1 of the same lab), then waits until
# both sides of each are on the path WANT and a ping crosses.
pairs_up() {
	local k a b lab want
	for k; do
		read -r a b <<<"${PROCS[$k]}"
		lab=${SRC[$k]%-*}
		pt_up "${SRC[$k]##*-}" "$a" "$lab"
		pt_up b1 "$b" "$lab"
	done
	for k; do
		read -r a b <<<"${PROCS[$k]}"
		want=${WANT[${COUNTERPART[$k]:-$k}]}
		wait_for "$k: ${SRC[$k]} on path $want" 30 path_is "${SRC[$k]}" "$a" "$want"
		wait_for "$k: ${SRC[$k]%-*}-b1 on path $want" 30 path_is "${SRC[$k]%-*}-b1" "$b" "$want"
		wait_for "ping over $k" 10 ip netns exec "${SRC[$k]}" ping -c 1 -W 1 "${DST[$k]}"
	done
}

echo "== punchtun: a1 <-> b1 (direct), a2 <-> b1 (relayed)"
pairs_up punchtun relay

echo "== punchtun members: a1 <-> b1 without a policy (member), and with a 20-rule one (policy)"
pt_up a1 ptbma
pt_up b1 ptbmb
pt_up a1 ptbna
pt_up b1 ptbnb
wait_for "member ping" 10 ping1 a1 100.70.0.2
wait_for "member ping back" 10 ping1 b1 100.70.0.1
wait_for "policy member ping" 10 ping1 a1 100.71.0.2
wait_for "policy member ping back" 10 ping1 b1 100.71.0.1
wait_for "member direct" 20 path_is "$PREFIX-a1" ptbma direct
wait_for "policy member direct" 20 path_is "$PREFIX-a1" ptbna direct
policy_seq() { ip netns exec "$PREFIX-$1" "$BIN" status "$2" --json --run-dir "$WORK/run" | jq -r '.network.policy.seq // 0'; }
[ "$(policy_seq b1 ptbnb)" != 0 ] || die "the policy members enforce no policy"

echo "== punchtun, lab $HPREFIX: a1 (easy NAT) <-> b1 (hard NAT), birthday-punched"
pairs_up easyhard
echo "== punchtun, lab $HPREFIX: a2 <-> b1 through coturn"
pairs_up turn

if [ -n "${BENCH_BASELINE-}" ]; then
	# The baseline's pairs are distinct peers (interfaces ptbq*, ptbs*,
	# ptbg*, ptbu*) on the same hosts as this build's, through the same NATs,
	# rendezvous and coturn, and all of them stay up the whole run: one path
	# is loaded at a time, the others only keep alive, so each build's relay
	# and TURN paths get the same servers, idle but for the other pairs'
	# keepalives, and the peak memory of either covers every round. Starting
	# each pair only for its turn would instead measure the builds on
	# servers of different ages and cost a reconnection per path and round.
	echo "== baseline punchtun $BENCH_BASELINE: the same pairs, started the same way"
	PT_BIN=$BENCH_BASELINE pairs_up base baserelay
	PT_BIN=$BENCH_BASELINE pairs_up basehard
	PT_BIN=$BENCH_BASELINE pairs_up baseturn
	for k in $BASE_KINDS; do read -r -a procs <<<"${PROCS[$k]}" && MEMPROCS+=("${procs[@]}"); done
fi

echo "== plain wireguard-go $WGVER: a1 <-> b1, endpoints 203.0.113.22:51820 / 203.0.113.21:51820"
# wg_up HOST IFACE KEY ADDR PEERKEY PEERADDR ENDPOINT
wg_up() {
	ip netns exec "$PREFIX-$1" env WG_PROCESS_FOREGROUND=1 "$WGBIN" -f "$2" >"$WORK/$2.log" 2>&1 &
	PIDS+=($!)
	PID[$2]=$!
	wait_for "wireguard-go $2" 5 test -S "/var/run/wireguard/$2.sock"
	cat >"$WORK/$2.conf" <<EOF
[Interface]
PrivateKey = $(cat "$WORK/$3.key")
ListenPort = 51820

[Peer]
PublicKey = $(pub "$5")
AllowedIPs = $6/32
Endpoint = $7
PersistentKeepalive = 25
EOF
	in_ns "$1" wg setconf "$2" "$WORK/$2.conf"
	in_ns "$1" ip addr add "$4/24" dev "$2"
	in_ns "$1" ip link set "$2" mtu 1280 up
}
wg_up a1 ptbwga wa 10.99.0.1 wb 10.99.0.2 203.0.113.22:51820
wg_up b1 ptbwgb wb 10.99.0.2 wa 10.99.0.1 203.0.113.21:51820
# Each side's first packet opens its own NAT for the other's: ping both ways.
wg_ping() { ping1 b1 10.99.0.1 || ping1 a1 10.99.0.2; }
wait_for "ping over wireguard-go" 20 wg_ping
wait_for "ping over wireguard-go a1->b1" 10 ping1 a1 10.99.0.2

if [ -n "${NEBULA-}" ]; then
	echo "== Nebula ($("$NEBULA" -version 2>&1 | head -1)): a1 <-> b1, static_host_map 203.0.113.22:51829 / 203.0.113.21:51829"
	"$NEBULA_CERT" ca -name ptb-bench -out-crt "$WORK/nb-ca.crt" -out-key "$WORK/nb-ca.key"
	# nb_up HOST IFACE NAME ADDR PEERADDR PEERENDPOINT
	nb_up() {
		"$NEBULA_CERT" sign -ca-crt "$WORK/nb-ca.crt" -ca-key "$WORK/nb-ca.key" -name "$3" -networks "$4/24" \
			-out-crt "$WORK/$2.crt" -out-key "$WORK/$2.key"
		cat >"$WORK/$2.yml" <<EOF
pki: {ca: $WORK/nb-ca.crt, cert: $WORK/$2.crt, key: $WORK/$2.key}
static_host_map: {"$5": ["$6"]}
lighthouse: {am_lighthouse: false}
listen: {host: 0.0.0.0, port: 51829, read_buffer: 7340032, write_buffer: 7340032}
punchy: {punch: true}
tun: {dev: $2, mtu: 1280}
logging: {level: warning}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
EOF
		ip netns exec "$PREFIX-$1" "$NEBULA" -config "$WORK/$2.yml" >"$WORK/$2.log" 2>&1 &
		PIDS+=($!)
		PID[$2]=$!
	}
	nb_up a1 ptbnba a 10.98.0.1 10.98.0.2 203.0.113.22:51829
	nb_up b1 ptbnbb b 10.98.0.2 10.98.0.1 203.0.113.21:51829
	nb_ping() { ping1 b1 10.98.0.1 || ping1 a1 10.98.0.2; }
	wait_for "ping over Nebula" 20 nb_ping
	wait_for "ping over Nebula a1->b1" 10 ping1 a1 10.98.0.2
	MEMPROCS+=(ptbnba ptbnbb)
fi

wait_for "raw ping" 5 ping1 a1 203.0.113.22

for ns in "$PREFIX-b1" "$HPREFIX-b1"; do
	ip netns exec "$ns" iperf3 -s >"$WORK/iperf3-$ns.log" 2>&1 &
	PIDS+=($!)
	wait_for "iperf3 server in $ns" 5 ip netns exec "$ns" sh -c "ss -Hltn 'sport = :5201' | grep -q 5201"
done

rss() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/${PID[$1]}/status"; }
hwm() { awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/${PID[$1]}/status"; }
declare -A RSS_IDLE RSS_R1 RSS_END RSS_PEAK
MEMPROCS=(ptbpa ptbpb ptbwga ptbwgb ptbha ptbhb ptbra ptbrb ptbta ptbtb "${MEMPROCS[@]}")
for p in "${MEMPROCS[@]}"; do RSS_IDLE[$p]=$(rss $p); done

# cpu_ms KIND -> CPU time (user + system, ms) used so far by both of the
# path's tunnel processes; the column "cpu" is what they used per gigabit
# carried during the TCP a->b run (ms/Gbit): the cost of the data path,
# which throughput alone hides on a machine whose cores iperf3 and the
# kernel's forwarding share. The raw path has none.
HZ=$(getconf CLK_TCK) # /proc/PID/stat's unit
cpu_ms() {
	local total=0 p
	[ -n "${PROCS[$1]-}" ] || { echo NA; return; }
	for p in ${PROCS[$1]}; do
		total=$((total + $(awk -v hz="$HZ" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/${PID[$p]}/stat")))
	done
	echo $total
}
# iperf_tcp NAMESPACE IP [-R] -> Mbit/s received
iperf_tcp() {
	local h=$1 ip=$2; shift 2
	timeout $((T + 20)) ip netns exec "$h" iperf3 -c "$ip" -t "$T" -J "$@" 2>/dev/null |
		jq -r '.end.sum_received.bits_per_second / 1e6 | floor' 2>/dev/null || echo NA
}
# iperf_udp NAMESPACE IP -> "Mbit/s-received loss%"
iperf_udp() {
	timeout $((T + 20)) ip netns exec "$1" iperf3 -c "$2" -u -b "$UDP_RATE" -l "$UDP_LEN" -t "$T" -J 2>/dev/null |
		tee "$WORK/udp-$1-$2.json" | jq -r '.end.sum as $s | "\(($s.packets - $s.lost_packets) * '"$UDP_LEN"' * 8 / $s.seconds / 1e6 | floor) \($s.lost_percent * 10 | round / 10)"' 2>/dev/null || echo "NA NA"
}
# rtt NAMESPACE IP -> average ms
rtt() {
	ip netns exec "$1" ping -c "$PINGS" -i 0.05 -q "$2" 2>/dev/null | awk -F/ '/^rtt/{print $5}' | grep . || echo NA
}

read -r -a KINDS <<<"${BENCH_KINDS:-punchtun wg raw relay easyhard turn member policy${NEBULA:+ nebula}${BENCH_BASELINE:+ $BASE_KINDS}}"
declare -A RES # RES[kind,metric] = space-separated values, one per round

echo
echo "== $ROUNDS rounds; iperf3 -t $T; UDP -b $UDP_RATE -l $UDP_LEN; $PINGS pings at 0.05 s"
printf '%-5s %-8s %10s %10s %10s %7s %8s %8s\n' round path "tcp a>b" "tcp b>a" "udp rx" "loss%" "rtt ms" "cpu"
for ((r = 1; r <= ROUNDS; r++)); do
	for k in "${KINDS[@]}"; do
		s=${SRC[$k]} d=${DST[$k]}
		c0=$(cpu_ms $k)
		fwd=$(iperf_tcp "$s" "$d")
		cpu=$(awk -v c0="$c0" -v c1="$(cpu_ms $k)" -v m="$fwd" -v t="$T" 'BEGIN { if (c0 == "NA" || m == "NA" || m == 0) print "NA"; else printf "%.0f", (c1 - c0) / (m * t / 1000) }')
		rev=$(iperf_tcp "$s" "$d" -R)
		udp=NA loss=NA
		[ "${BENCH_UDP:-1}" = 0 ] || read -r udp loss <<<"$(iperf_udp "$s" "$d")"
		ms=$(rtt "$s" "$d")
		RES[$k,fwd]+="$fwd " RES[$k,rev]+="$rev " RES[$k,udp]+="$udp " RES[$k,loss]+="$loss " RES[$k,rtt]+="$ms " RES[$k,cpu]+="$cpu "
		note=""
		[ -n "${WANT[${COUNTERPART[$k]:-$k}]-}" ] && note="path $(pt_path "${SRC[$k]}" "${PROCS[$k]%% *}")"
		printf '%-5s %-8s %10s %10s %10s %7s %8s %8s  %s\n' "$r" "$k" "$fwd" "$rev" "$udp" "$loss" "$ms" "$cpu" "$note"
	done
	if ((r == 1)); then
		for p in "${MEMPROCS[@]}"; do RSS_R1[$p]=$(rss $p); done
	fi
done
for p in "${MEMPROCS[@]}"; do RSS_END[$p]=$(rss $p) RSS_PEAK[$p]=$(hwm $p); done

median() { tr ' ' '\n' | { grep -v -e '^NA$' -e '^$' || true; } | sort -g | awk '{v[NR]=$1} END {if (!NR) print "NA"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b }'; }
declare -A MED
for k in "${KINDS[@]}"; do
	for m in fwd rev udp loss rtt cpu; do MED[$k,$m]=$(median <<<"${RES[$k,$m]}"); done
done

echo
echo "== medians over $ROUNDS rounds (Mbit/s; RTT ms)"
printf '%-8s %10s %10s %10s %7s %8s %8s\n' path "tcp a>b" "tcp b>a" "udp rx" "loss%" "rtt ms" "cpu"
for k in "${KINDS[@]}"; do
	printf '%-8s %10s %10s %10s %7s %8s %8s\n' "$k" "${MED[$k,fwd]}" "${MED[$k,rev]}" "${MED[$k,udp]}" "${MED[$k,loss]}" "${MED[$k,rtt]}" "${MED[$k,cpu]}"
done
echo
# peaks KIND -> the peak memory (MiB) of KIND's a side and b side, NA where
# it was not measured
peaks() {
	local p out=()
	for p in ${PROCS[$1]-}; do out+=("${RSS_PEAK[$p]:-NA}"); done
	echo "${out[0]:-NA} ${out[1]:-NA}"
}
pairs=("punchtun/wg punchtun wg" "punchtun/raw punchtun raw" "wg/raw wg raw" "relay/punchtun relay punchtun" "easyhard/punchtun easyhard punchtun" "turn/punchtun turn punchtun" "turn/relay turn relay" "nebula/wg nebula wg" "punchtun/nebula punchtun nebula" "policy/member policy member" "member/punchtun member punchtun")
for k in $BASE_KINDS; do pairs+=("${COUNTERPART[$k]}/$k ${COUNTERPART[$k]} $k"); done
echo "== ratios                  tcp a>b  tcp b>a   udp rx    rtt  peak a  peak b"
for pair in "${pairs[@]}"; do
	read -r name a b <<<"$pair"
	read -r peak_a peak_b <<<"$(peaks "$a")"
	read -r over_a over_b <<<"$(peaks "$b")"
	printf '%-25s %8s %8s %8s %6s %7s %7s\n' "$name" "$(ratio "${MED[$a,fwd]:-NA}" "${MED[$b,fwd]:-NA}")" "$(ratio "${MED[$a,rev]:-NA}" "${MED[$b,rev]:-NA}")" \
		"$(ratio "${MED[$a,udp]:-NA}" "${MED[$b,udp]:-NA}")" "$(ratio "${MED[$a,rtt]:-NA}" "${MED[$b,rtt]:-NA}")" "$(ratio "$peak_a" "$over_a")" "$(ratio "$peak_b" "$over_b")"
done
echo
echo "== resident memory (VmRSS, MiB; peak: VmHWM over the run)"
printf '%-24s %8s %10s %8s %8s\n' process idle "round 1" end peak
for p in "${MEMPROCS[@]}"; do
	case $p in
		ptbpa) n="punchtun a1" ;; ptbpb) n="punchtun b1" ;; ptbwga) n="wireguard-go a1" ;; ptbwgb) n="wireguard-go b1" ;;
		ptbha) n="punchtun a1 (easy)" ;; ptbhb) n="punchtun b1 (hard)" ;;
		ptbra) n="punchtun a2 (relay)" ;; ptbrb) n="punchtun b1 (relay)" ;; ptbta) n="punchtun a2 (TURN)" ;; ptbtb) n="punchtun b1 (TURN)" ;;
		ptbnba) n="nebula a1" ;; ptbnbb) n="nebula b1" ;;
		ptbqa) n="baseline a1" ;; ptbqb) n="baseline b1" ;;
		ptbga) n="baseline a1 (easy)" ;; ptbgb) n="baseline b1 (hard)" ;;
		ptbsa) n="baseline a2 (relay)" ;; ptbsb) n="baseline b1 (relay)" ;; ptbua) n="baseline a2 (TURN)" ;; ptbub) n="baseline b1 (TURN)" ;;
	esac
	printf '%-24s %8s %10s %8s %8s\n' "$n" "${RSS_IDLE[$p]}" "${RSS_R1[$p]}" "${RSS_END[$p]}" "${RSS_PEAK[$p]}"
done
if [ -n "${BENCH_PROFILE-}" ]; then
	# BENCH_PROFILE=easyhard profiles the birthday-punched pair instead.
	pa=ptbpa pb=ptbpb lab=$PREFIX dst=100.64.0.2
	[ "$BENCH_PROFILE" = easyhard ] && pa=ptbha pb=ptbhb lab=$HPREFIX dst=100.66.0.2
	echo
	echo "== CPU profiles of the $([ $pa = ptbha ] && echo easy/hard || echo direct) path's peers during iperf3 -t $T a->b (go tool pprof -top)"
	cpids=()
	for p in $pa $pb; do
		h=a1
		[ $p = $pb ] && h=b1
		ip netns exec "$lab-$h" curl -s -o "$WORK/$p.prof" "http://${PPROF[$p]}/debug/pprof/profile?seconds=$T" &
		cpids+=($!)
	done
	# Halfway through, what the heap holds: the peak is live buffers.
	(
		sleep $((T / 2 + 1))
		ip netns exec "$lab-a1" curl -s -o "$WORK/$pa.heap" "http://${PPROF[$pa]}/debug/pprof/heap"
		ip netns exec "$lab-b1" curl -s -o "$WORK/$pb.heap" "http://${PPROF[$pb]}/debug/pprof/heap"
	) &
	cpids+=($!)
	sleep 0.2
	echo "throughput while profiled: $(iperf_tcp "$lab-a1" $dst) Mbit/s"
	wait "${cpids[@]}"
	for p in $pa $pb; do
		echo "-- $p ($([ $p = $pa ] && echo sender a1 || echo receiver b1)): CPU"
		go tool pprof -top -nodecount=${BENCH_PROFILE_TOP:-15} "$BIN" "$WORK/$p.prof" 2>/dev/null | sed -n '4,$p'
		echo "-- $p: heap in use halfway"
		go tool pprof -top -sample_index=inuse_space -nodecount=6 "$BIN" "$WORK/$p.heap" 2>/dev/null | sed -n '4,$p'
	done
fi
echo
echo "machine: $(nproc) cores, $(uname -sr), $(go version | awk '{print $3}'), wireguard-go $WGVER, GOMEMLIMIT for punchtun: ${PUNCHTUN_GOMEMLIMIT:-unset}, GOGC: ${PUNCHTUN_GOGC:-unset}"

stop_all
if [ "${BENCH_CONNECT:-1}" != 0 ]; then
	echo
	PUNCHTUN_BIN=$BIN scripts/connect_time.sh
fi

