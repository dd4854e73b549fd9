#!/usr/bin/env bash
# Packs what a GPU host needs to run this project into .device/ (git-ignored): Node 24
# (node.xz), node_modules without what only this machine uses (the TypeScript compiler, the
# Biome formatter's binaries, the headless-browser test's puppeteer and Chrome protocol, type
# declarations), and ../shared/device/run.sh. At most 64 MiB travel to the GPU host in all
# (tracked files included): node_modules as the base script packs it no longer fits.
# Use from the project root after `npm install`:  bash scripts/gpu-pack.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
mkdir -p .device
nodebin=node_modules/node/bin/node
ver=$("$nodebin" --version)
if [ ! -f .device/node.xz ] || [ "$(cat .device/node.version 2>/dev/null)" != "$ver" ]; then
  strip -o .device/node "$nodebin"
  xz -T0 -6 -f .device/node
  echo "$ver" > .device/node.version
fi
tmp=$(mktemp .device/modules.XXXXXX)
tar -C "$root" -cJf "$tmp" \
  --exclude=node_modules/node --exclude=node_modules/typescript --exclude='node_modules/@typescript' \
  --exclude='node_modules/@biomejs' --exclude=node_modules/puppeteer-core --exclude=node_modules/chromium-bidi \
  --exclude=node_modules/devtools-protocol --exclude='node_modules/@types' --exclude=node_modules/.cache node_modules
mv "$tmp" .device/modules.tar.xz
cp ../shared/device/run.sh .device/run.sh
du -sh .device/node.xz .device/modules.tar.xz | sed 's/^/packed: /'
