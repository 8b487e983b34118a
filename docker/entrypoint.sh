#!/usr/bin/env bash
# The image's entry point: prepares what the process needs, then replaces itself with Node (`exec`), so that Node is
# PID 1 and receives SIGTERM from `docker stop` or ECS itself (the proxy then drains requests and flushes its audit
# spool: src/server.ts). Arguments are a pix-proxy command line, `serve` by default (the Dockerfile's CMD), e.g.
# `docker run pix-proxy:0.1.0 hsm info --dir /var/lib/pix-proxy/pki/hsm`.
#
# AWS CloudHSM (ECS). When CLOUDHSM_HSM_IPS is set (the ENI IP addresses of the cluster's HSMs, comma-separated),
# CLOUDHSM_CUSTOMER_CA (the PEM text of the certificate that signed the cluster's CSR) is written where the Client
# SDK looks for it, /opt/cloudhsm/etc/customerCA.crt, and `configure-pkcs11 -a <ips>` points the PKCS#11 library at
# the HSMs. The image makes /opt/cloudhsm/etc a symlink to /run/cloudhsm/etc (scripts/install-runtime.sh
# --cloudhsm-deb), so this works on a read-only root file system with a writable /run/cloudhsm (tmpfs, task volume).
# Any failure stops the container before the proxy starts: a proxy that cannot reach its HSM must not come up.
#
# APP_DIR (default /app), CLOUDHSM_HOME (default /opt/cloudhsm) relocate the paths (tests).
set -euo pipefail

app_dir=${APP_DIR:-/app}
cloudhsm_home=${CLOUDHSM_HOME:-/opt/cloudhsm}

die() {
  printf 'pix-proxy entrypoint: %s\n' "$*" >&2
  exit 78 # EX_CONFIG, as the proxy's own configuration errors
}

configure_cloudhsm() {
  local configure="$cloudhsm_home/bin/configure-pkcs11"
  [ -x "$configure" ] || die "CLOUDHSM_HSM_IPS is set but $configure is missing: build the image with --build-arg CLOUDHSM_PKCS11_DEB_URL=… and CLOUDHSM_PKCS11_DEB_SHA256=… (Dockerfile)"
  local ca=${CLOUDHSM_CUSTOMER_CA:-}
  case "$ca" in
    *'-----BEGIN CERTIFICATE-----'*'-----END CERTIFICATE-----'*) ;;
    '') die "CLOUDHSM_HSM_IPS is set but CLOUDHSM_CUSTOMER_CA is empty: it must hold the PEM text of the cluster's issuing certificate (customerCA.crt)" ;;
    *) die "CLOUDHSM_CUSTOMER_CA is not a PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)" ;;
  esac
  local ips=() parts=() ip
  IFS=', ' read -r -a parts <<< "$CLOUDHSM_HSM_IPS"
  for ip in "${parts[@]}"; do
    [ -n "$ip" ] || continue
    # Only IPv4/IPv6 characters: the value goes on a command line.
    [[ "$ip" =~ ^[0-9A-Fa-f.:]+$ ]] || die "CLOUDHSM_HSM_IPS: \"$ip\" is not an IP address"
    ips+=("$ip")
  done
  [ "${#ips[@]}" -gt 0 ] || die "CLOUDHSM_HSM_IPS holds no IP address"

  # etc/ is a symlink into the (empty at start) run directory: create its target and restore the shipped files.
  local etc
  etc=$(readlink -m "$cloudhsm_home/etc")
  mkdir -p "$etc"
  if [ -d "$cloudhsm_home/etc.dist" ]; then
    cp -an "$cloudhsm_home/etc.dist/." "$etc/"
  fi
  printf '%s\n' "${ca%$'\n'}" > "$cloudhsm_home/etc/customerCA.crt"
  # Client SDK 5 logs to a file under /opt/cloudhsm/run by default: on a read-only file system that is not
  # writable, and in a container the log belongs on stderr.
  "$configure" -a "${ips[@]}" --hsm-ca-cert "$cloudhsm_home/etc/customerCA.crt" --log-type term >&2 ||
    die "$configure -a ${ips[*]} failed (exit $?)"
  printf 'pix-proxy entrypoint: CloudHSM PKCS#11 library configured for %s\n' "${ips[*]}" >&2
}

if [ -n "${CLOUDHSM_HSM_IPS:-}" ]; then
  configure_cloudhsm
fi

# The PKCS#11 library the proxy is told to use must be in the image: without it the proxy would fail inside the HSM
# layer or the TLS engine, further from the cause (an image built without the CloudHSM library).
module=${PIXPROXY_HSM_MODULE_PATH:-}
if [ "${1:-serve}" = serve ] && [ -n "$module" ] && [ ! -f "$module" ]; then
  die "PIXPROXY_HSM_MODULE_PATH is $module, which this image does not have: build it with --build-arg CLOUDHSM_PKCS11_DEB_URL=… and CLOUDHSM_PKCS11_DEB_SHA256=… (Dockerfile), or use the local target (SoftHSM)"
fi

exec node "$app_dir/dist/tools/cli/main.js" "$@"
