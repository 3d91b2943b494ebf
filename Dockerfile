# syntax=docker/dockerfile:1
#
# pushroll: a glibc release build on Debian 12 (bookworm), run on
# gcr.io/distroless/cc-debian12:nonroot (glibc 2.36, libgcc_s, CA
# certificates for the JWK set and the API server; no shell).
#
# The build stage runs scripts/build-static.sh, the same script a developer
# runs without Docker: it builds with --locked, checks that the binary needs
# nothing the runtime image lacks (shared libraries, glibc symbol versions)
# and smoke-tests `serve --demo`.
#
# Why bookworm and not the default rust:1.95 (trixie, glibc 2.41): a binary
# linked there may need glibc symbols newer than distroless/cc-debian12 has.
#
# A static musl build on gcr.io/distroless/static-debian12:nonroot also
# works: add `rustup target add x86_64-unknown-linux-musl`, `apt-get install
# musl-tools` (aws-lc-sys compiles its C with musl-gcc; its bindings for this
# target are pregenerated, so no cmake or clang), run the script with --musl
# and take target/x86_64-unknown-linux-musl/release/pushroll.
#
#   docker build -t ghcr.io/pushroll/pushroll:0.1.0 .

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
# The image's toolchain, not rust-toolchain.toml's component list (rustfmt
# and clippy are for development, not for this build).
ENV RUSTUP_TOOLCHAIN=1.95.0
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-static.sh --out /pushroll

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="pushroll" \
      org.opencontainers.image.description="Restarts Kubernetes workloads the moment a new container image is pushed" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /pushroll /pushroll
USER 65532:65532
# serve (8080) and index --watch (8081).
EXPOSE 8080 8081
ENTRYPOINT ["/pushroll"]
CMD ["serve"]
