#!/usr/bin/env bash
# rootless.sh — the end-to-end tests that need no root, run as a user
# without it (CI runs this before test.sh).
#
# As a normal user it is plain `go test` of the rootless harness
# (tunnel/userspace: a rendezvous and userspace peers on loopback). As root
# it proves the point: it copies the source and Go's module cache where
# an unprivileged user can read them and runs the same tests as `nobody`
# (RUN_AS=user to pick another), with no capabilities and no groups.
# Arguments go to `go test` after the package, e.g. -run TestRootlessNc -v.
set -euo pipefail
cd "$(dirname "$0")/.."
set -- ./tunnel/userspace/... "$@"

if [ "$(id -u)" != 0 ]; then
	exec go test -count=1 -timeout 5m "$@"
fi

user=${RUN_AS:-nobody}
# The user's build cache outlives a run: gVisor takes minutes to compile.
cache=${ROOTLESS_GOCACHE:-/var/tmp/punchtun-rootless-gocache}
mkdir -p "$cache" && chown "$user" "$cache" && chmod 0700 "$cache"
work=$(mktemp -d /tmp/punchtun-rootless.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/home"
# The worktree's files as they are (committed or not), without .git.
tar --exclude=.git -cf - . | tar -xf - -C "$work/src"
cp -a "$(go env GOMODCACHE)" "$work/gomod"
chown -R "$user" "$work"
chmod 0700 "$work/home"
goroot=$(go env GOROOT)
echo "rootless.sh: running as $user (uid $(id -u "$user")), no capabilities: go test $*"
cd "$work/src"
# Not exec: the trap above removes the copy once the tests are done.
setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups --inh-caps=-all --bounding-set=-all \
	env -i PATH="$goroot/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME="$work/home" \
	GOCACHE="$cache" GOMODCACHE="$work/gomod" GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
	go test -count=1 -timeout 5m "$@"
