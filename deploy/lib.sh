# shellcheck shell=bash
# Shared by install.sh, upgrade.sh, rollback.sh and uninstall.sh: paths, users, versions,
# the `current`/`previous` switch and the health check. Sourced, never run.
#
# Layout (inside $DESTDIR when it is set, a scratch root for tests and image builds):
#   /opt/edgegw/<version>/       one virtualenv per installed version (+ deploy/ scripts)
#   /opt/edgegw/current          -> the running version     (relative symlinks)
#   /opt/edgegw/previous         -> the one before, kept for rollback
#   /usr/local/bin/edgegw        -> /opt/edgegw/current/bin/edgegw
#   /etc/edgegw/                 config.yaml and identity, root:edgegw 0750; keys edgegw 0600
#   /var/lib/edgegw/             the store and lighting rules, edgegw 0700
#   /etc/systemd/system/edgegw.service
#
# Environment knobs: DESTDIR (scratch root), NO_SYSTEMD=1 (never call systemctl), SYSTEMCTL
# (the systemctl to call), PYTHON (interpreter for the virtualenv, python3), PIP_ARGS (extra pip
# arguments, e.g. "--no-index --find-links /media/usb/wheels"), EDGEGW_VENV_ARGS (extra
# arguments for `python3 -m venv`: "--without-pip" saves ~10 MB a version when the base python
# has pip 22.3 or later, which then installs into the venv), EDGEGW_HEALTH_CMD (health check
# run after a (re)start; default `edgegw status`), EDGEGW_SETTLE (seconds the service must stay
# up after it reported ready, 15), EDGEGW_START_TIMEOUT (seconds for `systemctl restart`, 180).

set -euo pipefail
umask 022

# DESTDIR=/ (or any path that resolves to /) would turn a scratch run into a real install:
# refuse it before anything else happens. An unset or empty DESTDIR means the real system.
if [ -n "${DESTDIR:-}" ]; then
    if [ "$DESTDIR" -ef / ]; then
        printf 'edgegw: error: DESTDIR=%s is the real root: leave DESTDIR unset for a real install\n' \
            "$DESTDIR" >&2
        exit 2
    fi
    if [ ! -d "$DESTDIR" ]; then
        mkdir -p "$DESTDIR"
    fi
    DESTDIR=$(cd "$DESTDIR" && pwd -P)
fi
ROOT="${DESTDIR:-}"
OPT=/opt/edgegw
ETC=/etc/edgegw
STATE=/var/lib/edgegw
RUNDIR=/run/edgegw
UNIT=/etc/systemd/system/edgegw.service
BIN_LINK=/usr/local/bin/edgegw
SERVICE=edgegw
SERVICE_USER=edgegw
SERVICE_GROUPS=(gpio dialout)
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
NO_SYSTEMD="${NO_SYSTEMD:-0}"
PYTHON="${PYTHON:-python3}"
SETTLE="${EDGEGW_SETTLE:-15}"
START_TIMEOUT="${EDGEGW_START_TIMEOUT:-180}"
HEALTH_TRIES="${EDGEGW_HEALTH_TRIES:-5}"
DEPLOY_FILES=(lib.sh install.sh upgrade.sh rollback.sh uninstall.sh edgegw.service README.md
              constraints.txt)

say() { printf 'edgegw: %s\n' "$*"; }
warn() { printf 'edgegw: warning: %s\n' "$*" >&2; }
die() {
    printf 'edgegw: error: %s\n' "$1" >&2
    exit "${2:-1}"
}

# Also into the journal on a real system, so a fleet's upgrade history stays on each box.
note() {
    say "$*"
    if [ -z "$ROOT" ] && command -v logger >/dev/null 2>&1; then
        logger -t edgegw-deploy -- "$*" || true
    fi
}

# A path inside the target root.
r() { printf '%s%s' "$ROOT" "$1"; }

need_root() {
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo $0 ...), or set DESTDIR to lay out a scratch root" 2
    fi
}

# One deploy operation at a time.
take_lock() {
    mkdir -p "$(r "$OPT")"
    exec 9>"$(r "$OPT")/.lock"
    if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
        die "another install, upgrade or rollback is running (lock $(r "$OPT")/.lock)"
    fi
}

sysd() {
    if [ "$NO_SYSTEMD" = 1 ]; then
        say "(NO_SYSTEMD) skipped: systemctl $*"
        return 0
    fi
    "$SYSTEMCTL" "$@"
}

# ------------------------------------------------------------------------------ users
# With DESTDIR, users and groups are written to $DESTDIR/etc/{passwd,group,...} through the
# shadow tools' --prefix, never to the real system; without those files (or without root) user
# creation is skipped and files keep the invoking user's ownership.
USERS_OK=0

_users_possible() {
    if [ "${EDGEGW_NO_USER:-0}" = 1 ]; then
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        return 1
    fi
    if [ -n "$ROOT" ] && [ ! -f "$ROOT/etc/passwd" ]; then
        return 1
    fi
    return 0
}

_prefix_args() {
    if [ -n "$ROOT" ]; then
        printf '%s\n' --prefix "$ROOT"
    fi
}

_db_has() {  # _db_has passwd|group NAME
    if [ -n "$ROOT" ]; then
        grep -q "^$2:" "$ROOT/etc/$1" 2>/dev/null
    else
        getent "$1" "$2" >/dev/null 2>&1
    fi
}

_db_field() {  # _db_field passwd|group NAME FIELD
    if [ -n "$ROOT" ]; then
        awk -F: -v n="$2" -v f="$3" '$1 == n { print $f }' "$ROOT/etc/$1"
    else
        getent "$1" "$2" | cut -d: -f"$3"
    fi
}

ensure_user() {
    if ! _users_possible; then
        warn "not creating user $SERVICE_USER (no root, EDGEGW_NO_USER=1, or no $ROOT/etc/passwd):" \
             "files keep the invoking user's ownership"
        USERS_OK=0
        return 0
    fi
    local prefix=() g
    mapfile -t prefix < <(_prefix_args)
    for g in "${SERVICE_GROUPS[@]}"; do
        if ! _db_has group "$g"; then
            groupadd "${prefix[@]}" --system "$g"
            say "created group $g"
        fi
    done
    local groups_csv
    groups_csv=$(IFS=,; printf '%s' "${SERVICE_GROUPS[*]}")
    if _db_has passwd "$SERVICE_USER"; then
        usermod "${prefix[@]}" --append --groups "$groups_csv" "$SERVICE_USER"
    else
        useradd "${prefix[@]}" --system --user-group --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "edgegw gateway agent" \
            --groups "$groups_csv" "$SERVICE_USER"
        say "created system user $SERVICE_USER (groups: ${SERVICE_GROUPS[*]})"
    fi
    USERS_OK=1
}

uid_of() { _db_field passwd "$SERVICE_USER" 3; }
gid_of() { _db_field group "$SERVICE_USER" 3; }

# own OWNER:GROUP PATH... where OWNER/GROUP are "root" or "svc" (numeric ids, so DESTDIR works)
own() {
    local spec=$1
    shift
    if [ "$USERS_OK" != 1 ]; then
        return 0
    fi
    local u g
    case "${spec%%:*}" in root) u=0 ;; svc) u=$(uid_of) ;; *) die "own: bad owner $spec" ;; esac
    case "${spec##*:}" in root) g=0 ;; svc) g=$(gid_of) ;; *) die "own: bad group $spec" ;; esac
    chown -h "$u:$g" "$@"
}

# ------------------------------------------------------------------------ directories
make_dirs() {
    install -d -m 0755 "$(r "$OPT")"
    install -d -m 0750 "$(r "$ETC")"
    own root:svc "$(r "$ETC")"
    # the store holds queued telemetry and remembered command responses: the service's only
    install -d -m 0700 "$(r "$STATE")"
    own svc:svc "$(r "$STATE")"
}

# Config readable by the service, writable by root only; secrets (keys, passwords) owned by the
# service user and 0600, as the agent insists. Safe to run again after `edgegw provision`.
fix_config_permissions() {
    local etc
    etc=$(r "$ETC")
    [ -d "$etc" ] || return 0
    chmod 0750 "$etc"
    own root:svc "$etc"
    local path
    while IFS= read -r -d '' path; do
        chmod 0750 "$path"
        own root:svc "$path"
    done < <(find "$etc" -mindepth 1 -type d -print0)
    while IFS= read -r -d '' path; do
        # match below /etc/edgegw only (the root's own path may hold any word)
        case "${path#"$etc"/}" in
            *.key | *password* | *secret* | *.token)
                chmod 0600 "$path"
                own svc:svc "$path"
                ;;
            *)
                chmod 0640 "$path"
                own root:svc "$path"
                ;;
        esac
    done < <(find "$etc" -mindepth 1 -type f -print0)
}

# ---------------------------------------------------------------------------- versions
current_version() {
    local link
    link=$(r "$OPT/current")
    if [ -L "$link" ]; then
        basename "$(readlink "$link")"
    fi
}

previous_version() {
    local link
    link=$(r "$OPT/previous")
    if [ -L "$link" ]; then
        basename "$(readlink "$link")"
    fi
}

# Point $OPT/NAME at a version directory, atomically (rename over the old link).
set_link() {
    local name=$1 target=$2 dir
    dir=$(r "$OPT")
    ln -sfn "$target" "$dir/.$name.new"
    mv -Tf "$dir/.$name.new" "$dir/$name"
}

drop_link() { rm -f "$(r "$OPT/$1")"; }

# A fresh directory name for VERSION: never reuse one (a venv cannot move, and the running
# version must stay intact until the switch).
fresh_dir_name() {
    local version=$1 name n=2
    name=$version
    while [ -e "$(r "$OPT/$name")" ]; do
        name="$version-$n"
        n=$((n + 1))
    done
    printf '%s' "$name"
}

wheel_version() {
    local base
    base=$(basename "$1")
    case "$base" in
        edgegw-*.whl) printf '%s' "$base" | cut -d- -f2 ;;
        *) die "$1: not an edgegw wheel (expected edgegw-VERSION-...whl)" 2 ;;
    esac
}

source_version() {
    "$PYTHON" - "$1/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
PY
}

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: apt-get install python3" 2
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        die "$PYTHON is older than 3.11 (Raspberry Pi OS 12 \"bookworm\" has 3.11)" 2
    fi
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ -z "$ROOT" ] && command -v apt-get >/dev/null 2>&1; then
            say "installing python3-venv (virtualenv support)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        else
            die "$PYTHON cannot create virtualenvs: apt-get install python3-venv" 2
        fi
    fi
}

# install_version SOURCE EXTRAS -> prints the new directory's name on stdout (logs on stderr).
# SOURCE is a wheel file or a source tree. The new version lands beside the running one.
install_version() {
    local source=$1 extras=$2 version name dir spec
    if [ -f "$source" ]; then
        version=$(wheel_version "$source")
    elif [ -f "$source/pyproject.toml" ]; then
        version=$(source_version "$source")
    else
        die "$source: neither a wheel nor a source tree with pyproject.toml" 2
    fi
    version="${EDGEGW_VERSION:-$version}"
    name=$(fresh_dir_name "$version")
    dir=$(r "$OPT/$name")
    spec=$source
    if [ -n "$extras" ]; then
        spec="${source}[${extras}]"
    fi
    say "installing edgegw $version into $dir" >&2
    # shellcheck disable=SC2086  # EDGEGW_VENV_ARGS and PIP_ARGS are lists of words on purpose
    "$PYTHON" -m venv ${EDGEGW_VENV_ARGS:-} "$dir" >&2
    local pip=("$dir/bin/pip")
    if [ ! -x "$dir/bin/pip" ]; then
        # a venv made --without-pip (smaller): the base interpreter's pip installs into it
        pip=("$PYTHON" -m pip --python "$dir/bin/python")
    fi
    # the versions `make test` passed with: two cabinets installed apart run the same code
    local constraints=()
    if [ -f "$DEPLOY_DIR/constraints.txt" ]; then
        constraints=(-c "$DEPLOY_DIR/constraints.txt")
    fi
    # shellcheck disable=SC2086
    if ! "${pip[@]}" install --quiet --disable-pip-version-check --no-input \
            "${constraints[@]}" ${PIP_ARGS:-} "$spec" >&2; then
        rm -rf "$dir"
        die "pip could not install $spec (nothing was changed; see pip's message above)"
    fi
    if ! "$dir/bin/edgegw" version >/dev/null 2>&1; then
        rm -rf "$dir"
        die "the new install does not run ($dir/bin/edgegw version failed; nothing was changed)"
    fi
    install -d -m 0755 "$dir/deploy"
    local f
    for f in "${DEPLOY_FILES[@]}"; do
        if [ -f "$DEPLOY_DIR/$f" ]; then
            install -m 0644 "$DEPLOY_DIR/$f" "$dir/deploy/$f"
        fi
    done
    chmod 0755 "$dir"/deploy/*.sh
    printf '%s\n' "$name"
}

# Check the config with a given version before it is let near the service.
validate_config() {
    local name=$1 config
    config=$(r "$ETC/config.yaml")
    if [ ! -f "$config" ]; then
        return 0
    fi
    if ! "$(r "$OPT/$name")/bin/edgegw" config validate --config "$config" >&2; then
        return 1
    fi
}

install_unit_from() {
    local name=$1 unit
    unit=$(r "$OPT/$name")/deploy/edgegw.service
    [ -f "$unit" ] || die "$unit is missing"
    install -d -m 0755 "$(dirname "$(r "$UNIT")")"
    install -m 0644 "$unit" "$(r "$UNIT")"
}

link_command() {
    install -d -m 0755 "$(dirname "$(r "$BIN_LINK")")"
    ln -sfn "$OPT/current/bin/edgegw" "$(r "$BIN_LINK")"
}

# Keep only the current and the previous version.
prune_versions() {
    local cur prev d base
    cur=$(current_version)
    prev=$(previous_version)
    for d in "$(r "$OPT")"/*; do
        # the links themselves are not versions (and `rm -rf link/` would empty their target)
        if [ -L "$d" ] || [ ! -d "$d" ]; then
            continue
        fi
        base=$(basename "$d")
        if [ "$base" != "$cur" ] && [ "$base" != "$prev" ]; then
            rm -rf -- "$d"
            say "removed old version $base"
        fi
    done
}

# -------------------------------------------------------------------------- the service
service_prop() { "$SYSTEMCTL" show -p "$1" --value "$SERVICE" 2>/dev/null || true; }

# Restart the service and check that it comes up healthy and stays up. Returns 0 or 1, saying
# why on stderr.
restart_and_check() {
    local version=$1
    if [ "$NO_SYSTEMD" != 1 ]; then
        "$SYSTEMCTL" daemon-reload
        local restarts
        # Type=notify: `restart` returns once the agent said READY=1, or fails
        if ! timeout "$START_TIMEOUT" "$SYSTEMCTL" restart "$SERVICE"; then
            warn "edgegw $version did not start (systemctl restart failed)"
            return 1
        fi
        restarts=$(service_prop NRestarts)
        say "edgegw $version reported ready; watching it for ${SETTLE} s"
        sleep "$SETTLE"
        if [ "$("$SYSTEMCTL" is-active "$SERVICE" 2>/dev/null || true)" != active ]; then
            warn "edgegw $version stopped after it started"
            return 1
        fi
        if [ "$(service_prop NRestarts)" != "$restarts" ]; then
            warn "edgegw $version restarted by itself after it started (a crash or the watchdog)"
            return 1
        fi
    elif [ -z "${EDGEGW_HEALTH_CMD:-}" ]; then
        say "(NO_SYSTEMD) no service to check"
        return 0
    fi
    health_check "$version"
}

health_check() {
    local version=$1 cmd try
    cmd=${EDGEGW_HEALTH_CMD:-"$(r "$OPT/current/bin/edgegw") status --socket $(r "$RUNDIR")/control.sock"}
    for ((try = 1; try <= HEALTH_TRIES; try++)); do
        if EDGEGW_CHECK_VERSION=$version sh -c "$cmd" >/dev/null 2>&1; then
            say "health check passed: $cmd"
            return 0
        fi
        if [ "$try" -lt "$HEALTH_TRIES" ]; then
            sleep "${EDGEGW_HEALTH_WAIT:-2}"
        fi
    done
    warn "edgegw $version failed its health check ($cmd, $HEALTH_TRIES tries)"
    return 1
}
