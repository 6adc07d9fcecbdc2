#!/usr/bin/env bash
# The project's test command: installs the test tools, checks formatting and lints, builds
# everything once, then runs the whole workspace test suite serially (the end-to-end tests each start a cluster of several
# processes). Uses cargo-nextest when it is installed, else `cargo test`. Extra arguments go to
# the test runner (a test name filter, for example).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup-test-tools.sh

# Where the end-to-end client tests (tests/clients.rs) find their tools.
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"
export TINYDFS_AWS="$VENV/bin/aws"
export TINYDFS_PYTHON="$VENV/bin/python"
export TINYDFS_RCLONE_DEBIAN=/usr/bin/rclone
export TINYDFS_RCLONE_PYPI="$VENV/bin/rclone"
export TINYDFS_WEED="$VENV/bin/weed"
# Headless Chromium for the status page test (tests/ops.rs).
export TINYDFS_CHROMIUM=/usr/bin/chromium

# Lint gates: formatting and clippy over every member's code, tests and benches (without
# --workspace, member crates' tests and benches would go unlinted). Lints are declared once,
# under [workspace.lints] in Cargo.toml.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

cargo build --workspace --all-targets

if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doc tests: run them first, so that nextest's summary ends the output.
    cargo test --workspace --doc
    cargo nextest run --workspace --test-threads 1 --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast -- --test-threads=1 "$@"
fi
