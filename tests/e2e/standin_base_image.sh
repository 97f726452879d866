#!/usr/bin/env bash
# Build a local stand-in for the official tensorflow/tensorflow:<ver>-gpu image.
#
# Why: Docker Hub is unreachable here (and on CI), so the project's
# Dockerfile cannot pull its real base image.  This builds something close
# enough from reachable sources only: a Debian bookworm rootfs from
# deb.debian.org (debootstrap) plus tensorflow-cpu from PyPI, imported with
# `docker import`.  Like the official image it has python/python3 3.11, a
# system-wide pip that installs without a venv, root as user, CMD bash.
# It does NOT include TensorBoard: the project's Dockerfile installs that.
#
# Usage: standin_base_image.sh [IMAGE_TAG]     (default standin/tensorflow:$TF_VERSION)
# Env:   TF_VERSION     tensorflow-cpu version to install (default: the Dockerfile's ARG TF_VERSION)
#        DEBIAN_MIRROR  apt mirror (default http://deb.debian.org/debian)
#        FORCE=1        rebuild even if the tag already exists
set -euo pipefail

# The project's Dockerfile is the one place the version is written.
DOCKERFILE="$(cd "$(dirname "$0")/../.." && pwd)/Dockerfile"
TF_VERSION="${TF_VERSION:-$(sed -n 's/^ARG TF_VERSION=\([^[:space:]]*\).*/\1/p' "$DOCKERFILE" | head -n 1)}"
TAG="${1:-standin/tensorflow:${TF_VERSION}}"
SUITE=bookworm   # bookworm ships python3.11, the version the official image uses
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
HOST_CA=/etc/ssl/certs/ca-certificates.crt   # trusts the TLS-re-signing proxy
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[standin] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -n $TF_VERSION ]] || die "no ARG TF_VERSION=... in $DOCKERFILE; set TF_VERSION"

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, mount)"

# A docker engine is needed for the reuse check and the import.
"$(dirname "$0")/ensure_docker.sh"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "reusing existing image $TAG ($(docker image ls "$TAG" --format '{{.Size}}'))"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null
fi

SECONDS=0
ROOTFS="$(mktemp -d /var/tmp/standin-rootfs.XXXXXX)"
# mktemp makes it 0700, which becomes the image's / and locks out apt's
# _apt user (and any non-root user) inside.
chmod 755 "$ROOTFS"

# Unmount everything below $ROOTFS, deepest first.  debootstrap itself may
# leave /proc mounted if it dies halfway, so scan the mount table rather
# than remembering what we mounted.
unmount_all() {
    local mp
    awk -v root="$ROOTFS" 'index($2, root "/") == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r mp; do
            umount "$mp" 2>/dev/null || umount -l "$mp"
        done
}

cleanup() {
    local rc=$?
    unmount_all
    # Never rm while something (e.g. the host's /dev) is still bound inside;
    # --one-file-system is a second guard against that.
    if awk -v root="$ROOTFS" 'index($2, root "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
        log "WARNING: mounts remain under $ROOTFS; leaving it in place"
    else
        rm -rf --one-file-system "$ROOTFS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # run the EXIT trap on Ctrl-C / kill too

# Run a command inside the rootfs with a clean environment: the host's
# PIP_*, SSL_*, REQUESTS_CA_BUNDLE ... point at host paths that do not
# exist in there.
in_chroot() {
    chroot "$ROOTFS" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

log "debootstrap $SUITE (minbase) into $ROOTFS from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.debootstrap.log" 2>&1 ||
    { tail -n 30 "$ROOTFS.debootstrap.log" >&2; rm -f "$ROOTFS.debootstrap.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.debootstrap.log"
log "debootstrap done after ${SECONDS}s"

# apt and pip want /proc; /dev is bound so dpkg scripts see the usual nodes.
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --make-rslave "$ROOTFS/dev"   # our unmount must not propagate to the host

# debootstrap writes only "main" of the release; add updates + security
# so the image carries current packages, as the host's apt does.
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF

# apt over plain http needs no CA; keep recommends out (build-essential,
# python3-dev) to stay small.  python-is-python3 gives `python` like the
# official image.
log "apt-get install python3 python3-pip python-is-python3 ca-certificates"
in_chroot apt-get update -qq
in_chroot apt-get install -y -qq --no-install-recommends \
    python3 python3-pip python-is-python3 ca-certificates >/dev/null

# Debian marks its python as externally managed (PEP 668); the official
# image lets `pip install` work system-wide, which the project relies on.
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED

# Lend the host CA bundle for this step only: PyPI is reached through a
# TLS-re-signing proxy that Debian's stock bundle does not trust.
log "pip install tensorflow-cpu==$TF_VERSION (the big download)"
cp "$HOST_CA" "$ROOTFS/tmp/host-ca.crt"
in_chroot PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    PIP_ROOT_USER_ACTION=ignore \
    python3 -m pip install --no-cache-dir --progress-bar off -q "tensorflow-cpu==$TF_VERSION"
rm -f "$ROOTFS/tmp/host-ca.crt"

# Trim: apt caches/lists, and host-specific files debootstrap copied in
# (docker bind-mounts its own resolv.conf/hostname at run time).
in_chroot apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/root/.cache "$ROOTFS"/tmp/* "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/dpkg.log
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"

unmount_all   # before tar: /proc and /dev must not end up in the image

log "importing rootfs as $TAG"
old_id="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"   # FORCE=1 rebuild
tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        - "$TAG" >/dev/null
# Drop the image this one replaced, unless something still uses it.
new_id="$(docker image inspect -f '{{.Id}}' "$TAG")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi

log "built $TAG in ${SECONDS}s, size $(docker image ls "$TAG" --format '{{.Size}}')"

# Verify it behaves like the official image for what the project needs.
got="$(docker run --rm "$TAG" python3 -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null | tail -n 1)"
[[ "$got" == "$TF_VERSION" ]] || die "tensorflow in $TAG reports '$got', expected $TF_VERSION"
docker run --rm "$TAG" python3 -m pip --version >/dev/null || die "pip does not run in $TAG"
docker run --rm "$TAG" python --version >/dev/null || die "python does not run in $TAG"
log "verified: tensorflow $got, pip and python present"
