# Sourced by the Makefile and scripts: puts the project's Node 24 first on PATH when the system one is older.
_pixproxy_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_pixproxy_root/.tools/node/bin/node" ]; then
  export PATH="$_pixproxy_root/.tools/node/bin:$PATH"
fi
# Node's official builds carry no OpenSSL engines directory; the libp11 engine lives in Debian's.
if [ -z "${OPENSSL_ENGINES:-}" ]; then
  for d in /usr/lib/x86_64-linux-gnu/engines-3 /usr/lib/aarch64-linux-gnu/engines-3; do
    [ -d "$d" ] && export OPENSSL_ENGINES="$d" && break
  done
fi
: "${PKCS11_MODULE_PATH:=/usr/lib/softhsm/libsofthsm2.so}"
export PKCS11_MODULE_PATH
unset _pixproxy_root
