#!/usr/bin/env bash
# Remove edgegw: the service, the unit, /opt/edgegw and /usr/local/bin/edgegw.
#
#   sudo /opt/edgegw/current/deploy/uninstall.sh            # keeps config, identity and store
#   sudo /opt/edgegw/current/deploy/uninstall.sh --purge    # removes those and the user too
#
# Without --purge, /etc/edgegw (config, keys), /var/lib/edgegw (the store: telemetry not yet
# sent) and the user edgegw stay, so a reinstall carries on where this one stopped.
# The groups gpio and dialout are the system's and stay either way.
#
# Options: --purge, --no-systemctl (NO_SYSTEMD=1), --yes (do not ask before --purge).

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }

PURGE=0
YES=0
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1 ;;
        --yes) YES=1 ;;
        --no-systemctl) NO_SYSTEMD=1 ;;
        -h | --help) usage 0 ;;
        *) printf 'edgegw: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done

need_root

if [ "$PURGE" = 1 ] && [ "$YES" != 1 ]; then
    if [ ! -t 0 ]; then
        die "--purge deletes the config, the keys and unsent telemetry: add --yes to confirm" 2
    fi
    printf 'Delete %s, %s (keys, unsent telemetry) and user %s? [y/N] ' \
        "$(r "$ETC")" "$(r "$STATE")" "$SERVICE_USER"
    read -r answer
    case "$answer" in y | Y | yes) ;; *) die "nothing removed" 1 ;; esac
fi

if [ "$NO_SYSTEMD" != 1 ] && [ -f "$(r "$UNIT")" ]; then
    "$SYSTEMCTL" disable --now "$SERVICE" >/dev/null 2>&1 || warn "could not stop $SERVICE"
fi
rm -f "$(r "$UNIT")"
sysd daemon-reload
rm -f "$(r "$BIN_LINK")"
# this script may live under /opt/edgegw: bash keeps reading its open file after the rm
rm -rf "$(r "$OPT")"
note "edgegw removed from $(r "$OPT")"

if [ "$PURGE" != 1 ]; then
    say "kept $(r "$ETC") (config, identity), $(r "$STATE") (store) and user $SERVICE_USER;" \
        "remove them with --purge"
    exit 0
fi
rm -rf "$(r "$ETC")" "$(r "$STATE")"
if _users_possible && _db_has passwd "$SERVICE_USER"; then
    prefix=()
    mapfile -t prefix < <(_prefix_args)
    userdel "${prefix[@]}" "$SERVICE_USER"
    if _db_has group "$SERVICE_USER"; then
        groupdel "${prefix[@]}" "$SERVICE_USER"
    fi
fi
note "purged: $(r "$ETC"), $(r "$STATE") and user $SERVICE_USER removed"
