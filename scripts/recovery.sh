#!/usr/bin/env bash
# recovery.sh — run the recovery tests and print one table: each event, its
# bound, the longest gap measured in a 5-per-second ping through the tunnel
# (or the time the event's figure is about), and pass/fail.
#
#   sudo scripts/recovery.sh             # every event once
#   sudo COUNT=5 scripts/recovery.sh     # every event 5 times: worst gap, runs passed
#
# Events (TestRecovery* in cmd/punchtun/recovery_test.go): a NAT router
# forgets its mappings (conntrack -F) on either side, easy and hard; a host
# moves to another NAT; the rendezvous restarts (direct tunnels lose nothing,
# peers registered again within 5 s, relayed peers resume within 3 s); a peer
# is killed with SIGKILL and started again; 20% loss on the internet; one of
# two rendezvous dies; a peer restarts while the rendezvous is down. The
# tests append their figures to PUNCHTUN_GAPS_OUT as JSON lines, and the
# test binary prints the table. Needs conntrack (package conntrack). Exit
# status: 0 when every figure is within its bound.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $EUID -eq 0 ]] || { echo "recovery.sh: run as root (network namespaces)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go test -c -o "$work/punchtun.test" ./cmd/punchtun
cd cmd/punchtun # the tests build the punchtun binary from here
rc=0
# One test at a time (-test.parallel 1): the figures are each measured alone.
PUNCHTUN_GAPS_OUT="$work/gaps.jsonl" PUNCHTUN_REQUIRE_LAB=1 \
	"$work/punchtun.test" -test.run '^TestRecovery' -test.count "${COUNT:-1}" -test.parallel 1 -test.timeout 30m -test.v \
	>"$work/test.log" 2>&1 || rc=$?
cp "$work/test.log" /tmp/recovery.log
grep -E -- '--- FAIL' /tmp/recovery.log || true
sed -n '/^EVENT/,$p' /tmp/recovery.log | grep -vE '^(FAIL|PASS|ok)\b' || true
((rc == 0)) || echo "recovery.sh: some figures are out of bounds; the whole test log is in /tmp/recovery.log" >&2
exit "$rc"
