#!/usr/bin/env bash
# Installs the Debian packages zerograd's demo and tests use, when run as root and missing:
# Fashion-MNIST (the data) and Chromium with its driver (browser tests of the report and the
# draw-a-digit page).
set -euo pipefail
packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
if [ "${1:-}" = "--tests" ]; then
    command -v chromium >/dev/null || packages+=(chromium)
    command -v chromedriver >/dev/null || packages+=(chromium-driver)
fi
if [ ${#packages[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root, so not installing ${packages[*]}; install them with apt-get to run everything" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${packages[@]}"
