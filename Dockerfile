# syntax=docker/dockerfile:1.7
# One multi-stage build for every execbridge image:
#   docker build --target gateway    -t ghcr.io/execbridge/execbridge-gateway:0.1.0 .
#   docker build --target executor   -t ghcr.io/execbridge/execbridge-executor:0.1.0 .
#   docker build --target marketdata -t ghcr.io/execbridge/execbridge-marketdata:0.1.0 .
#   docker build --target operator   -t ghcr.io/execbridge/execbridge-operator:0.1.0 .
# The release images are distroless (glibc + libgcc, no shell, no package manager) and run
# as the nonroot user 65532, the uid the chart's securityContext expects. The `dev` target
# is for Tilt's live update only (it needs a shell to restart the process).
# Nothing else is needed to build: protoc comes from protoc-bin-vendored, SQLite is
# bundled, TLS is rustls.

# checkov:skip=CKV_DOCKER_2: Kubernetes ignores HEALTHCHECK; the chart probes gRPC health, and distroless has no shell or client to run one
# checkov:skip=CKV_DOCKER_7: the only unresolved base is ${DEV_BASE}, a pinned debian:bookworm-slim by default
ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm
# The dev image runs binaries built on the developer's machine: its glibc must be at least
# as new as the host's. Override when the host is newer than Debian bookworm.
ARG DEV_BASE=debian:bookworm-slim

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
# The context is an allow-list (.dockerignore): the workspace manifests, proto/ and the
# crates. Registry and target caches persist across builds in BuildKit cache mounts.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --locked --release \
        -p execbridge-gateway -p execbridge-executor -p execbridge-marketdata -p execbridge-operator \
        --bin execbridge-gateway --bin execbridge-executor --bin execbridge-marketdata --bin execbridge-operator \
    && mkdir -p /out \
    && cp target/release/execbridge-gateway target/release/execbridge-executor \
          target/release/execbridge-marketdata target/release/execbridge-operator /out/

# Writable directories owned by nonroot, copied into images that need them (the executor's
# journal mount point exists even without a volume, e.g. under `docker run`).
RUN mkdir -p /rootfs/var/lib/execbridge/journal /rootfs/etc/execbridge \
    && chown -R 65532:65532 /rootfs/var/lib/execbridge

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/execbridge/execbridge" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /

FROM runtime AS gateway
COPY --from=build /out/execbridge-gateway /usr/local/bin/execbridge-gateway
EXPOSE 50051 9101
ENTRYPOINT ["/usr/local/bin/execbridge-gateway"]

FROM runtime AS executor
COPY --from=build --chown=65532:65532 /rootfs/var/lib/execbridge /var/lib/execbridge
COPY --from=build /out/execbridge-executor /usr/local/bin/execbridge-executor
EXPOSE 50052 9102
VOLUME ["/var/lib/execbridge/journal"]
ENTRYPOINT ["/usr/local/bin/execbridge-executor"]

FROM runtime AS marketdata
COPY --from=build /out/execbridge-marketdata /usr/local/bin/execbridge-marketdata
EXPOSE 50053 9103
ENTRYPOINT ["/usr/local/bin/execbridge-marketdata"]

FROM runtime AS operator
COPY --from=build /out/execbridge-operator /usr/local/bin/execbridge-operator
EXPOSE 9104
ENTRYPOINT ["/usr/local/bin/execbridge-operator"]

# Tilt only: a binary built on the host (`.tilt-bin/`, see the Tiltfile) on a slim Debian
# with a shell, so live update can swap the binary and restart it in place.
FROM ${DEV_BASE} AS dev
ARG SERVICE
RUN mkdir -p /var/lib/execbridge/journal && chown -R 65532:65532 /var/lib/execbridge
COPY .tilt-bin/execbridge-${SERVICE} /usr/local/bin/app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/app"]
