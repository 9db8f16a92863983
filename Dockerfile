# The replication hook: a static, stripped binary in an empty image, run as a non-root user.
# Build it on each platform (docker buildx --platform linux/amd64,linux/arm64).
FROM rust:1.95-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY hook hook
COPY txlog txlog
COPY tests/immudb-double tests/immudb-double
# A static (crt-static) glibc binary for the build platform: the hook resolves names itself
# (hickory), so nothing needs glibc's NSS at run time.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --target "$target" -p immudb-hook \
    && cp "target/$target/release/immudb-hook" /immudb-hook

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
