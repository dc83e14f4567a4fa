#!/usr/bin/env bash
# natmatrix.sh — connect every pair of network kinds in the lab and print
# a table: the path each side reached, the time from `up` to the first ping
# through the tunnel (median and worst), and why a relayed side is relayed.
#
#   sudo scripts/natmatrix.sh            # easy/hard 10 times, the rest once
#   sudo REPEAT=20 scripts/natmatrix.sh  # easy/hard 20 times
#
# Kinds: none (a public host), easy, hard (a port per destination), cone (a
# forwarded port), same LAN, blocked (no UDP out); and IPv6 behind two hard
# IPv4 NATs; hard/hard with one router (miniupnpd) mapping a port, over
# each protocol. The pairs, and the paths they must reach, are the end-to-end
# tests TestTunnel, TestNATMatrix, TestIPv6 and TestPortMappingHardHard in
# cmd/punchtun; this script
# runs them with PUNCHTUN_MATRIX_OUT set, and the
# test binary prints the table from what each pair recorded. Each pair also
# moves 10 MiB over nc and checks it arrived intact. Exit status: 0 when
# every attempt reached its path.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $EUID -eq 0 ]] || { echo "natmatrix.sh: run as root (network namespaces)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go test -c -o "$work/punchtun.test" ./cmd/punchtun
cd cmd/punchtun # the tests build the punchtun binary from here
rc=0
# One test at a time (-test.parallel 1): the figures are each measured alone.
PUNCHTUN_MATRIX_OUT="$work/rows.jsonl" PUNCHTUN_MATRIX_REPEAT="${REPEAT:-10}" PUNCHTUN_REQUIRE_LAB=1 \
	"$work/punchtun.test" -test.run '^(TestTunnel|TestNATMatrix|TestOneIPRendezvous|TestIPv6|TestPortMappingHardHard)$' -test.count 1 -test.parallel 1 -test.timeout 30m \
	>"$work/test.log" 2>&1 || rc=$?
cp "$work/test.log" /tmp/natmatrix.log
grep -E -- '--- FAIL' /tmp/natmatrix.log || true
sed -n '/^PAIR/,$p' /tmp/natmatrix.log
((rc == 0)) || echo "natmatrix.sh: some attempts failed; the whole test log is in /tmp/natmatrix.log" >&2
exit "$rc"
