# The replication hook: a static, stripped binary in an empty image, run as a non-root user.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY hook hook
COPY tests/immudb-double tests/immudb-double
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p immudb-hook \
    && cp target/x86_64-unknown-linux-musl/release/immudb-hook /immudb-hook

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="immudb-hook" \
      org.opencontainers.image.description="Converges an immudb primary and its read replicas" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/immudb-kubernetes/immudb-kubernetes"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /immudb-hook /immudb-hook
USER 65532:65532
HEALTHCHECK NONE
ENTRYPOINT ["/immudb-hook"]
