#!/bin/sh
# Installs the Debian packages the integration tests start for real (Prosody and ejabberd, and
# dnsmasq for SRV tests) when they are missing.  Needs root on Debian; does nothing when all are present.
set -eu
missing=""
command -v prosody >/dev/null 2>&1 || missing="$missing prosody"
dpkg -s lua-sec >/dev/null 2>&1 || missing="$missing lua-sec"
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing="$missing dnsmasq-base"
[ -x /usr/sbin/ejabberdctl ] || missing="$missing ejabberd"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing lua-unbound >/dev/null
