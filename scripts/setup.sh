#!/usr/bin/env bash
# Installs the Debian 12 packages Slope builds against, only those that are missing.
# Safe to run again: it does nothing when everything is present.
set -euo pipefail
pkgs=(cmake ninja-build g++ python3 llvm-19-dev llvm-19-tools libzstd-dev zlib1g-dev
      libboost-dev libgtest-dev libbenchmark-dev valgrind
      jq nodejs) # jq and nodejs: the tests that --json is strict JSON (skipped without them)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
