#!/usr/bin/env bash
# Regenerates crates/pulserec-workspace-hack, the crate that makes every cargo command of this
# workspace (`--bin pulserec`, `--examples`, `--example X`, `-p X`, `test --workspace`) resolve
# the third-party dependencies with the same features, so a second command reuses the first
# one's build of burn instead of rebuilding it (docs/architecture.md, "One build per command").
#
# Run it after adding or changing a dependency or its features (needs `cargo install
# cargo-hakari`; CI and users never need it). cargo-hakari unifies the features of every member
# built with no, default and all features; "all" would put LibTorch and CUDA (`tch`, `cuda`) and
# rustls (`tls`) into every build, so they are switched off while it computes. xtask's features
# are unified too, but xtask does not depend on the crate: `cargo xtask assets` must not build
# burn.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-hakari >/dev/null || { echo "needs cargo-hakari: cargo install cargo-hakari --locked" >&2; exit 1; }
# Every member's manifest but the generated crate's own (restoring that would undo the generation).
manifests=(Cargo.toml $(ls crates/*/Cargo.toml | grep -v pulserec-workspace-hack) xtask/Cargo.toml)
backup=$(mktemp -d)
trap 'for m in "${manifests[@]}"; do cp "$backup/$(echo "$m" | tr / _)" "$m"; done; rm -rf "$backup"' EXIT
for m in "${manifests[@]}"; do cp "$m" "$backup/$(echo "$m" | tr / _)"; done
sed -i -E 's/^(tch|cuda|tls) = \[.*\]$/\1 = []/' "${manifests[@]}"
cargo hakari generate
# Restore the manifests (the EXIT trap does it again, harmlessly), then add the dependency lines.
for m in "${manifests[@]}"; do cp "$backup/$(echo "$m" | tr / _)" "$m"; done
cargo hakari manage-deps --yes
sed -i '/^pulserec-workspace-hack = /d' xtask/Cargo.toml
cargo metadata --format-version 1 > /dev/null   # Cargo.lock without xtask's edge
for m in "${manifests[@]}"; do cp "$m" "$backup/$(echo "$m" | tr / _)"; done
echo "crates/pulserec-workspace-hack regenerated; commit it with the manifests"
