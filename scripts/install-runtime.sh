#!/usr/bin/env bash
# What pix-proxy runs on, installed in one place: the container image (Dockerfile) and scripts/setup.sh (which every
# `make demo` and `make test` runs, so CI) both install through this script, so the image's install steps run on
# every CI machine even where no Docker engine exists. Idempotent: each step checks before it acts, and a machine
# that has everything is left alone without touching the network.
#
# usage: scripts/install-runtime.sh [--softhsm] [--build] [--dev] [--node-modules [--omit-dev]]
#                                   [--cloudhsm-deb PATH|URL --cloudhsm-sha256 HEX] [--clean] [--check | --print]
#        scripts/install-runtime.sh --engines-dir
#
# apt packages (the runtime set is always included):
#   runtime      libengine-pkcs11-openssl ca-certificates: the libp11 OpenSSL engine the mTLS client key is used
#                through (docs/hsm-and-tls.md)
#   --softhsm    softhsm2: the local token (the image's `local` target, docker-compose.yml)
#   --build      python3 make g++: node-gyp compiles pkcs11js, graphene-pk11's native binding (image build stages)
#   --dev        --softhsm and --build, plus opensc xmlsec1 python3-lxml openssl: what the tests use (setup.sh), and
#                nginx: the plain mutual-TLS forwarding proxy bench/e2e measures pix-proxy against
# other steps:
#   --node-modules   in the current directory, when node_modules is missing or older than package-lock.json:
#                    `npm ci` (exactly the locked tree; the lock file is never rewritten)
#   --omit-dev       with --node-modules: production dependencies only (npm ci --omit=dev)
#   --cloudhsm-deb   install the AWS CloudHSM Client SDK 5 PKCS#11 library from a .deb (a path, or an https URL);
#                    --cloudhsm-sha256 (the package's SHA-256) is required. An empty value skips the step, so the
#                    Dockerfile passes its build argument through as is. Then /opt/cloudhsm/etc becomes a symlink
#                    to /run/cloudhsm/etc (the shipped files kept in /opt/cloudhsm/etc.dist), so that
#                    docker/entrypoint.sh can configure the library on a read-only root file system.
#   --clean          after apt installs, remove apt's package lists and caches (image layers)
#   --check          install nothing: list what is missing and exit 1 if anything is (CI runs this)
#   --print          print the apt packages and commands the options select, change nothing
#   --engines-dir    print the directory holding the libp11 engine (pkcs11.so): the value of OPENSSL_ENGINES
# CLOUDHSM_HOME (default /opt/cloudhsm) and CLOUDHSM_RUN_DIR (default /run/cloudhsm) relocate the CloudHSM paths
# (tests; docker/entrypoint.sh reads the same two).
set -euo pipefail

RUNTIME_PACKAGES=(libengine-pkcs11-openssl ca-certificates)
SOFTHSM_PACKAGES=(softhsm2)
BUILD_PACKAGES=(python3 make g++)
DEV_PACKAGES=(opensc xmlsec1 python3-lxml openssl nginx)
# Where Debian's libengine-pkcs11-openssl puts the engine, per architecture (scripts/env.sh looks in the same places).
ENGINE_DIRS=(/usr/lib/x86_64-linux-gnu/engines-3 /usr/lib/aarch64-linux-gnu/engines-3)

cloudhsm_home=${CLOUDHSM_HOME:-/opt/cloudhsm}
cloudhsm_run=${CLOUDHSM_RUN_DIR:-/run/cloudhsm}

log() { printf '[install-runtime] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage_error() { log "$*"; sed -n '7,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

engines_dir() {
  local d
  for d in "${ENGINE_DIRS[@]}"; do
    if [ -f "$d/pkcs11.so" ]; then printf '%s\n' "$d"; return 0; fi
  done
  die "the libp11 engine (pkcs11.so) is not in ${ENGINE_DIRS[*]}: install libengine-pkcs11-openssl"
}

softhsm=0 build=0 dev=0 node_modules=0 omit_dev=0 clean=0 mode=install
cloudhsm_deb="" cloudhsm_sha256=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --softhsm) softhsm=1 ;;
    --build) build=1 ;;
    --dev) dev=1 softhsm=1 build=1 ;;
    --node-modules) node_modules=1 ;;
    --omit-dev) omit_dev=1 ;;
    --clean) clean=1 ;;
    --check) mode=check ;;
    --print) mode=print ;;
    --engines-dir) engines_dir; exit 0 ;;
    --cloudhsm-deb) [ "$#" -ge 2 ] || usage_error "--cloudhsm-deb needs a value"; cloudhsm_deb=$2; shift ;;
    --cloudhsm-sha256) [ "$#" -ge 2 ] || usage_error "--cloudhsm-sha256 needs a value"; cloudhsm_sha256=$2; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown option $1" ;;
  esac
  shift
done
[ "$omit_dev" -eq 0 ] || [ "$node_modules" -eq 1 ] || usage_error "--omit-dev goes with --node-modules"

packages=("${RUNTIME_PACKAGES[@]}")
[ "$softhsm" -eq 1 ] && packages+=("${SOFTHSM_PACKAGES[@]}")
[ "$build" -eq 1 ] && packages+=("${BUILD_PACKAGES[@]}")
[ "$dev" -eq 1 ] && packages+=("${DEV_PACKAGES[@]}")

npm_flags=(--no-audit --no-fund --loglevel=error)
[ "$omit_dev" -eq 1 ] && npm_flags+=(--omit=dev)

node_modules_stale() {
  [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]
}

missing_packages() {
  local p
  for p in "${packages[@]}"; do
    installed "$p" || printf '%s\n' "$p"
  done
}

apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

install_node_modules() {
  node_modules_stale || return 0
  log "npm ci ${npm_flags[*]}"
  # Exactly the locked tree, and never a rewrite of package-lock.json: npm ci or nothing. The lock describes every
  # platform's optional binaries of @duckdb/node-bindings (name, version, integrity, os/cpu) so that npm ci accepts
  # it on any platform (npm/cli#4828, #8320) while fetching only this one's; a lock that lacks them is a bug to fix
  # in the lock (`npm install --package-lock-only` where the registry describes them), not here.
  npm ci "${npm_flags[@]}" >&2 || die "npm ci refused package-lock.json (see npm's error above); nothing was installed"
}

install_cloudhsm() {
  [ -n "$cloudhsm_sha256" ] || die "--cloudhsm-deb needs --cloudhsm-sha256 (the SHA-256 of the package: a build must not install whatever the URL serves today)"
  [[ "$cloudhsm_sha256" =~ ^[0-9a-fA-F]{64}$ ]] || die "--cloudhsm-sha256 must be 64 hexadecimal digits"
  local tmp deb
  tmp=$(mktemp -d)
  deb="$tmp/cloudhsm-pkcs11.deb"
  case "$cloudhsm_deb" in
    https://*)
      log "downloading $cloudhsm_deb"
      # Node is on every machine this runs on (the image's base, setup.sh's first step); curl is not in the slim image.
      node --input-type=module -e '
        const [url, file] = process.argv.slice(1)
        const res = await fetch(url, { redirect: "follow" })
        if (!res.ok) { console.error(`GET ${url}: ${res.status}`); process.exit(1) }
        await (await import("node:fs/promises")).writeFile(file, Buffer.from(await res.arrayBuffer()))
      ' "$cloudhsm_deb" "$deb" || die "cannot download $cloudhsm_deb"
      ;;
    *://*) die "--cloudhsm-deb takes a file path or an https URL, not $cloudhsm_deb" ;;
    *) [ -f "$cloudhsm_deb" ] || die "no such file: $cloudhsm_deb"; cp "$cloudhsm_deb" "$deb" ;;
  esac
  printf '%s  %s\n' "${cloudhsm_sha256,,}" "$deb" | sha256sum --check --status ||
    die "the SHA-256 of $cloudhsm_deb is $(sha256sum "$deb" | cut -d' ' -f1), not $cloudhsm_sha256"
  log "installing the CloudHSM PKCS#11 library"
  apt_install "$deb"
  rm -rf "$tmp"
  [ -f "$cloudhsm_home/lib/libcloudhsm_pkcs11.so" ] || die "the package did not install $cloudhsm_home/lib/libcloudhsm_pkcs11.so"
  # configure-pkcs11 rewrites files under etc/ when the task starts (docker/entrypoint.sh): keep the shipped files
  # aside and point etc/ at the writable run directory, where the entry point copies them back first.
  if [ -d "$cloudhsm_home/etc" ] && [ ! -L "$cloudhsm_home/etc" ]; then
    rm -rf "$cloudhsm_home/etc.dist"
    mv "$cloudhsm_home/etc" "$cloudhsm_home/etc.dist"
  fi
  ln -sfn "$cloudhsm_run/etc" "$cloudhsm_home/etc"
}

case "$mode" in
  print)
    printf 'apt: %s\n' "${packages[*]}"
    [ "$node_modules" -eq 1 ] && printf 'npm: npm ci %s\n' "${npm_flags[*]}"
    [ -n "$cloudhsm_deb" ] && printf 'cloudhsm: %s (sha256 %s) -> %s, %s/etc -> %s/etc\n' \
      "$cloudhsm_deb" "${cloudhsm_sha256:-missing}" "$cloudhsm_home/lib/libcloudhsm_pkcs11.so" "$cloudhsm_home" "$cloudhsm_run"
    exit 0
    ;;
  check)
    problems=0
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -gt 0 ]; then log "missing apt packages: ${missing[*]}"; problems=1; fi
    if [ "$node_modules" -eq 1 ] && node_modules_stale; then log "node_modules is missing or older than package-lock.json"; problems=1; fi
    if [ -n "$cloudhsm_deb" ] && [ ! -f "$cloudhsm_home/lib/libcloudhsm_pkcs11.so" ]; then log "the CloudHSM PKCS#11 library is not installed"; problems=1; fi
    [ "$problems" -eq 0 ] && log "everything is installed: ${packages[*]}"
    exit "$problems"
    ;;
esac

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi
[ -n "$cloudhsm_deb" ] && install_cloudhsm
if [ "$clean" -eq 1 ]; then
  as_root apt-get clean
  as_root rm -rf /var/lib/apt/lists/*
fi
[ "$node_modules" -eq 1 ] && install_node_modules
exit 0
