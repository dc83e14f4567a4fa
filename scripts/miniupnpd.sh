#!/usr/bin/env bash
# miniupnpd.sh — makes the lab's real home-router daemon available: Debian
# 13's miniupnpd 2.3.9 (NAT-PMP, PCP, UPnP IGD; ext_allow_private_ipv4 lets
# it map the lab's reserved "public" addresses), in a minimal Debian 13 root
# made with debootstrap, because it needs a newer libc than Debian 12's.
# The root is cached outside the checkout (PUNCHTUN_MINIUPNPD_ROOT, default
# /var/cache/punchtun/trixie) and made once; the lab tests run
# `ip netns exec NS chroot ROOT miniupnpd ...` from it.
#
#   sudo scripts/miniupnpd.sh   # prints the root's path
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

root=${PUNCHTUN_MINIUPNPD_ROOT:-/var/cache/punchtun/trixie}
[ "$(id -u)" = 0 ] || { echo "miniupnpd.sh: run as root (debootstrap)" >&2; exit 1; }
if [ -x "$root/usr/sbin/miniupnpd" ] && [ -x "$root/etc/miniupnpd/nft_init.sh" ]; then
	echo "$root"
	exit 0
fi
need_packages debootstrap debian-archive-keyring

# The mirror apt already uses (deb822 or one-line sources), so the root
# comes from where the machine's other packages do.
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9 # another run may be making it
if [ ! -x "$root/usr/sbin/miniupnpd" ]; then
	tmp="$root.tmp.$$"
	trap 'rm -rf "$tmp"' EXIT
	echo "miniupnpd.sh: making $root from $mirror (trixie, minbase + miniupnpd-nftables)" >&2
	debootstrap --variant=minbase --include=miniupnpd-nftables trixie "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
		{ tail -n 30 "$tmp.log" >&2; rm -f "$tmp.log"; exit 1; }
	rm -f "$tmp.log"
	rm -rf "$root"
	mv "$tmp" "$root"
	trap - EXIT
fi
echo "$root"
