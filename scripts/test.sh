#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds the test guest (cached
# outside the tree), checks the OpenAPI document with a real validator, then runs every test
# of the workspace against real QEMU, and (unless test names were given) the web page's
# end-to-end test in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bash guest/build.sh >/dev/null
cargo build --workspace --all-targets --locked
scripts/check-openapi.sh
cargo test --workspace --locked -- "$@"
if [ $# -eq 0 ]; then
    bash e2e/run.sh
fi
