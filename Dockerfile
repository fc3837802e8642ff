# syntax=docker/dockerfile:1
#
# The ydht image: one binary, every service. Pick the service with the command:
#
#   docker build -t ydht:local .
#   docker run --rm -p 8080-8085:8080-8085 ydht:local            # `serve all` (the default command)
#   docker run --rm ydht:local serve node --help                # one service; see compose.yaml
#
# Build stage: the registry and target directories are BuildKit cache mounts, so
# a rebuild after a source change recompiles only ydht, not its dependencies.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Everything `cargo build` reads: the manifest, the build script, the code, the
# askama templates and static files, and the migrations sqlx embeds at compile time.
COPY Cargo.toml Cargo.lock build.rs askama.toml ./
COPY src ./src
COPY web ./web
COPY migrations ./migrations
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin ydht \
    && install -D -m 0755 target/release/ydht /out/ydht

# Runtime stage: Debian slim (same glibc as the build stage) with CA
# certificates only; rustls and SQLite are compiled into the binary.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so volumes and Kubernetes' runAsUser/fsGroup can name it.
RUN groupadd --system --gid 10001 ydht \
    && useradd --system --uid 10001 --gid ydht --home-dir /var/lib/ydht --shell /usr/sbin/nologin ydht \
    && install -d -o ydht -g ydht -m 0700 /var/lib/ydht
COPY --from=build /out/ydht /usr/local/bin/ydht

# Servers keep their data (WAL, queue, SQLite, generated secrets) here; give every
# container its own volume. Listen on every interface: the container's network is the boundary.
# Logs go to stderr without colour codes (NO_COLOR), for `docker logs` and log collectors.
ENV YDHT_DATA_DIR=/var/lib/ydht \
    YDHT_HOST=0.0.0.0 \
    NO_COLOR=1
VOLUME ["/var/lib/ydht"]
USER 10001:10001
# gateway 8080, users 8081, nodes 8082-8084, replicator 8085
EXPOSE 8080 8081 8082 8083 8084 8085

# Probes: every service answers GET /health with 200 and {"status":"healthy",…}
# on its own port. This check needs no curl (bash opens the TCP connection) and
# fits whichever service the container runs: it tries the port variables that are
# set (GATEWAY_PORT, USERMANAGER_PORT, DHTNODE_PORT, REPLICATOR_PORT), then the
# default ports, and is healthy when one answers. compose.yaml names each
# service's port itself; Kubernetes ignores HEALTHCHECK and uses the httpGet probes
# in deploy/k8s/. With TLS on, replace it (plain HTTP gets no answer from a TLS port).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "for port in ${GATEWAY_PORT:-} ${USERMANAGER_PORT:-} ${DHTNODE_PORT:-} ${REPLICATOR_PORT:-} 8080 8081 8082 8085; do (exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 2 grep -q healthy <&3) 2>/dev/null && exit 0; done; exit 1"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["ydht"]
CMD ["serve", "all"]
