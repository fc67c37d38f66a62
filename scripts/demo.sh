#!/usr/bin/env bash
# The README's first command: installs what corral needs, builds and installs the `corral`
# binary, builds the tiny test guest, and boots it as the VM "demo".
#
# The demo uses TCG (software emulation) so that it works everywhere, even where KVM is
# missing or broken; your own VMs get KVM by default (see docs/config.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL=${CORRAL_DEMO_ACCEL:-tcg}

scripts/install-deps.sh
echo "demo: building corral (release)" >&2
cargo build --release --locked -p corral
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO install -m 0755 target/release/corral /usr/local/bin/corral
echo "demo: installed /usr/local/bin/corral" >&2

guest=$(bash guest/build.sh)
if ! corral vm show demo >/dev/null 2>&1; then
    corral vm create demo --memory 256M --disk 64M --accel "$ACCEL" --display none \
        --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" --cmdline "console=ttyS0 quiet panic=-1"
fi
state=$(corral vm status demo --json | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p')
case $state in
    running|paused) ;;
    *) corral vm start demo ;;
esac
log=$(corral vm show demo --json | sed -n 's/.*"console_log": "\(.*\)".*/\1/p')
for _ in $(seq 1 600); do
    grep -q CORRAL-GUEST-READY "$log" 2>/dev/null && break
    sleep 0.1
done
corral vm list
echo
echo "The guest's console:"
corral vm console demo --no-follow | tail -n 5
cat <<'MSG'

The VM "demo" runs under corral. Try:
  corral vm save demo      # suspend it to disk
  corral vm start demo     # resume it where it was
  corral vm stop demo      # ACPI power-off (the guest shuts itself down)
  corral vm delete demo
MSG
