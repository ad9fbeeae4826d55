#!/usr/bin/env bash
# Upgrade edgegw in place, rolling back by itself if the new version is not healthy.
#
#   sudo deploy/upgrade.sh --wheel edgegw-0.3.0-py3-none-any.whl
#   sudo deploy/upgrade.sh                      # from the source tree this script is in
#
# 1. installs the new version in its own virtualenv beside the running one (the service keeps
#    running meanwhile) and checks that it runs and accepts /etc/edgegw/config.yaml;
# 2. switches /opt/edgegw/current to it (previous -> the old one), installs its unit, restarts;
# 3. waits for READY (Type=notify), watches the service for EDGEGW_SETTLE seconds (no crash,
#    no watchdog restart) and runs the health check (`edgegw status`, or EDGEGW_HEALTH_CMD);
# 4. on any failure switches back to the old version, restarts it, checks it, and says so.
# Config, identity (/etc/edgegw) and the store (/var/lib/edgegw) are never touched.
#
# Exit status: 0 upgraded; 1 the upgrade failed and the old version runs again (or nothing was
# changed); 2 bad usage; 3 the upgrade failed and the rollback failed too (act now).
#
# Options: --wheel FILE | --source DIR, --extras LIST, --no-systemctl (NO_SYSTEMD=1).

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }

SOURCE=""
EXTRAS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) SOURCE=${2:?--wheel needs a file}; shift ;;
        --source) SOURCE=${2:?--source needs a directory}; shift ;;
        --extras) EXTRAS=${2:?--extras needs a list}; shift ;;
        --no-systemctl) NO_SYSTEMD=1 ;;
        -h | --help) usage 0 ;;
        *) printf 'edgegw: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done
if [ -z "$SOURCE" ]; then
    SOURCE=$(cd "$DEPLOY_DIR/.." && pwd)
fi

need_root
take_lock
check_python

OLD=$(current_version)
[ -n "$OLD" ] || die "edgegw is not installed in $(r "$OPT"): use install.sh" 2
OLD_PREVIOUS=$(previous_version)

NEW=$(install_version "$SOURCE" "$EXTRAS")
if ! validate_config "$NEW"; then
    rm -rf "$(r "$OPT/$NEW")"
    die "edgegw $NEW does not accept $(r "$ETC/config.yaml") (see above): not upgraded, $OLD keeps running"
fi

# a new release may also tighten what it expects of the files under /etc/edgegw
ensure_user
fix_config_permissions

note "upgrading edgegw $OLD -> $NEW"
install_unit_from "$NEW"
set_link previous "$OLD"
set_link current "$NEW"
link_command

if restart_and_check "$NEW"; then
    prune_versions
    note "edgegw upgraded $OLD -> $NEW; $OLD is kept for rollback (rollback.sh)"
    exit 0
fi

# ---------------------------------------------------------------------------- roll back
note "upgrade to $NEW FAILED: rolling back to $OLD"
install_unit_from "$OLD"
set_link current "$OLD"
if [ -n "$OLD_PREVIOUS" ]; then
    set_link previous "$OLD_PREVIOUS"
else
    drop_link previous
fi
rm -rf "$(r "$OPT/$NEW")"
if restart_and_check "$OLD"; then
    note "ROLLED BACK: edgegw $NEW failed (see journalctl -u $SERVICE); $OLD is running again"
    exit 1
fi
note "ROLLBACK FAILED: edgegw $NEW failed and $OLD does not run healthily either:" \
     "journalctl -u $SERVICE -n 200; systemctl status $SERVICE"
exit 3
