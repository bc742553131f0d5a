# syntax=docker/dockerfile:1
# rattle's container image, built from source: `docker build -t rattle:0.1.0 .` (or podman/buildah).
# Two stages: the Rust toolchain builds the release binary; the runtime is distroless/cc (glibc
# and libgcc only: no shell, no package manager), running as the non-root user 65532.
# deploy/image/build.sh makes the equivalent image from an already-built binary with no base
# image and no network (how the tests build it); both lay out the same paths, user and volumes.

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit and buildah both honour them).
# The journal refuses a state directory that others can write (issue #19): state is 0700.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/rattle /out/usr/local/bin/rattle \
    && mkdir -p /out/var/lib/rattle/reports /out/var/lib/rattle/state \
    && chmod 0755 /out/var/lib/rattle /out/var/lib/rattle/reports \
    && chmod 0700 /out/var/lib/rattle/state

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="rattle" \
      org.opencontainers.image.description="Chaos engineering and resilience testing" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/usr/local/bin/rattle /usr/local/bin/rattle
COPY --from=build --chown=65532:65532 /out/var/lib/rattle /var/lib/rattle
USER 65532:65532
WORKDIR /var/lib/rattle
ENV RATTLE_STATE_DIR=/var/lib/rattle/state \
    HOME=/var/lib/rattle
# Reports (`rattle run` writes reports/<name>-<time>/ under the working directory) and the
# journal of active faults, which `rattle recover` reads after a crash: keep both.
VOLUME ["/var/lib/rattle/reports", "/var/lib/rattle/state"]
ENTRYPOINT ["/usr/local/bin/rattle"]
CMD ["--help"]
