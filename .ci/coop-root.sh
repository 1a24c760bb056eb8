#!/usr/bin/env bash
# Make (idempotently) a Debian sid root whose lavapipe (Mesa 26.x) has VK_KHR_cooperative_matrix,
# which bookworm's Mesa 22.3.6 lacks, so wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX can be tested on
# the CPU. Prints the root's absolute path on stdout (all other output goes to stderr).
#
#   .ci/coop-root.sh [DIR]        DIR defaults to <checkout>/target/coop-root
#
# Run binaries in it with .ci/in-coop-root.sh DIR CMD... (bookworm-built binaries run unchanged).
# Needs root and the Debian mirror. Environment:
#   COOP_ROOT_SUITE   suite to bootstrap (default sid)
#   COOP_ROOT_MIRROR  mirror (default http://deb.debian.org/debian)
#   COOP_ROOT_EXTRA   extra packages to install in the root, space-separated (e.g. vulkan-tools)
# Every mount this script makes lives in a private mount namespace and disappears with it, so
# nothing stays mounted inside DIR (and `rm -rf target` / `cargo clean` stay safe).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${1:-$here/target/coop-root}"
suite="${COOP_ROOT_SUITE:-sid}"
mirror="${COOP_ROOT_MIRROR:-http://deb.debian.org/debian}"
read -r -a extra <<<"${COOP_ROOT_EXTRA:-}"
packages=(mesa-vulkan-drivers libvulkan1 "${extra[@]}")

log() { echo "coop-root: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"
mkdir -p "$(dirname "$root")"
root="$(realpath -m "$root")"
[ "$root" != / ] || die "refusing to use / as the root"
stamp="$root/.coop-root-ready"

# Already complete (and holding every requested package)?
if [ -f "$stamp" ] && chroot "$root" dpkg-query -W "${packages[@]}" >/dev/null 2>&1; then
    echo "$root"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
host_apt_updated=
host_install() {
    [ -n "$host_apt_updated" ] || { apt-get update -qq >&2; host_apt_updated=1; }
    apt-get install -y -qq --no-install-recommends "$@" >&2
}
command -v debootstrap >/dev/null || host_install debootstrap
command -v unshare >/dev/null || host_install util-linux
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || host_install debian-archive-keyring

# A root that debootstrap did not finish (it removes $root/debootstrap when done) is started over.
if [ -e "$root/debootstrap" ] || { [ -d "$root" ] && [ ! -x "$root/usr/bin/apt-get" ] \
        && [ -n "$(ls -A "$root" 2>/dev/null)" ]; }; then
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        die "something is mounted under $root; unmount it first"
    fi
    log "removing the unfinished root $root"
    rm -rf --one-file-system "$root"
fi

start=$SECONDS
if [ ! -x "$root/usr/bin/apt-get" ]; then
    log "debootstrap --variant=minbase $suite $root $mirror"
    mkdir -p "$root"
    # In a private mount namespace: the /proc and /sys that debootstrap mounts cannot outlive it.
    unshare --mount --propagation private \
        debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2 \
        || die "debootstrap failed (see $root/debootstrap/debootstrap.log)"
    log "debootstrap took $((SECONDS - start)) s"
fi

# apt inside the root, with /proc and /dev mounted for the duration only. The mirror may serve a
# frozen snapshot whose Release file is past its Valid-Until: accept it (debootstrap did too).
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99coop-root"
t=$SECONDS
# shellcheck disable=SC2016  # the inner script expands its own arguments
unshare --mount --propagation private /bin/sh -euc '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    chroot "$root" apt-get update -qq
    chroot "$root" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    chroot "$root" apt-get clean
' sh "$root" "${packages[@]}" >&2
log "apt-get install ${packages[*]} took $((SECONDS - t)) s"

# shellcheck disable=SC2016
mesa="$(chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
ls "$root"/usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 \
    || die "no lavapipe ICD in $root/usr/share/vulkan/icd.d"
echo "suite=$suite mesa-vulkan-drivers=$mesa" >"$stamp"
log "ready: mesa-vulkan-drivers $mesa, $(du -sh --one-file-system "$root" | cut -f1), total $((SECONDS - start)) s"
echo "$root"
