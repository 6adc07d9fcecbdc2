#!/usr/bin/env bash
# The project's test command: installs the test tools, builds everything once, then runs the
# whole workspace test suite serially (the end-to-end tests each start a cluster of several
# processes). Extra arguments are passed to the test runner (a test name filter, for example).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup-test-tools.sh

VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"
export TINYDFS_AWS="$VENV/bin/aws"
export TINYDFS_PYTHON="$VENV/bin/python"
export TINYDFS_RCLONE_DEBIAN=/usr/bin/rclone
export TINYDFS_RCLONE_PYPI="$VENV/bin/rclone"
# Keep the user's own AWS/rclone settings out of the tests.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL AWS_CA_BUNDLE RCLONE_CONFIG || true

cargo build --workspace --all-targets

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace -j 1 --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast -- --test-threads=1 "$@"
fi
