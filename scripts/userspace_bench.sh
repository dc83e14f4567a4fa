#!/usr/bin/env bash
# userspace_bench.sh — TCP throughput of userspace mode, beside TUN mode.
#
# Usage: scripts/userspace_bench.sh            (as root: all three paths)
#        scripts/userspace_bench.sh            (as a user: userspace<->userspace only)
#
# Two network namespaces, ns1 and ns2 (a veth pair between them, the
# rendezvous in ns1), each with a userspace peer (us1, us2) and, as root, a
# TUN peer (tun1, tun2), all in one network. iperf3's server runs in ns2,
# on loopback (reached through us2's Forward = tcp:5201) and on tun2's
# address; its client in ns1, through us1's HTTP proxy (socat turns a local
# port into a CONNECT: iperf3 knows no proxies) or straight over tun1:
#   us-us    us1 -> us2 (two gVisor stacks, two WireGuards)
#   us-tun   us1 -> tun2 (one stack)
#   tun-tun  tun1 -> tun2 (the kernel's TCP on both ends)
# Each is measured both ways (-R), BENCH_TIME seconds (5), BENCH_ROUNDS (3)
# rounds in turn, median shown; then the peak RSS (VmHWM) of us1 and us2.
# Without root the namespaces are a user namespace's (unshare -rn), one of
# them, and only us-us runs. socat's hop costs the userspace paths CPU that
# the TUN path does not pay: the figure is what a proxied client gets.
# BENCH_PROFILE=1 then profiles both userspace peers (CPU, BENCH_TIME s)
# during one more us-us run 1->2 and prints the top of each (go tool
# pprof -top; the profiles are left in the work directory, kept with
# BENCH_KEEP=1).
set -euo pipefail
[ -n "${USBENCH_TRACE:-}" ] && set -x
cd "$(dirname "$0")/.."
BENCH_TIME=${BENCH_TIME:-5}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
for tool in iperf3 socat; do
	command -v $tool >/dev/null || { echo "userspace_bench.sh: needs $tool" >&2; exit 1; }
done

if [ "${USBENCH_INSIDE:-}" = "" ]; then
	work=$(mktemp -d /tmp/punchtun-usbench.XXXXXX)
	go build -o "$work/punchtun" ./cmd/punchtun
	if [ "$(id -u)" = 0 ] && [ -z "${USBENCH_ROOTLESS:-}" ]; then
		export USBENCH_ROOT=1
		ip netns add ptus1; ip netns add ptus2
		trap 'ip netns pids ptus1 | xargs -r kill; ip netns pids ptus2 | xargs -r kill; sleep 0.5; ip netns del ptus1; ip netns del ptus2; rm -rf "$work"' EXIT
		ip link add ptus-a netns ptus1 type veth peer name ptus-b netns ptus2
		ip -n ptus1 addr add 10.99.0.1/24 dev ptus-a; ip -n ptus2 addr add 10.99.0.2/24 dev ptus-b
		for n in ptus1 ptus2; do ip -n $n link set lo up; done
		ip -n ptus1 link set ptus-a up; ip -n ptus2 link set ptus-b up
		USBENCH_INSIDE=1 WORK=$work "$0"
		exit
	fi
	[ -n "${BENCH_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
	# One user namespace's network: loopback only, both sides in it.
	USBENCH_INSIDE=1 WORK=$work unshare -rn bash -c 'ip link set lo up && exec "$0"' "$0"
	exit
fi

work=$WORK bin=$WORK/punchtun
# Every job is a subshell around its command (in1, in2): stop the
# command too, or in a user namespace (no namespace to delete) it lives on.
stop_all() {
	for p in $(jobs -p); do
		pkill -P "$p" 2>/dev/null
		kill "$p" 2>/dev/null
	done
}
trap stop_all EXIT
in1() { if [ -n "${USBENCH_ROOT:-}" ]; then ip netns exec ptus1 "$@"; else "$@"; fi; }
in2() { if [ -n "${USBENCH_ROOT:-}" ]; then ip netns exec ptus2 "$@"; else "$@"; fi; }
rdv=127.0.0.1:39478 far=127.0.0.1
[ -n "${USBENCH_ROOT:-}" ] && rdv=10.99.0.1:39478
cd "$work"
key() { "$bin" genkey; }
pub() { echo "$1" | "$bin" pubkey; }
rk=$(key); echo "$rk" > rdv.key
in1 "$bin" rendezvous --listen "$rdv" --listen-tcp off --alternate-port=false --key-file rdv.key --state-file - 2>rdv.log &
declare -A priv
for p in us1 us2 tun1 tun2; do priv[$p]=$(key); done
addr() { case $1 in us1) echo 100.64.0.1;; us2) echo 100.64.0.2;; tun1) echo 100.64.0.3;; tun2) echo 100.64.0.4;; esac; }
conf() { # name, extra [Interface] lines
	printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nRendezvous = %s\nRendezvousKey = %s\n%s\n' "${priv[$1]}" "$(addr $1)" "$rdv" "$(pub "$rk")" "$2" > $1.conf
	for q in us1 us2 tun1 tun2; do
		[ $q = $1 ] || printf '[Peer]\nName = %s\nPublicKey = %s\nAllowedIPs = %s/32\n' $q "$(pub "${priv[$q]}")" "$(addr $q)" >> $1.conf
	done
	chmod 600 $1.conf
}
conf us1 ""; conf us2 "Forward = tcp:5201=127.0.0.1:5201"
sleep 0.3
prof() { # the metrics flags of userspace peer $1, serving profiles under BENCH_PROFILE
	if [ -n "${BENCH_PROFILE:-}" ]; then echo "--metrics 127.0.0.1:1910$1"; fi
}
[ -n "${BENCH_PROFILE:-}" ] && export PUNCHTUN_PPROF=1
in1 "$bin" up --userspace --socks5 off --http-proxy 127.0.0.1:18080 $(prof 1) --run-dir "$work/run1" --state-dir - us1.conf 2>us1.log &
in2 "$bin" up --userspace --socks5 off $(prof 2) --run-dir "$work/run2" --state-dir - us2.conf 2>us2.log &
# A job, not a daemon (-D): a daemon would outlive a run cut short, and
# hold on to whatever it inherited (a lock around the run).
in2 iperf3 -s -p 5201 >/dev/null 2>&1 &
in1 socat TCP-LISTEN:15201,fork,reuseaddr,bind=127.0.0.1 PROXY:127.0.0.1:100.64.0.2:5201,proxyport=18080 2>/dev/null &
kinds="us-us"
if [ -n "${USBENCH_ROOT:-}" ]; then
	conf tun1 "MTU = 1280"; conf tun2 "MTU = 1280"
	in1 "$bin" up --run-dir "$work/run1" --state-dir - tun1.conf 2>tun1.log &
	in2 "$bin" up --run-dir "$work/run2" --state-dir - tun2.conf 2>tun2.log &
	in1 socat TCP-LISTEN:15202,fork,reuseaddr,bind=127.0.0.1 PROXY:127.0.0.1:100.64.0.4:5201,proxyport=18080 2>/dev/null &
	kinds="us-us us-tun tun-tun"
fi
# Wait for every path: an iperf3 of one second through each.
target() { case $1 in us-us) echo "127.0.0.1 15201";; us-tun) echo "127.0.0.1 15202";; tun-tun) echo "100.64.0.4 5201";; esac; }
for k in $kinds; do
	for i in $(seq 60); do
		set -- $(target $k)
		in1 timeout 5 iperf3 -c $1 -p $2 -t 1 >/dev/null 2>&1 && break
		[ $i = 60 ] && { echo "$k: no path within 30 s; logs in $work" >&2; cat "$work"/*.log >&2; exit 1; }
		sleep 0.5
	done
done
declare -A got
for r in $(seq "$BENCH_ROUNDS"); do
	for k in $kinds; do
		for dir in fwd rev; do
			set -- $(target $k)
			flag=""; [ $dir = rev ] && flag=-R
			mbps=$(in1 iperf3 -c $1 -p $2 -t "$BENCH_TIME" $flag -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
			got[$k-$dir]="${got[$k-$dir]:-} $mbps"
		done
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "TCP throughput, Mbit/s (median of $BENCH_ROUNDS rounds of ${BENCH_TIME}s; load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores)"
printf '%-8s %10s %10s\n' path "1->2" "2->1"
for k in $kinds; do
	printf '%-8s %10s %10s\n' $k "$(echo ${got[$k-fwd]} | median)" "$(echo ${got[$k-rev]} | median)"
done
if [ -n "${BENCH_PROFILE:-}" ]; then
	curls=""
	for i in 1 2; do
		in$i curl -s -o "$work/us$i.prof" "http://127.0.0.1:1910$i/debug/pprof/profile?seconds=$BENCH_TIME" &
		curls="$curls $!"
	done
	sleep 0.2
	set -- $(target us-us)
	echo "us-us 1->2 while profiled: $(in1 iperf3 -c $1 -p $2 -t "$BENCH_TIME" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))') Mbit/s"
	wait $curls
	for i in 1 2; do
		echo "== us$i ($([ $i = 1 ] && echo sender || echo receiver)), CPU (go tool pprof -top)"
		go tool pprof -top -nodecount=${BENCH_PROFILE_TOP:-25} "$bin" "$work/us$i.prof" 2>/dev/null | sed -n '4,$p'
	done
fi
for p in us1 us2; do
	pid=$(pgrep -f -- "--run-dir $work/run[12] --state-dir - $p.conf" | head -1)
	echo "$p peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
done
