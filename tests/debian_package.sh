#!/usr/bin/env bash
# The Debian package (cpack -G DEB): its dependencies are declared, and samples/external builds
# and runs against its files, unpacked into a temporary root. Run by ctest:
#   tests/debian_package.sh BUILD SRC
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$build" && cpack -G DEB -B "$work/deb" >/dev/null)
deb=$(ls "$work"/deb/slope_*_amd64.deb)
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for need in libllvm19 libstdc++6 libc6-dev; do
  [[ "$depends" == *"$need"* ]] || { echo "the package does not depend on $need" >&2; exit 1; }
done
dpkg-deb -x "$deb" "$work/root"
bash "$src/tests/external.sh" "$build" "$src" "$work/root/usr"
echo "debian package: dependencies declared, external project passes"
