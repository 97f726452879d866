#!/usr/bin/env bash
# Prepare this machine for the end-to-end tests (root, idempotent; quick when all is there):
#   - a Docker engine and Compose v2 that every user can call (ensure_docker.sh),
#   - the unprivileged user the tests drive everything as, in the docker group, with a UID other
#     than 1000, so that a compose file that quietly assumes UID 1000 fails the tests,
#   - the stand-in for the official TensorFlow base image of the Dockerfile's TF_VERSION
#     (standin_base_image.sh; Docker Hub cannot be reached here),
#   - Chromium, for the screenshot.
# Called by .ci/run and by `make e2e` as root. The tests themselves only check that all of this is
# there and name this script when something is not.
#
# Env: E2E_USER  the user (default e2e), E2E_UID  its UID and GID when it is created (default 1500)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
E2E_USER="${E2E_USER:-e2e}"
E2E_UID="${E2E_UID:-1500}"

log() { echo "[setup_machine] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (it installs packages, adds a user and starts dockerd)"
[[ $E2E_UID != 1000 ]] || die "E2E_UID must not be 1000: the tests prove that other UIDs work"

"$HERE/ensure_docker.sh"

# --- the unprivileged user ------------------------------------------------------------------------
if ! id "$E2E_USER" >/dev/null 2>&1; then
    getent group "$E2E_UID" >/dev/null && die "GID $E2E_UID is taken; set E2E_UID to a free one"
    getent passwd "$E2E_UID" >/dev/null && die "UID $E2E_UID is taken; set E2E_UID to a free one"
    log "adding user $E2E_USER (uid $E2E_UID) to the docker group"
    groupadd --gid "$E2E_UID" "$E2E_USER"
    useradd --uid "$E2E_UID" --gid "$E2E_UID" --groups docker --create-home --shell /bin/bash "$E2E_USER"
fi
[[ "$(id -u "$E2E_USER")" != 1000 ]] ||
    die "user $E2E_USER has UID 1000, which would hide UID bugs; remove it (userdel -r $E2E_USER) and re-run"
id -nG "$E2E_USER" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$E2E_USER"
# The user's own view: the socket and the system-wide Compose plugin, not root's.
runuser -u "$E2E_USER" -- docker info >/dev/null 2>&1 || die "$E2E_USER cannot reach the Docker daemon"
runuser -u "$E2E_USER" -- docker compose version >/dev/null 2>&1 || die "$E2E_USER has no docker compose"

# --- the stand-in base image (its tag comes from the Dockerfile's TF_VERSION) ----------------------
"$HERE/standin_base_image.sh"
# --- the stand-in for the official postgres image (the postgres profile, tests/e2e/test_sweep_postgres.py)
"$HERE/standin_postgres_image.sh"

# --- Chromium ---------------------------------------------------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

log "ready: user $E2E_USER (uid $(id -u "$E2E_USER")), $(runuser -u "$E2E_USER" -- docker compose version), $(chromium --version 2>/dev/null)"
