#!/usr/bin/env bash
# Here (a machine with apt and a network), before a GPU session: download the few Debian
# packages build_standalone.sh needs and unpack them under .devdeps/root, which the device
# run carries (`carry: [".devdeps"]`; git-ignored through .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devdeps/' .git/info/exclude 2>/dev/null || echo '/.devdeps/' >> "$(git rev-parse --git-path info/exclude)"
mkdir -p .devdeps/debs .devdeps/root
(cd .devdeps/debs && apt-get download libjansson-dev libjansson4 zlib1g-dev zlib1g)
for f in .devdeps/debs/*.deb; do dpkg -x "$f" .devdeps/root; done
du -sh .devdeps
