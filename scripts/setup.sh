#!/usr/bin/env bash
# Installs the Debian 12 packages Slope builds against, only those that are missing.
# Safe to run again: it does nothing when everything is present.
set -euo pipefail
pkgs=(cmake ninja-build g++ python3 llvm-19-dev llvm-19-tools libzstd-dev zlib1g-dev
      libboost-dev libgtest-dev libbenchmark-dev valgrind
      libopenmpi-dev openmpi-bin # samples/mpi_gmm and its test
      python3-dev python3-numpy pybind11-dev python3-pytest python3-torch # import slope
      jq nodejs) # jq and nodejs: the tests that --json is strict JSON (skipped without them)
# Not needed to build or test: the plots of scripts/plot_gmm.py and
# samples/python/train_torch.py. Installed if it can be, and setup goes on without it.
optional=(python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
missing_optional=()
for p in "${optional[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing_optional+=("$p")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ((${#missing[@]} + ${#missing_optional[@]})); then
  $SUDO apt-get update -qq || true
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((${#missing_optional[@]})); then
  echo "setup: installing ${missing_optional[*]} (optional)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing_optional[@]}" || echo "setup: could not install ${missing_optional[*]}; going on"
fi
