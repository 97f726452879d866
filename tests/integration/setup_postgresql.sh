#!/usr/bin/env bash
# Install Debian's PostgreSQL server binaries for the integration tests (root, idempotent; quick when
# they are there). The tests start a private cluster of their own (initdb + pg_ctl, as an
# unprivileged user, on a free port under a temporary folder): the service this package installs is
# neither needed nor started, and a cluster it created is left alone. Called by .ci/run before
# make test-integration; without it the PostgreSQL sweep tests are skipped, naming this script.
set -euo pipefail

log() { echo "[setup_postgresql] $*" >&2; }

[[ $EUID -eq 0 ]] || { log "ERROR: must run as root (it installs a package)"; exit 1; }
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    log "PostgreSQL is installed: $(ls -d /usr/lib/postgresql/*/bin/initdb | tr '\n' ' ')"
    exit 0
fi
log "installing Debian's postgresql"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d: keep the package's own cluster from starting (the tests start their own); one that is
# there already (a container's) is left as it is.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { log "ERROR: no initdb after installing"; exit 1; }
log "done: $(ls -d /usr/lib/postgresql/*/bin/initdb | tr '\n' ' ')"
