# The sonde agent image: one static binary (musl), nothing else; no shell, no package manager.
#
#   rustup target add x86_64-unknown-linux-musl
#   cargo build --release --locked -p sonde --target x86_64-unknown-linux-musl
#   docker build -t sonde:0.1.0 -f Dockerfile target/x86_64-unknown-linux-musl/release
#
# The build context is the directory holding the binary, so no file of the repository but
# `sonde` is sent to the daemon. The Helm chart runs it as `/sonde run`.
FROM scratch
COPY sonde /sonde
USER 0
ENTRYPOINT ["/sonde"]
CMD ["run"]
