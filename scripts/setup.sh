#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian/Ubuntu machine: system packages, Node 24 LTS, npm packages, build.
# Called by `make demo` and `make test`; safe to run again (each step checks before it acts).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION="24.21.0"
log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Node 24 comes from the npm registry (the node-linux-<arch> package carries the official binary), so the only
# prerequisite is whatever npm the machine already has.
install_node() {
  if command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" = "24" ]; then
    return
  fi
  local arch
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) log "unsupported architecture $(uname -m)"; exit 1 ;;
  esac
  local dir=".tools/node"
  if [ ! -x "$dir/node_modules/node-linux-$arch/bin/node" ] ||
     [ "$("$dir/node_modules/node-linux-$arch/bin/node" -p 'process.versions.node')" != "$NODE_VERSION" ]; then
    if ! command -v npm >/dev/null; then
      log "npm is needed to fetch Node $NODE_VERSION; installing Debian's npm"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >&2
    fi
    log "installing Node $NODE_VERSION from the npm registry into $dir"
    mkdir -p "$dir"
    npm install --silent --no-save --no-package-lock --prefix "$dir" "node-linux-$arch@$NODE_VERSION" >&2
  fi
  ln -sfn "node_modules/node-linux-$arch/bin" "$dir/bin"
}

# The system packages through the same script the container image uses (Dockerfile), so every run of this set-up
# (make demo, make test, CI) exercises the image's install steps: the runtime set plus SoftHSM, the native build
# tool chain (pkcs11js) and the test tools.
bash scripts/install-runtime.sh --dev
install_node
# shellcheck source=scripts/env.sh
. scripts/env.sh

bash scripts/install-runtime.sh --node-modules
log "building"
npx tsc -p tsconfig.json >&2
log "ready: node $(node --version)"
