#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds the test guest (cached
# outside the tree), checks the OpenAPI document with a real validator, then runs every test
# of the workspace against real QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bash guest/build.sh >/dev/null
cargo build --workspace --all-targets --locked
scripts/check-openapi.sh
cargo test --workspace --locked -- "$@"
