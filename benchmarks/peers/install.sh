#!/bin/sh
# Optional: install the peer tools the credvault benchmark compares against.
# Needs root (apt) and an active virtualenv (pip). Nothing else in the
# benchmark installs anything system-wide.
set -eu
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update
# keepassxc brings keepassxc-cli (Debian 12 has no keepassxc-minimal).
$SUDO apt-get install -y --no-install-recommends pass keepassxc gnupg
# bench_terminal.py: `pass otp` (it runs oathtool), a headless display and its clipboard
$SUDO apt-get install -y --no-install-recommends pass-extension-otp xvfb xclip
# Debian's `gopass` package is aviau/gopass, not gopasspw/gopass: not installed.
PY="${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/}python3"
"$PY" -m pip install --quiet pykeepass
