#!/usr/bin/env bash
# Build a local stand-in for the official postgres image that docker-compose.yml pins (POSTGRES_IMAGE).
#
# Why: Docker Hub is unreachable here (and on CI), as for standin_base_image.sh. This builds the part
# of the official image the postgres profile uses, from reachable sources only: a Debian bookworm
# rootfs (debootstrap) with Debian's PostgreSQL 15 server and libnss-wrapper, imported with `docker
# import`, and an entrypoint that does what the official docker-entrypoint.sh does for this project:
# honours POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD(_FILE) and PGDATA; as a user the image does
# not know, runs initdb under nss_wrapper; on an empty PGDATA creates the cluster, the user's password
# (scram-sha-256 for TCP, as the official pg_hba.conf), the database, then execs postgres listening on
# every interface. As the official image: /var/lib/postgresql/data of mode 1777, pg_isready on PATH.
# Unlike it: PostgreSQL 15 (the official pin is newer), no root start (gosu): the compose file runs it
# as the host user anyway, and no STOPSIGNAL (docker import cannot set it; the compose file says
# stop_signal: SIGINT itself). The tag names what it is.
#
# Usage: standin_postgres_image.sh [IMAGE_TAG]     (default standin/postgres:debian-15)
# Env:   DEBIAN_MIRROR  apt mirror (default http://deb.debian.org/debian); FORCE=1 rebuilds
set -euo pipefail

TAG="${1:-standin/postgres:debian-15}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PG=15

log() { echo "[standin-postgres] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, mount)"
"$(dirname "$0")/ensure_docker.sh"
if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "reusing existing image $TAG"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap debian-archive-keyring >/dev/null
fi

SECONDS=0
ROOTFS="$(mktemp -d /var/tmp/standin-postgres.XXXXXX)"
chmod 755 "$ROOTFS"
unmount_all() {
    local mp
    awk -v root="$ROOTFS" 'index($2, root "/") == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r mp; do umount "$mp" 2>/dev/null || umount -l "$mp"; done
}
cleanup() {
    local rc=$?
    unmount_all
    if awk -v root="$ROOTFS" 'index($2, root "/") == 1 {found=1} END {exit !found}' /proc/self/mounts; then
        log "WARNING: mounts remain under $ROOTFS; leaving it in place"
    else
        rm -rf --one-file-system "$ROOTFS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_chroot() {
    chroot "$ROOTFS" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

log "debootstrap $SUITE (minbase) into $ROOTFS"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 ||
    { tail -n 30 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.log"
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --make-rslave "$ROOTFS/dev"
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# No cluster of the package's own (the entrypoint makes one in PGDATA), and no service started.
mkdir -p "$ROOTFS/etc/postgresql-common"
echo "create_main_cluster = false" >"$ROOTFS/etc/postgresql-common/createcluster.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
log "apt-get install postgresql-$PG libnss-wrapper"
in_chroot apt-get update -qq
in_chroot apt-get install -y -qq --no-install-recommends "postgresql-$PG" libnss-wrapper >/dev/null
rm -f "$ROOTFS/usr/sbin/policy-rc.d"

# As the official image: the server listens on every interface (its Dockerfile edits the sample the same
# way), and its data folder, which a named volume's root becomes, is writable by any user.
sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$ROOTFS/usr/share/postgresql/$PG/postgresql.conf.sample"
install -d -m 1777 "$ROOTFS/var/lib/postgresql/data"
install -d -m 3777 "$ROOTFS/run/postgresql"  # not var/run: a symlink to the host's /run here
cat >"$ROOTFS/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/usr/bin/env bash
# The stand-in's entrypoint: what the official postgres image's does, for a non-root user.
set -Eeuo pipefail
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "$(id -u)" = 0 ]; then
    echo "stand-in postgres: run as a non-root user (compose's user:), as this project does" >&2
    exit 1
fi
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(< "$POSTGRES_PASSWORD_FILE")
fi
mkdir -p "$PGDATA"
chmod 700 "$PGDATA" || :
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "Error: Database is uninitialized and superuser password is not specified." >&2
        exit 1
    fi
    wrapped=()
    if ! getent passwd "$(id -u)" >/dev/null; then  # initdb needs a name for its user
        NSS_WRAPPER_PASSWD=$(mktemp) NSS_WRAPPER_GROUP=$(mktemp)
        echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PGDATA:/bin/false" >"$NSS_WRAPPER_PASSWD"
        echo "postgres:x:$(id -g):" >"$NSS_WRAPPER_GROUP"
        wrapped=(env LD_PRELOAD="$(ls /usr/lib/*/libnss_wrapper.so | head -n 1)"
                 NSS_WRAPPER_PASSWD="$NSS_WRAPPER_PASSWD" NSS_WRAPPER_GROUP="$NSS_WRAPPER_GROUP")
    fi
    "${wrapped[@]}" initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        -D "$PGDATA"
    printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
    [ -z "${NSS_WRAPPER_PASSWD:-}" ] || rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
EOF
chmod 755 "$ROOTFS/usr/local/bin/docker-entrypoint.sh"

in_chroot apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* "$ROOTFS"/var/log/apt/* \
       "$ROOTFS"/var/log/dpkg.log
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
unmount_all

log "importing rootfs as $TAG"
tar --numeric-owner -C "$ROOTFS" -c . |
    docker import \
        --change "ENV PATH=/usr/lib/postgresql/$PG/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'VOLUME /var/lib/postgresql/data' \
        --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
        --change 'EXPOSE 5432' \
        --change 'CMD ["postgres"]' \
        - "$TAG" >/dev/null
log "built $TAG in ${SECONDS}s, size $(docker image ls "$TAG" --format '{{.Size}}')"
docker run --rm --entrypoint postgres "$TAG" --version >/dev/null || die "postgres does not run in $TAG"
docker run --rm --entrypoint pg_isready "$TAG" --version >/dev/null || die "no pg_isready in $TAG"
