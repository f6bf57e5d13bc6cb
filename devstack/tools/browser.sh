#!/usr/bin/env bash
# Installs the headless browser that the console's browser tests (tests/console/) drive with
# Selenium: Debian's `chromium` and `chromium-driver` packages, through apt-get (as root, or with
# password-less sudo). Nothing is done when both `chromium` and `chromedriver` are on PATH already.
#
# When they cannot be installed (no apt-get, no root), this says so and exits 0, so that the rest
# of `make test` still runs: the browser tests then fail with that message, they are never skipped.
set -euo pipefail

warn() {
    echo "warning: chromium and chromium-driver are not installed ($1): install them" \
        "(apt-get install -y chromium chromium-driver); the tests in tests/console/ fail until then" >&2
    exit 0
}

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium: $(chromium --version 2>/dev/null | head -n 1) already installed"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || warn "no apt-get on this machine"
sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || warn "needs root or password-less sudo"
    sudo=(sudo -n)
fi
echo "chromium: installing Debian's chromium and chromium-driver with apt-get..."
"${sudo[@]}" apt-get update -qq || warn "apt-get update failed"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
    || warn "apt-get install failed"
echo "chromium: $(chromium --version 2>/dev/null | head -n 1) installed"
