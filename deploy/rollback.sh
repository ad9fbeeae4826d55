#!/usr/bin/env bash
# Go back to the previous installed version of edgegw (the one upgrade.sh kept).
#
#   sudo /opt/edgegw/current/deploy/rollback.sh
#
# Swaps /opt/edgegw/current and /opt/edgegw/previous, installs that version's unit, restarts
# the service and checks it as upgrade.sh does. If the previous version is not healthy either,
# switches back to the version that was running and says so. Config, identity and the store are
# not touched.
#
# Exit status: 0 rolled back; 1 the previous version failed and the former one runs again;
# 2 nothing to roll back to; 3 neither version runs healthily (act now).
#
# Options: --no-systemctl (NO_SYSTEMD=1).

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --no-systemctl) NO_SYSTEMD=1 ;;
        -h | --help) usage 0 ;;
        *) printf 'edgegw: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done

need_root
take_lock

CUR=$(current_version)
PREV=$(previous_version)
[ -n "$CUR" ] || die "edgegw is not installed in $(r "$OPT")" 2
if [ -z "$PREV" ] || [ ! -x "$(r "$OPT/$PREV")/bin/edgegw" ]; then
    die "no previous version to roll back to (only $CUR is installed)" 2
fi

note "rolling back edgegw $CUR -> $PREV"
install_unit_from "$PREV"
set_link current "$PREV"
set_link previous "$CUR"
if restart_and_check "$PREV"; then
    note "ROLLED BACK to edgegw $PREV; $CUR is kept as previous"
    exit 0
fi

note "edgegw $PREV is not healthy: switching back to $CUR"
install_unit_from "$CUR"
set_link current "$CUR"
set_link previous "$PREV"
if restart_and_check "$CUR"; then
    note "NOT ROLLED BACK: $PREV failed; $CUR is running again"
    exit 1
fi
note "neither $PREV nor $CUR runs healthily: journalctl -u $SERVICE -n 200"
exit 3
