#!/usr/bin/env bash
# Run every fuzz target of the module, one after another, each for DURATION
# (a Go duration: 30s, 5m, 1h; default 30s), and report which failed.
# Failing inputs are kept in the package's testdata/fuzz/ directory, where
# `go test` then replays them as regressions.
#
#   scripts/fuzz.sh [DURATION]
set -uo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30s}

failed=()
total=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
	for target in $targets; do
		total=$((total + 1))
		echo "=== $pkg $target ($duration)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$pkg"; then
			failed+=("$pkg $target")
		fi
	done
done

echo
if [ "$total" -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi
if [ "${#failed[@]}" -ne 0 ]; then
	echo "fuzz.sh: ${#failed[@]} of $total fuzz targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz.sh: all $total fuzz targets passed ($duration each)"
