#!/usr/bin/env bash
# Install the system packages the real-keyring tests need (Debian/Ubuntu).
#
#   gnome-keyring  -> /usr/bin/gnome-keyring-daemon (the Secret Service)
#   dbus           -> /usr/bin/dbus-daemon (private session bus for the tests)
#   faketime       -> libfaketime (CLI lifecycle tests move the clock)
#   openssl        -> the client-side receipt verifier (docs/verify-receipt.sh)
#                     and /usr/bin/dbus-send (readiness probe; via dbus-bin)
#   keepassxc      -> /usr/bin/keepassxc-cli (import tests write real KDBX files)
#   pass, gnupg    -> /usr/bin/pass, /usr/bin/gpg (import tests write a real pass store)
#   xclip, xsel, xvfb -> the clipboard tests (`get -c`) on a private X display
#   oathtool       -> TOTP codes checked against an independent implementation
#   openssh-server, openssh-client -> `credvault ssh` against a real sshd and ssh-agent
#   zsh, fish      -> the generated completion scripts are parsed and run by the real shells
#   postgresql     -> initdb/pg_ctl/postgres + psql: the team backend's throwaway clusters
#                     (tests/pg_cluster.py; run as the unprivileged user credvault-pg)
#
# Idempotent: exits 0 at once when the tools are already there.  Only
# installs when running as root; otherwise prints one line and exits 0
# (the tests marked keyring_real then skip).
set -euo pipefail

need=()
command -v gnome-keyring-daemon >/dev/null 2>&1 || need+=(gnome-keyring)
if ! command -v dbus-daemon >/dev/null 2>&1 || ! command -v dbus-send >/dev/null 2>&1; then
    need+=(dbus)
fi
# libfaketime: the CLI lifecycle tests move time forward without any hook in credvault.
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# openssl >= 3: docs/verify-receipt.sh (the client's receipt check) is tested with it.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Import tests drive the real tools: keepassxc-cli writes KDBX/XML/CSV, pass + gpg a store.
command -v keepassxc-cli >/dev/null 2>&1 || need+=(keepassxc)
command -v pass >/dev/null 2>&1 || need+=(pass)
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
# the at-the-terminal commands: clipboard, TOTP, ssh, completion
command -v xclip >/dev/null 2>&1 || need+=(xclip)
command -v xsel >/dev/null 2>&1 || need+=(xsel)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v oathtool >/dev/null 2>&1 || need+=(oathtool)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
for tool in ssh ssh-agent ssh-add ssh-keygen; do
    command -v "$tool" >/dev/null 2>&1 || { need+=(openssh-client); break; }
done
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v fish >/dev/null 2>&1 || need+=(fish)
# PostgreSQL team backend (issue 14): server binaries live in /usr/lib/postgresql/*/bin
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    need+=(postgresql)
fi
# the clusters never run as root: as root the tests drop to this system user
if [ "${EUID:-$(id -u)}" -eq 0 ] && ! id credvault-pg >/dev/null 2>&1 && command -v useradd >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin credvault-pg
fi

if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi

if [ "${EUID:-$(id -u)}" -ne 0 ]; then
    echo "system-deps: missing ${need[*]} and not root; keyring_real tests will skip" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${need[*]} and no apt-get; keyring_real tests will fail" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${need[*]}" >&2
apt=(apt-get -o DPkg::Lock::Timeout=300)  # wait for a concurrent apt/dpkg
"${apt[@]}" update -qq >/dev/null
# gnome-keyring is always listed so its dependency on a session bus is met;
# dbus too, so dbus-daemon is there whichever session-bus provider apt picks.
"${apt[@]}" install -y -qq --no-install-recommends gnome-keyring dbus "${need[@]}" >/dev/null

command -v gnome-keyring-daemon >/dev/null 2>&1 || { echo "system-deps: gnome-keyring-daemon still missing" >&2; exit 1; }
for tool in dbus-daemon dbus-send; do
    command -v "$tool" >/dev/null 2>&1 || { echo "system-deps: $tool still missing" >&2; exit 1; }
done
