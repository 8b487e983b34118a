# pix-proxy's container image. Build targets:
#   runtime (the default)  production: the proxy and its CLI on Node 24 LTS, the libp11 OpenSSL engine (mTLS key in
#                          the HSM). The AWS CloudHSM Client SDK 5 PKCS#11 library is added with two build arguments:
#                            docker build --build-arg CLOUDHSM_PKCS11_DEB_URL=https://…/cloudhsm-pkcs11_<version>_u22.04_amd64.deb \
#                                         --build-arg CLOUDHSM_PKCS11_DEB_SHA256=<sha256 of that file> -t pix-proxy:0.1.0 .
#                          or, from a .deb at hand, with a layer of your own on top of this image:
#                            FROM pix-proxy:0.1.0
#                            USER root
#                            COPY cloudhsm-pkcs11.deb /tmp/
#                            RUN /app/scripts/install-runtime.sh --cloudhsm-deb /tmp/cloudhsm-pkcs11.deb \
#                                  --cloudhsm-sha256 <sha256> --clean && rm /tmp/cloudhsm-pkcs11.deb
#                            USER 10001:10001
#                          docker/entrypoint.sh then configures it from CLOUDHSM_HSM_IPS and CLOUDHSM_CUSTOMER_CA.
#   local                  runtime + SoftHSM2: docker-compose.yml (the README's demo as containers) and local runs.
#
# The container runs as uid/gid 10001 and works with a read-only root file system. It writes only to:
#   /var/spool/pix-proxy  the audit spool (PIXPROXY_AUDIT_SPOOL_DIR): a volume (EFS in ECS) so rows survive the task
#   /tmp                  tmpfs: the HSM PIN fetched from Secrets Manager (a 0600 file for the engine), DuckDB spill
#   /run/cloudhsm         tmpfs or task volume, with CloudHSM: the Client SDK's configuration, written at start
# Ports: 8080 (PIXPROXY_LISTEN_PORT, EXPOSEd) is the callers' listener; 9464 (PIXPROXY_OPS_LISTEN_PORT) is the
# operations listener, plain HTTP on the container's loopback serving only GET /healthz, /readyz and /metrics, for
# the HEALTHCHECK and a metrics sidecar sharing the network namespace (an ECS task, a pod). It is not EXPOSEd.
# The system packages come from scripts/install-runtime.sh, which scripts/setup.sh (make test, CI) also runs.

FROM node:24.21.0-bookworm-slim AS base
WORKDIR /app
COPY scripts/install-runtime.sh /app/scripts/install-runtime.sh

# Production dependencies only. pkcs11js (graphene-pk11's binding) is a native addon: node-gyp compiles it here
# against the headers of the image's own Node, which the official image carries (nothing to download).
FROM base AS deps
ENV npm_config_nodedir=/usr/local
RUN /app/scripts/install-runtime.sh --build
COPY package.json package-lock.json /app/
RUN /app/scripts/install-runtime.sh --node-modules --omit-dev

# The TypeScript build (needs the dev dependencies; none of this stage reaches the image but dist/).
FROM base AS build
ENV npm_config_nodedir=/usr/local
RUN /app/scripts/install-runtime.sh --build
COPY package.json package-lock.json /app/
RUN /app/scripts/install-runtime.sh --node-modules
COPY tsconfig.json /app/
COPY src /app/src
COPY core /app/core
COPY tools /app/tools
RUN npx tsc -p tsconfig.json

# What both targets share. OPENSSL_ENGINES and PKCS11_MODULE_PATH are the variables of the local set-up
# (scripts/env.sh); the engine directory is per architecture, so one stable path links to it.
FROM base AS app
RUN /app/scripts/install-runtime.sh --clean \
 && ln -s "$(/app/scripts/install-runtime.sh --engines-dir)" /usr/local/lib/engines-3 \
 && groupadd --gid 10001 pixproxy \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pixproxy \
 && install -d -o 10001 -g 10001 -m 0750 /var/spool/pix-proxy /var/lib/pix-proxy /var/lib/pix-proxy/lake /run/cloudhsm \
 && chmod 1777 /tmp
# The operations listener is on by default: PIXPROXY_OPS_LISTEN_HOST keeps its default, 127.0.0.1, so it is reachable
# only from inside the container's network namespace (it has no TLS and no client check: keep it there). Another
# port is one variable away (a port already taken stops start-up); the HEALTHCHECK follows the variable.
ENV NODE_ENV=production \
    OPENSSL_ENGINES=/usr/local/lib/engines-3 \
    PIXPROXY_LISTEN_HOST=0.0.0.0 \
    PIXPROXY_LISTEN_PORT=8080 \
    PIXPROXY_OPS_LISTEN_PORT=9464 \
    PIXPROXY_AUDIT_SPOOL_DIR=/var/spool/pix-proxy \
    PIXPROXY_AUDIT_PARQUET_DIR=/var/lib/pix-proxy/lake
COPY --from=deps /app/node_modules /app/node_modules
COPY --from=build /app/dist /app/dist
COPY package.json /app/package.json
COPY docker /app/docker
# The writable paths are volumes, so a volume mounted there (Fargate has no tmpfs: ECS task volumes) inherits the
# ownership and mode set above: /tmp stays 1777, /run/cloudhsm 10001's.
VOLUME ["/var/spool/pix-proxy", "/tmp", "/run/cloudhsm"]
EXPOSE 8080
# Exec form throughout: node is PID 1 (entrypoint.sh ends in `exec node`) and gets the SIGTERM itself.
STOPSIGNAL SIGTERM
# Liveness through the operations listener: a real HTTP answer even when the callers' port demands a client
# certificate (docker/healthcheck.mjs). /healthz only: liveness decides replacement; readiness (/readyz) decides
# routing (the NLB's target health check), and an unready task, say one whose spool a Firehose outage filled, would
# not be helped by being replaced.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["node", "/app/docker/healthcheck.mjs", "/healthz"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["serve"]

FROM app AS local
RUN /app/scripts/install-runtime.sh --softhsm --clean \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pix-proxy/pki
ENV PKCS11_MODULE_PATH=/usr/lib/softhsm/libsofthsm2.so
USER 10001:10001

FROM app AS runtime
ARG CLOUDHSM_PKCS11_DEB_URL=""
ARG CLOUDHSM_PKCS11_DEB_SHA256=""
RUN /app/scripts/install-runtime.sh --cloudhsm-deb "${CLOUDHSM_PKCS11_DEB_URL}" --cloudhsm-sha256 "${CLOUDHSM_PKCS11_DEB_SHA256}" --clean
ENV PKCS11_MODULE_PATH=/opt/cloudhsm/lib/libcloudhsm_pkcs11.so
USER 10001:10001
