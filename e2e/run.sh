#!/usr/bin/env bash
# End-to-end test of the web page in a real browser: builds corral, makes a throwaway host
# (config, data and run dirs in a temporary directory; TCG, so no KVM needed) with a VM
# `demo` that boots the test guest and an admin user, starts `corral serve` on a free
# loopback port, and runs web.mjs (playwright-core driving Debian's chromium) against it.
# Screenshots go to target/e2e-artifacts/ (or $E2E_ARTIFACTS). Everything it started is
# ended and the temporary directory removed, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
artifacts=${E2E_ARTIFACTS:-$root/target/e2e-artifacts}
chromium=${CHROMIUM:-/usr/bin/chromium}

say() { echo "e2e: $*" >&2; }
for tool in node npm "$chromium"; do
    command -v "$tool" >/dev/null || { say "$tool is missing: run scripts/install-deps.sh"; exit 1; }
done

# The pinned playwright-core, installed from the lock file (no browser download: we drive
# the system's chromium).
pinned=$(node -p "require('./e2e/package.json').dependencies['playwright-core']")
have=$(node -p "try { require('./e2e/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$have" != "$pinned" ]; then
    say "installing playwright-core $pinned"
    (cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
fi

cargo build -p corral --locked --quiet
corral=$root/target/debug/corral
guest=$(bash guest/build.sh | tail -1)

# Short base path: unix socket paths are limited to 107 bytes.
work=$(mktemp -d /tmp/corral-e2e.XXXXXX)
serve_pid=""
cleanup() {
    local rc=$?
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        # First SIGTERM: no new work, running jobs finish; a second cancels them.
        kill -TERM "$serve_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$serve_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    # The VMs outlive corral by design: end every QEMU of this throwaway host.
    for pidfile in "$work"/run/vms/*/qemu.pid; do
        [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] && [ -f "$work/serve.log" ]; then
        say "corral serve's log:"
        sed 's/^/  /' "$work/serve.log" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT INT TERM

cat >"$work/corral.toml" <<EOF
data_dir = "$work/data"
run_dir = "$work/run"
[qemu]
accel = "tcg"
[metrics]
interval = "1s"
EOF
export CORRAL_CONFIG=$work/corral.toml

"$corral" vm create demo --memory 192M --disk 64M --display none \
    --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
    --cmdline "console=ttyS0 quiet panic=-1" >/dev/null
password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$password" | "$corral" user add e2e --role admin --password-stdin >/dev/null

"$corral" serve --listen 127.0.0.1:0 2>"$work/serve.log" &
serve_pid=$!
url=""
for _ in $(seq 300); do
    url=$(sed -n 's|.*listening on \(http://[^ ]*\).*|\1|p' "$work/serve.log" | head -1)
    [ -n "$url" ] && break
    kill -0 "$serve_pid" 2>/dev/null || { say "corral serve exited before listening"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { say "corral serve never said where it listens"; exit 1; }
say "corral serve at $url; screenshots in $artifacts"

rm -rf "$artifacts"
CORRAL_URL=$url CORRAL_USER=e2e CORRAL_PASSWORD=$password E2E_ARTIFACTS=$artifacts CHROMIUM=$chromium \
    node e2e/web.mjs
