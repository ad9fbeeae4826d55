#!/usr/bin/env bash
# Install edgegw as a systemd service on Raspberry Pi OS (Debian 12 "bookworm") or Debian.
#
#   sudo deploy/install.sh --config site.yaml            # from this source tree
#   sudo deploy/install.sh --wheel edgegw-0.2.0-py3-none-any.whl --config site.yaml
#
# Creates the system user `edgegw` (groups gpio, dialout), a virtualenv under
# /opt/edgegw/<version> with /opt/edgegw/current pointing at it, /etc/edgegw (config and
# identity), /var/lib/edgegw (the store), the unit /etc/systemd/system/edgegw.service, and
# /usr/local/bin/edgegw. With a config in place it enables and starts the service and waits
# until it reports ready. Running it again on an installed box changes nothing unless --force
# (use upgrade.sh for a new version). See docs/operations.md.
#
# Options:
#   --wheel FILE        install this wheel (default: the source tree this script is in)
#   --source DIR        install from this source tree
#   --config FILE       install FILE as /etc/edgegw/config.yaml (an existing, different config
#                       is kept: the new one is written beside it as config.yaml.new)
#   --extras LIST       pip extras, comma-separated: pi (RPi.GPIO, Pi 1-4) or pi5 (lgpio), web,
#                       sparkplug (docs/operations.md, "By board")
#   --no-systemctl      lay out files only: never call systemctl (also NO_SYSTEMD=1)
#   --no-user           do not create the service user (also EDGEGW_NO_USER=1)
#   --no-start          install and enable, but do not start
#   --force             install again even if this version is already current
#   --fix-permissions   only re-apply owners and modes under /etc/edgegw (after provisioning)
# Environment: DESTDIR (scratch root), PIP_ARGS, PYTHON and the rest listed in lib.sh.

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$DEPLOY_DIR/lib.sh"

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }

SOURCE=""
CONFIG=""
EXTRAS=""
START=1
FORCE=0
FIX_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) SOURCE=${2:?--wheel needs a file}; shift ;;
        --source) SOURCE=${2:?--source needs a directory}; shift ;;
        --config) CONFIG=${2:?--config needs a file}; shift ;;
        --extras) EXTRAS=${2:?--extras needs a list}; shift ;;
        --no-systemctl) NO_SYSTEMD=1 ;;
        --no-user) EDGEGW_NO_USER=1 ;;
        --no-start) START=0 ;;
        --force) FORCE=1 ;;
        --fix-permissions) FIX_ONLY=1 ;;
        -h | --help) usage 0 ;;
        *) printf 'edgegw: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done

need_root
take_lock

if [ "$FIX_ONLY" = 1 ]; then
    ensure_user
    fix_config_permissions
    say "permissions under $(r "$ETC") re-applied"
    exit 0
fi

if [ -z "$SOURCE" ]; then
    SOURCE=$(cd "$DEPLOY_DIR/.." && pwd)
fi
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then
    die "--config $CONFIG: no such file" 2
fi
check_python

OLD=$(current_version)
if [ -n "$OLD" ] && [ "$FORCE" != 1 ]; then
    die "edgegw $OLD is already installed in $(r "$OPT"): use upgrade.sh for a new version, or --force to reinstall" 2
fi

ensure_user
make_dirs

NEW=$(install_version "$SOURCE" "$EXTRAS")

# the config: never overwrite one that differs (that is the operator's, or provisioning's)
config_target=$(r "$ETC/config.yaml")
if [ -n "$CONFIG" ]; then
    if [ ! -f "$config_target" ]; then
        install -m 0640 "$CONFIG" "$config_target"
        say "installed $CONFIG as $config_target"
    elif ! cmp -s "$CONFIG" "$config_target"; then
        install -m 0640 "$CONFIG" "$config_target.new"
        warn "$config_target exists and differs: kept it; the new one is $config_target.new"
    fi
fi
fix_config_permissions
if ! validate_config "$NEW"; then
    rm -rf "$(r "$OPT/$NEW")"
    die "$config_target is not valid for edgegw $NEW (see above; nothing was changed)" 2
fi

install_unit_from "$NEW"
if [ -n "$OLD" ] && [ "$OLD" != "$NEW" ]; then
    set_link previous "$OLD"
fi
set_link current "$NEW"
link_command
prune_versions
note "edgegw $NEW installed in $(r "$OPT/$NEW") (current)"

if [ "$NO_SYSTEMD" = 1 ]; then
    say "(NO_SYSTEMD) not enabling or starting the service"
    exit 0
fi
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable "$SERVICE" >/dev/null 2>&1
if [ ! -f "$config_target" ]; then
    say "next: write $config_target (edgegw provision ...), then: systemctl start $SERVICE"
    exit 0
fi
if [ "$START" != 1 ]; then
    say "enabled; start it with: systemctl start $SERVICE"
    exit 0
fi
if restart_and_check "$NEW"; then
    note "edgegw $NEW is running: systemctl status $SERVICE, edgegw status"
else
    die "edgegw $NEW was installed but does not run healthily: journalctl -u $SERVICE -n 100"
fi
