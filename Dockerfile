# The mailvault image: the operator and the CLI in one static-enough binary on distroless.
# `make image` builds it. The binary is glibc-linked (aws-lc-rs and ring are C underneath), so the
# build stage's Debian (bookworm, glibc 2.36) matches the runtime's (distroless cc-debian12).
# tests/chart.rs runs the same cargo command and checks the binary needs nothing distroless/cc
# lacks.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mailvault --bin mailvault && \
    install -D -m 0755 target/release/mailvault /out/mailvault

# No shell, no package manager; uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mailvault /usr/local/bin/mailvault
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mailvault"]
CMD ["operator"]
