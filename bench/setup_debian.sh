#!/usr/bin/env bash
# Install the Debian packages needed by the Postfix+OpenDKIM benchmark harness.
# Idempotent; run as root on Debian 12 (bookworm).
#
#   sudo bash bench/setup_debian.sh
#
# - postfix          : the MTA under test, plus smtp-source / smtp-sink (in /usr/sbin)
# - opendkim         : the DKIM signing milter
# - opendkim-tools   : opendkim-genkey / opendkim-testkey (handy, not strictly needed)
# - openssl          : RSA key generation fallback when python `cryptography` is absent
# - iproute2         : `ss` (diagnostics only)
#
# The system-wide postfix/opendkim services are stopped and disabled afterwards: the
# harness runs its own private instances (own config/queue dirs) on high ports.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup_debian.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
PKGS=(postfix opendkim opendkim-tools openssl iproute2 ca-certificates)

need_install=0
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        need_install=1
    fi
done

if [ "$need_install" -eq 1 ]; then
    # Preseed postfix so the package does not prompt and does not create a live config.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string bench.example" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PKGS[@]}"
fi

for b in /usr/sbin/postfix /usr/sbin/smtp-sink /usr/sbin/smtp-source /usr/sbin/opendkim; do
    if [ ! -x "$b" ]; then
        echo "setup_debian.sh: missing $b after install" >&2
        exit 1
    fi
done

# Stop/disable the system services so nothing holds port 25 / conflicts with the
# private instances. All of this is best-effort: containers often have no init system.
for svc in postfix opendkim; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
        systemctl disable "$svc" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done
# A system postfix started without an init system (default config dir /etc/postfix).
if /usr/sbin/postfix status >/dev/null 2>&1; then
    /usr/sbin/postfix stop >/dev/null 2>&1 || true
fi
# A system opendkim daemon started from /etc/opendkim.conf (pid file by Debian default).
for pf in /run/opendkim/opendkim.pid /var/run/opendkim/opendkim.pid; do
    if [ -s "$pf" ]; then
        pid="$(cat "$pf")"
        if [ -n "$pid" ] && grep -qs opendkim "/proc/$pid/comm"; then
            kill "$pid" 2>/dev/null || true
        fi
    fi
done

# The private instances need these system accounts (created by the packages).
getent passwd postfix >/dev/null || { echo "setup_debian.sh: user postfix missing" >&2; exit 1; }
getent group postdrop >/dev/null || { echo "setup_debian.sh: group postdrop missing" >&2; exit 1; }
getent passwd opendkim >/dev/null || { echo "setup_debian.sh: user opendkim missing" >&2; exit 1; }

echo "setup_debian.sh: ok ($(/usr/sbin/postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /'), $(/usr/sbin/opendkim -V 2>/dev/null | head -1))"
