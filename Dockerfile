# syntax=docker/dockerfile:1
# HookIt container image: `docker build -t hookit:dev .`
# Runs as uid 65532 (distroless "nonroot"); the binary is the entrypoint, so the
# subcommand is the container's first argument: controller | worker | api | migrate | standalone.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true

# 1. Dependencies only: build the manifest against stub sources so this layer is
#    cached until Cargo.toml / Cargo.lock change. Stubs are also made for any
#    target path the manifest names explicitly ([[bin]] path = "...").
COPY Cargo.toml Cargo.lock ./
RUN set -eux; \
    mkdir -p src; \
    echo 'fn main() {}' > src/main.rs; \
    sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' Cargo.toml \
      | while read -r p; do \
          mkdir -p "$(dirname "$p")"; [ -f "$p" ] || echo 'fn main() {}' > "$p"; \
        done; \
    cargo build --release --locked \
      || echo "warning: dependency pre-build failed; the next step builds everything"; \
    rm -rf src target/release/.fingerprint/hookit-* target/release/deps/hookit-* \
           target/release/deps/libhookit-* target/release/hookit*

# 2. The real sources. migrations/ and assets/ are embedded at compile time.
#    .dockerignore lets only what the build needs into the context.
COPY . .
RUN set -eux; \
    find src -name '*.rs' -exec touch {} +; \
    cargo build --release --locked --bin hookit; \
    install -D -m 0755 target/release/hookit /out/hookit

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="hookit" \
      org.opencontainers.image.description="Webhook delivery platform: at-least-once delivery on a PostgreSQL queue" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/hookit /usr/local/bin/hookit
ENV HOOKIT_LISTEN=0.0.0.0:8080 \
    HOOKIT_METRICS_LISTEN=0.0.0.0:9090
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/hookit"]
CMD ["standalone"]
