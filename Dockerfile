# syntax=docker/dockerfile:1
#
# pglb container image. (The docker commands need a Docker engine; CI has
# none: deploy/validate.sh lints this file with checkov and hadolint, and
# checks that pglb links only what the runtime stage installs.)
#
#   docker build -t pglb:0.1.0 .
#   docker run --rm -v "$PWD/pglb.cfg:/etc/pglb/pglb.cfg:ro" -p 5432:5432 -p 8404:8404 pglb:0.1.0
#
# The image runs `pglb run -f /etc/pglb/pglb.cfg`: mount your configuration
# there (Kubernetes: the ConfigMap of deploy/kubernetes/pglb). Other
# subcommands use the same image: `docker run --rm -v ...:/etc/pglb:ro
# pglb:0.1.0 check -f /etc/pglb/pglb.cfg`, `... healthd --dsn ... --listen ...`.
#
# It runs as the unprivileged user 10001 and writes nothing but the runtime
# API socket, which belongs under /var/run/pglb (a volume when the root
# filesystem is read-only).
#
# No HEALTHCHECK: the ports pglb serves come from the configuration (the
# /healthz and /ready probes exist only where it has a stats listener), and
# the same image also runs `pglb healthd` and `pglb check`, so no single
# probe fits the image. Kubernetes ignores HEALTHCHECK and uses the probes in
# deploy/kubernetes/pglb/deployment.yaml; docker-compose.yml defines one per
# service. The image has no curl: those probes speak HTTP with bash's
# /dev/tcp.
# checkov:skip=CKV_DOCKER_2:No HEALTHCHECK on purpose, see the paragraph above: the probed port depends on the mounted configuration and on the subcommand (run, healthd).

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY pglb ./pglb
COPY tools ./tools
# The workspace's release profile keeps line tables (debug = 1) for local
# profiling; the image keeps symbol names for backtraces, not debug info.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pglb-tools --bin pglb \
 && install -m 0755 target/release/pglb /usr/local/bin/pglb

FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pglb \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pglb \
 && mkdir -p /etc/pglb /var/run/pglb \
 && chown 10001:10001 /var/run/pglb \
 && chmod 0750 /var/run/pglb
COPY --from=build /usr/local/bin/pglb /usr/local/bin/pglb
# `pglb ctl show stat` (e.g. through kubectl exec) finds the runtime API here.
ENV PGLB_SOCKET=/var/run/pglb/pglb.sock
USER 10001:10001
WORKDIR /var/run/pglb
# 5432: PostgreSQL clients; 8404: stats page, /metrics, /healthz, /ready.
EXPOSE 5432 8404
ENTRYPOINT ["pglb"]
CMD ["run", "-f", "/etc/pglb/pglb.cfg"]
