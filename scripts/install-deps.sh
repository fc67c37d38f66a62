#!/usr/bin/env bash
# Installs what corral and its tests need on Debian 12 (bookworm): QEMU 7.2 (system
# emulator and qemu-img, from the same release: a newer qemu-utils from backports must be
# replaced, hence the pinned versions), busybox-static and cpio for the test guest; chromium,
# node and npm for the web page's end-to-end test (e2e/run.sh), and a font for its screenshots;
# python3-aiosmtpd, the loopback SMTP server of the alert tests; the OpenAPI validator, munin-run
# and promtool (below).
# Idempotent: does nothing when everything is already in place.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo)" >&2; exit 1; }
    SUDO=sudo
fi

# openapi-spec-validator (PyPI) checks docs/api/openapi.json (scripts/check-openapi.sh). It
# lives in a venv of its own under the user's cache dir, so no system Python is touched.
OPENAPI_VALIDATOR_VERSION=0.9.0
OPENAPI_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/corral/openapi-venv"
install_openapi_validator() {
    # (Read whole before matching: `grep -q` closing the pipe early would make pip die of
    # SIGPIPE, and pipefail would then reinstall every time.)
    local shown
    shown=$("$OPENAPI_VENV/bin/python" -m pip show openapi-spec-validator 2>/dev/null || true)
    if grep -qx "Version: $OPENAPI_VALIDATOR_VERSION" <<<"$shown"; then
        return 0
    fi
    echo "install-deps: openapi-spec-validator $OPENAPI_VALIDATOR_VERSION in $OPENAPI_VENV" >&2
    rm -rf "$OPENAPI_VENV"
    mkdir -p "$(dirname "$OPENAPI_VENV")"
    python3 -m venv "$OPENAPI_VENV"
    "$OPENAPI_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION" >&2
}

# The real clients the metrics tests check corral's output with, unpacked from Debian's
# packages into the user's cache (nothing installed, no service started): munin-run from
# munin-node (run as `perl -T -I...`, see crates/corral/tests/munin.rs) and promtool from
# prometheus (a static binary; the package would also bring the server and ~10 web packages).
TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/corral/tools"
install_metric_tools() {
    if [ -x "$TOOLS_DIR/prometheus/usr/bin/promtool" ] && [ -f "$TOOLS_DIR/munin/usr/sbin/munin-run" ]; then
        return 0
    fi
    echo "install-deps: munin-run and promtool in $TOOLS_DIR" >&2
    local dl
    dl=$(mktemp -d)
    chmod 755 "$dl" # apt's _apt user downloads into it
    (cd "$dl" && apt-get download -qq munin-node munin-common libnet-server-perl liblist-moreutils-perl \
        liblist-moreutils-xs-perl libexporter-tiny-perl prometheus >&2) || {
        $SUDO apt-get update -qq
        (cd "$dl" && apt-get download -qq munin-node munin-common libnet-server-perl liblist-moreutils-perl \
            liblist-moreutils-xs-perl libexporter-tiny-perl prometheus >&2)
    }
    rm -rf "$TOOLS_DIR/munin" "$TOOLS_DIR/prometheus"
    mkdir -p "$TOOLS_DIR/munin" "$TOOLS_DIR/prometheus"
    for f in "$dl"/*.deb; do
        case "$(basename "$f")" in
            prometheus_*) dpkg-deb -x "$f" "$TOOLS_DIR/prometheus" ;;
            *) dpkg-deb -x "$f" "$TOOLS_DIR/munin" ;;
        esac
    done
    rm -rf "$dl"
    "$TOOLS_DIR/prometheus/usr/bin/promtool" --version 2>&1 | head -1 >&2
}

need=()
have_qemu=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
have_img=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [ -z "$have_qemu" ] || [ "$have_qemu" != "$have_img" ]; then
    need+=(qemu)
fi
for p in busybox-static cpio xz-utils chromium fonts-dejavu-core python3-venv python3-aiosmtpd perl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
# Any node >= 18 runs the e2e test, wherever it came from (a distribution's nodejs may bundle
# npm, and Debian's npm would conflict with it): only missing commands are installed.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -eq 0 ]; then
    install_openapi_validator
    install_metric_tools
    echo "install-deps: everything is installed (qemu-system-x86 $have_qemu)" >&2
    exit 0
fi

echo "install-deps: installing ${need[*]}" >&2
$SUDO apt-get update -qq
pkgs=()
for p in "${need[@]}"; do
    [ "$p" = qemu ] || pkgs+=("$p")
done
if [[ " ${need[*]} " == *" qemu "* ]]; then
    # The emulator's candidate version decides; qemu-utils must match it exactly.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "install-deps: no qemu-system-x86 package available" >&2; exit 1; }
    pkgs+=("qemu-system-x86=$v" "qemu-utils=$v")
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${pkgs[@]}" >&2
echo "install-deps: $(qemu-system-x86_64 --version | head -1); $(qemu-img --version | head -1); node $(node --version)" >&2
install_openapi_validator
install_metric_tools
