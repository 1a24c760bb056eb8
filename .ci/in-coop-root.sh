#!/usr/bin/env bash
# Run a host-built binary (or any command) inside the sid root made by .ci/coop-root.sh, whose
# lavapipe has VK_KHR_cooperative_matrix.
#
#   .ci/in-coop-root.sh ROOT CMD [ARGS...]
#   e.g. .ci/in-coop-root.sh "$(.ci/coop-root.sh)" target/debug/deps/shaders-0123abcd --nocapture
#        .ci/in-coop-root.sh "$(.ci/coop-root.sh)" target/debug/sae --help
#
# Everything happens in a private mount namespace, so the bind mounts vanish when CMD exits (a
# mount left inside target/coop-root would make `rm -rf target` delete the checkout through it).
# Bound at the same absolute paths inside the root: the checkout (so CARGO_MANIFEST_DIR and
# CARGO_BIN_EXE_* baked into test binaries resolve), its sibling ../shared and /work/shared if
# present, CARGO_TARGET_DIR and CMD's directory if they lie outside the checkout, /tmp, and the
# paths in COOP_BINDS (colon-separated). /proc, /dev and /sys are mounted. The working directory
# is kept, the environment passed through (XDG_RUNTIME_DIR is set if unset), and CMD's exit
# status returned. Needs root.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
    [ $# -ge 2 ] || { echo "usage: $0 ROOT CMD [ARGS...]" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "in-coop-root: must run as root" >&2; exit 2; }
    [ -f "$1/.coop-root-ready" ] || { echo "in-coop-root: $1 is not a root made by coop-root.sh" >&2; exit 2; }
    exec unshare --mount --propagation private -- "$(realpath "$0")" --inside "$@"
fi
shift
root="$(realpath "$1")"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Resolve CMD on the host side when it names a file (relative to the current directory or PATH).
cmd="$1"
shift
if [[ "$cmd" == */* ]]; then
    cmd="$(realpath "$cmd")"
elif command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$root/usr/bin/$cmd" ] && [ ! -x "$root/bin/$cmd" ]; then
    cmd="$(command -v "$cmd")"  # a host binary that the root does not have
fi

bind() {  # bind HOST_PATH at the same path inside the root
    local src="$1"
    [ -e "$src" ] || return 0
    src="$(realpath "$src")"
    if [ -d "$src" ]; then
        mkdir -p "$root$src"
    else
        mkdir -p "$root$(dirname "$src")"
        [ -e "$root$src" ] || touch "$root$src"
    fi
    mount --bind "$src" "$root$src"
}

mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
bind /tmp
bind "$here"
bind "$(dirname "$here")/shared"
bind /work/shared
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$(realpath -m "$CARGO_TARGET_DIR")/" in "$here"/*) ;; *) bind "$CARGO_TARGET_DIR" ;; esac
fi
case "$cmd" in
    "$here"/*) ;;
    /*) bind "$(dirname "$cmd")" ;;
esac
IFS=: read -r -a extra <<<"${COOP_BINDS:-}"
for p in "${extra[@]}"; do [ -z "$p" ] || bind "$p"; done

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$root$XDG_RUNTIME_DIR" && chmod 700 "$root$XDG_RUNTIME_DIR"
cwd="$PWD"
# shellcheck disable=SC2016  # expanded by the inner sh
exec chroot "$root" /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$cwd" "$cmd" "$@"
