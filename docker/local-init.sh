#!/usr/bin/env bash
# docker-compose.yml's one-shot `init` service: the test PKI every other service uses, generated at run time into
# the shared `pki` volume (nothing is committed) and reused by later `docker compose up` runs
# (`docker compose down -v` starts over):
#   pki/hsm     a SoftHSM2 token holding the participant's (99999004) non-extractable signing and mTLS keys, the
#               token's test CA and the keys' certificates, user PIN in a 0600 file (pix-proxy hsm init)
#   pki/bacen   the BACEN simulator's PKI: its CA, BCB's TLS server and signing certificates, and the
#               counterparty participant 99999010's keys (pix-proxy simulator --pki-only)
#   pki/inbound the callers' side of the proxy's inbound mutual TLS (pix-proxy pki inbound): the proxy's server
#               certificate for `proxy`, localhost and 127.0.0.1 (server-ca.pem issued it), the core systems' client
#               CA, the `traffic` service's client certificate and allowlist.txt with its SHA-256 fingerprint, which
#               the local SSM gives the proxy (docker/local-aws.json); keys 0600
# APP_DIR (default /app) and LOCAL_STATE_DIR (default /var/lib/pix-proxy) relocate the paths (tests).
set -euo pipefail

app_dir=${APP_DIR:-/app}
state=${LOCAL_STATE_DIR:-/var/lib/pix-proxy}
pix_proxy=(node "$app_dir/dist/tools/cli/main.js")

if [ -f "$state/pki/hsm/hsm.json" ]; then
  printf 'init: reusing the token in %s\n' "$state/pki/hsm" >&2
else
  # No hsm.json means no token finished here: --force clears what an interrupted first run may have left.
  "${pix_proxy[@]}" hsm init --dir "$state/pki/hsm" --ispb 99999004 --force
fi
"${pix_proxy[@]}" simulator --pki-only --dir "$state/pki/bacen" --participant 99999010
if [ -f "$state/pki/inbound/inbound.json" ]; then
  printf 'init: reusing the inbound PKI in %s\n' "$state/pki/inbound" >&2
else
  # inbound.json is written last: without it a first run was interrupted, and --force starts the set over.
  "${pix_proxy[@]}" pki inbound --dir "$state/pki/inbound" --server-name proxy --server-name localhost --server-name 127.0.0.1 --force
fi
