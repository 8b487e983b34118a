#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian/Ubuntu machine: system packages, Node 24 LTS, npm packages, build.
# Called by `make demo` and `make test`; safe to run again (each step checks before it acts).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION="24.21.0"
APT_PACKAGES=(softhsm2 libengine-pkcs11-openssl opensc xmlsec1 python3-lxml openssl ca-certificates)

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing apt packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
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

install_apt_packages
install_node
# shellcheck source=scripts/env.sh
. scripts/env.sh

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  if ! ci_out=$(npm ci --no-audit --no-fund --loglevel=error 2>&1); then
    printf '%s\n' "$ci_out" | grep -E '^npm error (code|Missing)' >&2 || printf '%s\n' "$ci_out" | tail -n 20 >&2
    # npm 11 refuses `npm ci` when a package's per-platform optional binaries are missing from the lock file
    # (npm/cli#4828, #8320): @duckdb/node-api's are, because the registry reachable here does not serve the other
    # platforms' builds. `npm install` installs the locked versions of everything the lock does list.
    log "npm ci refused the lock file (missing other-platform optional binaries); installing the locked versions with npm install"
    npm install --no-audit --no-fund --loglevel=error >&2
  fi
fi
log "building"
npx tsc -p tsconfig.json >&2
log "ready: node $(node --version)"
