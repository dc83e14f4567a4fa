# deps.sh — installs the Debian packages a script needs, and finds Go.
# Source it; then `need_packages PKG...` installs the missing ones with
# apt-get (as root), and `need_go` puts Go on PATH or says how to get it.
# shellcheck shell=bash

# The packages of the demo, and of the whole test suite (the lab tests,
# interop with wireguard-tools, coturn's STUN client and OpenSSH, systemd's
# unit checker, conntrack for the recovery tests, iperf3 and jq for the
# benchmarks, openresolv for DNS = (its package changes no file of the
# host's on install; the test runs it in a private mount namespace), and
# dnsmasq-base as the lab's upstream resolver (the binary alone: no
# service starts)).
DEMO_PACKAGES=(iproute2 nftables iputils-ping netcat-openbsd procps)
TEST_PACKAGES=("${DEMO_PACKAGES[@]}" socat wireguard-tools openssh-server openssh-client
	systemd stun-client coturn iperf3 conntrack jq openresolv dnsmasq-base)

need_packages() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || { echo "missing packages: ${missing[*]} (and no apt-get to install them)" >&2; return 1; }
	echo "installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_miniupnpd makes the port mapping tests' router daemon available:
# miniupnpd in a Debian 13 root cached outside the checkout
# (scripts/miniupnpd.sh, which says where).
need_miniupnpd() {
	"$(dirname "${BASH_SOURCE[0]}")/miniupnpd.sh" >/dev/null
}

# need_go finds Go where the official tarball puts it (sudo's secure_path
# hides it), or fails saying what to do: Debian's own golang-go is too old
# for go.mod.
need_go() {
	command -v go >/dev/null && return 0
	if [ -x /usr/local/go/bin/go ]; then
		PATH=$PATH:/usr/local/go/bin
		return 0
	fi
	echo "Go is not installed: install the Go release go.mod names (see https://go.dev/dl/) into /usr/local/go" >&2
	return 1
}
