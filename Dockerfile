# syntax=docker/dockerfile:1
# The tideway image: the binary built from the locked dependencies in a Rust image, then alone on a
# distroless base — glibc and libgcc, no shell, no package manager — running as a non-root user.
#   docker build -t tideway .
# The build step is the command CI runs (`.ci/run`), so it is known to work without a docker engine.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tideway \
    && install -D -m 0755 target/release/tideway /out/tideway

# The distroless image of the same Debian release as the build image: the glibc the binary links against.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tideway" \
      org.opencontainers.image.description="A connection-aware autoscaling reverse proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tideway-proxy/tideway"
COPY --from=build /out/tideway /tideway
# distroless's nonroot user; the Helm chart runs the pod as the same ids.
USER 65532:65532
# The proxy, the metrics and health endpoints, and the internal listener of [cluster].
EXPOSE 8080 9090 7946
ENTRYPOINT ["/tideway"]
CMD ["serve", "--config", "/etc/tideway/tideway.toml"]
