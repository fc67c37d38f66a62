#!/usr/bin/env bash
# Checks docs/api/openapi.json (the REST API's document, generated from the code) with a real
# OpenAPI 3.1 validator, openapi-spec-validator, from the venv scripts/install-deps.sh makes.
# That the committed document is the one the code makes is checked by
# `cargo test -p corral-server openapi`.
set -euo pipefail
cd "$(dirname "$0")/.."
doc=${1:-docs/api/openapi.json}
validator="${XDG_CACHE_HOME:-$HOME/.cache}/corral/openapi-venv/bin/openapi-spec-validator"
[ -x "$validator" ] || { echo "check-openapi: $validator is missing; run scripts/install-deps.sh" >&2; exit 1; }
if ! out=$("$validator" "$doc" 2>&1); then
    echo "check-openapi: $doc is not a valid OpenAPI document:" >&2
    echo "$out" | cut -c1-400 | head -20 >&2
    exit 1
fi
echo "check-openapi: $out" >&2
