#!/usr/bin/env bash
# Build corral's tiny Linux test guest (kernel + two initramfs images) from
# Debian packages.  See guest/README.md for what the guest does.
#
# Usage: guest/build.sh [--out DIR] [--force] [--refresh]
#
#   --out DIR   where to put vmlinuz, initrd.img, initrd-qga.img and stamp
#               (default: ${CORRAL_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corral/guest})
#   --force     rebuild even if the outputs are up to date
#   --refresh   ask apt for the current package versions and rebuild only if
#               one of them changed since the last build (slower check)
#
# The output directory's absolute path is printed as the last line on stdout;
# all progress output goes to stderr.  When the outputs are up to date (same
# build.sh and init as last time) the script exits 0 without calling apt.

set -euo pipefail

# Keep stdout clean: fd 3 is the real stdout, everything else goes to stderr.
exec 3>&1 1>&2

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$SELF_DIR/$(basename "${BASH_SOURCE[0]}")"
INIT_SRC="$SELF_DIR/init"

KERNEL_META=${CORRAL_GUEST_KERNEL_META:-linux-image-cloud-amd64}
STAMP_FORMAT="corral-guest-stamp 1"

# Modules wanted in the guest, in the order we would like them loaded.
# Dependencies are added (and ordered first) automatically.
REQUIRED_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
    virtio_pci virtio_blk virtio_net virtio_console button evdev)
OPTIONAL_MODULES=(virtio_scsi)

log() { printf 'guest/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '4,15s/^# \{0,1\}//p' "$SELF" >&2
}

OUT=""
FORCE=0
REFRESH=0
while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || die "--out needs an argument"; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --force) FORCE=1; shift ;;
        --refresh) REFRESH=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
done
if [ -z "$OUT" ]; then
    OUT=${CORRAL_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corral/guest}
fi

[ -f "$INIT_SRC" ] || die "missing $INIT_SRC"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

SCRIPTS_HASH=$(cat "$SELF" "$INIT_SRC" | sha256sum | cut -d' ' -f1)

outputs_present() {
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/initrd-qga.img" ] && [ -s "$OUT/stamp" ]
}

# Fast path: same scripts as the last build and every output in place.  Package
# versions are only looked at again when building (or with --refresh).
stamp_scripts_match() {
    outputs_present || return 1
    local l1 l2
    { read -r l1 && read -r l2; } <"$OUT/stamp" || return 1
    [ "$l1" = "$STAMP_FORMAT" ] && [ "$l2" = "scripts $SCRIPTS_HASH" ]
}

finish() {
    # A build killed with SIGKILL leaves its temp dir behind; drop it if no
    # build is running right now.
    if compgen -G "$OUT/.build.*" >/dev/null && command -v flock >/dev/null 2>&1; then
        (flock -n 8 && rm -rf "$OUT"/.build.*) 8>>"$OUT/.lock" || true
    fi
    printf '%s\n' "$OUT" >&3
    exit 0
}

if [ "$FORCE" = 0 ] && [ "$REFRESH" = 0 ] && stamp_scripts_match; then
    finish
fi

# Serialize concurrent builds into the same directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT/.lock"
    flock 9
    # Someone else may have finished the build while we waited.
    if [ "$FORCE" = 0 ] && [ "$REFRESH" = 0 ] && stamp_scripts_match; then
        finish
    fi
fi

# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else return 1
    fi
}

# Only cpio is needed on the host (the guest's busybox comes from the
# downloaded package).
if ! command -v cpio >/dev/null 2>&1; then
    log "installing cpio"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends cpio >&2 \
        || die "please install cpio"
fi
for tool in apt-get apt-cache dpkg-deb gzip sha256sum ldd find sort; do
    command -v "$tool" >/dev/null 2>&1 || die "missing host tool: $tool"
done

APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 0 ] || return 1
    APT_UPDATED=1
    log "running apt-get update"
    as_root apt-get update -qq >&2 || { log "apt-get update failed"; return 1; }
}

# Print the candidate version of package $1 (empty if unknown).
candidate_version() {
    { apt-cache show --no-all-versions "$1" 2>/dev/null || true; } \
        | awk '/^Version: / && v == "" { v = $2 } END { print v }'
}

# Resolve linux-image-cloud-amd64 to the concrete linux-image-<abi>-cloud-amd64
# it depends on (e.g. linux-image-6.1.0-56-cloud-amd64).
resolve_kernel_package() {
    { apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null || true; } \
        | awk '/^Depends: / && p == "" {
                   sub(/^Depends: /, "")
                   n = split($0, alts, /[,|]/)
                   for (i = 1; i <= n; i++) {
                       split(alts[i], w, " ")
                       if (w[1] ~ /^linux-image-[0-9]/) { p = w[1]; break }
                   }
               }
               END { print p }'
}

resolve_versions() {
    KERNEL_PKG=$(resolve_kernel_package)
    if [ -z "$KERNEL_PKG" ] && apt_update_once; then
        KERNEL_PKG=$(resolve_kernel_package)
    fi
    [ -n "$KERNEL_PKG" ] || die "cannot resolve $KERNEL_META to a kernel package (is apt configured?)"
    KERNEL_VER=$(candidate_version "$KERNEL_PKG")
    BUSYBOX_VER=$(candidate_version busybox-static)
    QGA_VER=$(candidate_version qemu-guest-agent)
    [ -n "$KERNEL_VER" ] && [ -n "$BUSYBOX_VER" ] && [ -n "$QGA_VER" ] \
        || die "apt knows no candidate for $KERNEL_PKG, busybox-static or qemu-guest-agent"
}

stamp_text() {
    printf '%s\n' "$STAMP_FORMAT" "scripts $SCRIPTS_HASH" \
        "kernel $KERNEL_PKG $KERNEL_VER" "busybox-static $BUSYBOX_VER" \
        "qemu-guest-agent $QGA_VER"
}

resolve_versions
if [ "$FORCE" = 0 ] && outputs_present && [ "$(cat "$OUT/stamp")" = "$(stamp_text)" ]; then
    log "up to date ($KERNEL_PKG $KERNEL_VER)"
    finish
fi

# ---------------------------------------------------------------------------
# Build in a temporary directory next to the outputs
# ---------------------------------------------------------------------------

# Leftovers of builds that were killed (we hold the lock, so nobody else owns them).
rm -rf "$OUT"/.build.*
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log "building guest in $OUT"
log "kernel: $KERNEL_PKG $KERNEL_VER; busybox-static $BUSYBOX_VER; qemu-guest-agent $QGA_VER"

DEBS="$WORK/debs"
mkdir -p "$DEBS"
download() {
    # apt-get download runs unsandboxed as root; silence the warning about it.
    (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2)
}
if ! download "$KERNEL_PKG=$KERNEL_VER" "busybox-static=$BUSYBOX_VER" "qemu-guest-agent=$QGA_VER"; then
    # Stale package lists point at files the mirror no longer has.
    apt_update_once || die "apt-get download failed"
    resolve_versions
    download "$KERNEL_PKG=$KERNEL_VER" "busybox-static=$BUSYBOX_VER" "qemu-guest-agent=$QGA_VER" \
        || die "apt-get download failed"
fi

deb_of() {
    local f
    for f in "$DEBS"/*.deb; do
        if [ "$(dpkg-deb -f "$f" Package)" = "$1" ]; then printf '%s\n' "$f"; return 0; fi
    done
    die "downloaded package $1 not found"
}

X="$WORK/x"
mkdir -p "$X/kernel" "$X/busybox" "$X/qga"
log "extracting packages"
dpkg-deb -x "$(deb_of "$KERNEL_PKG")" "$X/kernel"
dpkg-deb -x "$(deb_of busybox-static)" "$X/busybox"
dpkg-deb -x "$(deb_of qemu-guest-agent)" "$X/qga"

# --- kernel -----------------------------------------------------------------
KREL=""
for d in "$X/kernel"/lib/modules/* "$X/kernel"/usr/lib/modules/*; do
    [ -d "$d" ] && { KREL=$(basename "$d"); MODROOT=$d; break; }
done
[ -n "$KREL" ] || die "no modules directory in $KERNEL_PKG"
VMLINUZ=$(ls "$X/kernel"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in $KERNEL_PKG"
log "kernel release $KREL"

# --- root filesystem tree ---------------------------------------------------
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt,var,lib/modules}
ln -s ../run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"

BB="$X/busybox/bin/busybox"
[ -x "$BB" ] || die "busybox binary missing from busybox-static package"
cp "$BB" "$ROOT/bin/busybox"
# One symlink per applet, at the path busybox itself suggests.
"$BB" --list-full | while read -r applet; do
    case $applet in ''|bin/busybox) continue ;; esac
    [ -e "$ROOT/$applet" ] || [ -L "$ROOT/$applet" ] && continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    # Relative link to /bin/busybox.
    up=$(dirname "$applet" | sed 's|[^/][^/]*|..|g')
    ln -s "$up/bin/busybox" "$ROOT/$applet"
done
[ -L "$ROOT/bin/sh" ] || die "busybox provides no sh applet"

install -m 0755 "$INIT_SRC" "$ROOT/init"

# poweroff/halt/reboot: the busybox applets (without -f) only signal PID 1 and
# expect busybox init there.  Our PID 1 is a shell script, so these paths are
# scripts that do the job directly (init traps the signals and calls them, for
# the applets busybox sh runs in preference to PATH).  They announce
# CORRAL-POWEROFF (or CORRAL-REBOOT) on the serial console first.
for cmd in poweroff halt reboot; do
    rm -f "$ROOT/sbin/$cmd"
    if [ "$cmd" = reboot ]; then action=reboot; marker=CORRAL-REBOOT; else action=poweroff; marker=CORRAL-POWEROFF; fi
    cat >"$ROOT/sbin/$cmd" <<EOF
#!/bin/sh
# corral guest: flush filesystems, announce, then $action immediately.
sync
con=/dev/ttyS0; [ -c "\$con" ] || con=/dev/console
# stty sets the line with TCSADRAIN, so it waits until the marker has left
# the UART before the machine goes away.  Bounded: a host that stopped reading
# the serial port must not be able to block the power-off.
timeout 2 sh -c 'echo $marker >"\$1" && stty -echo <"\$1"' sh "\$con" 2>/dev/null
exec /bin/busybox $action -f
EOF
    chmod 0755 "$ROOT/sbin/$cmd"
done
# qemu-ga's guest-shutdown runs "/sbin/shutdown -P|-H|-r +0 <message>".
cat >"$ROOT/sbin/shutdown" <<'EOF'
#!/bin/sh
# corral guest: minimal shutdown(8) for qemu-guest-agent.
for a in "$@"; do
    case $a in
        -r|--reboot) exec /sbin/reboot ;;
    esac
done
exec /sbin/poweroff
EOF
chmod 0755 "$ROOT/sbin/shutdown"

# ACPI power button: busybox acpid maps the evdev KEY_POWER event to the
# action "PWRF/00000080", i.e. runs /etc/acpi/PWRF/00000080.
mkdir -p "$ROOT/etc/acpi/PWRF"
cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
exec /sbin/poweroff
EOF
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"
printf 'PWRF PWRF/00000080\n' >"$ROOT/etc/acpid.conf"

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
printf 'corral-guest\n' >"$ROOT/etc/hostname"
cat >"$ROOT/etc/os-release" <<EOF
NAME="corral test guest"
ID=corral-guest
PRETTY_NAME="corral test guest ($KREL)"
VERSION_ID="$KERNEL_VER"
EOF

# --- kernel modules ---------------------------------------------------------
declare -A MOD_PATH=()   # module name -> path (relative to MODROOT)
while IFS= read -r f; do
    base=$(basename "$f")
    name=${base%%.ko*}
    MOD_PATH[${name//-/_}]=$f
done < <(cd "$MODROOT" && find kernel -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')

declare -A BUILTIN=()
if [ -f "$MODROOT/modules.builtin" ]; then
    while IFS= read -r f; do
        base=$(basename "$f"); name=${base%%.ko*}
        BUILTIN[${name//-/_}]=1
    done <"$MODROOT/modules.builtin"
fi

MODTMP="$WORK/mods"
mkdir -p "$MODTMP"
# Decompress (if needed) module $1 into $MODTMP/$1.ko.
unpack_module() {
    local src="$MODROOT/${MOD_PATH[$1]}" dst="$MODTMP/$1.ko"
    [ -f "$dst" ] && return 0
    case $src in
        *.ko.xz) xz -dc "$src" >"$dst" ;;
        *.ko.zst) zstd -qdc "$src" >"$dst" ;;
        *.ko.gz) gzip -dc "$src" >"$dst" ;;
        *) cp "$src" "$dst" ;;
    esac
}

# Dependencies of module $1, read from its .modinfo section ("depends=a,b").
# That is what depmod turns into modules.dep; Debian's kernel packages do not
# ship modules.dep (postinst generates it), so read the source directly.
module_deps() {
    tr '\0' '\n' <"$MODTMP/$1.ko" | sed -n 's/^depends=//p' | head -n1 \
        | tr ',' '\n' | sed '/^$/d; s/-/_/g'
}

declare -A MOD_STATE=()   # "" unvisited, 1 visiting, 2 done
MOD_ORDER=()
add_module() {   # $1 name, $2 required(1)/optional(0)
    local m=${1//-/_} dep
    case ${MOD_STATE[$m]:-} in
        2) return 0 ;;
        1) die "module dependency cycle at $m" ;;
    esac
    if [ -n "${BUILTIN[$m]:-}" ]; then
        log "module $m is built into the kernel"
        MOD_STATE[$m]=2
        return 0
    fi
    if [ -z "${MOD_PATH[$m]:-}" ]; then
        [ "$2" = 1 ] && die "kernel module $m not found in $KERNEL_PKG"
        log "optional module $m not available, skipping"
        MOD_STATE[$m]=2
        return 0
    fi
    MOD_STATE[$m]=1
    unpack_module "$m"
    for dep in $(module_deps "$m"); do
        add_module "$dep" 1
    done
    MOD_STATE[$m]=2
    MOD_ORDER+=("$m")
}
for m in "${REQUIRED_MODULES[@]}"; do add_module "$m" 1; done
for m in "${OPTIONAL_MODULES[@]}"; do add_module "$m" 0; done

: >"$ROOT/etc/modules.order"
for m in "${MOD_ORDER[@]}"; do
    cp "$MODTMP/$m.ko" "$ROOT/lib/modules/$m.ko"
    printf '%s.ko\n' "$m" >>"$ROOT/etc/modules.order"
done
log "modules (load order): ${MOD_ORDER[*]}"

# --- packing ----------------------------------------------------------------
CPIO_FLAGS=(-o -H newc -R 0:0 --quiet)
if cpio --help 2>/dev/null | grep -q -- --reproducible; then CPIO_FLAGS+=(--reproducible); fi

pack() {   # $1 tree, $2 output file
    # Fixed timestamps keep the images reproducible for identical inputs.
    find "$1" -exec touch -h -d @1 {} +
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio "${CPIO_FLAGS[@]}") | gzip -9 -n >"$2"
}

log "packing initrd.img"
pack "$ROOT" "$WORK/initrd.img"

# --- qemu-guest-agent variant -----------------------------------------------
QGA_BIN="$X/qga/usr/sbin/qemu-ga"
[ -x "$QGA_BIN" ] || die "qemu-ga missing from qemu-guest-agent package"
install -D -m 0755 "$QGA_BIN" "$ROOT/usr/sbin/qemu-ga"
mkdir -p "$ROOT/etc/qemu"
# Shared libraries: whatever the host's loader resolves for the extracted
# binary (the host runs the same Debian release), plus the loader itself.
LDD_OUT=$(ldd "$QGA_BIN" 2>&1) || die "ldd failed on qemu-ga: $LDD_OUT"
if grep -q 'not found' <<<"$LDD_OUT"; then
    die "qemu-ga needs libraries missing on this host:
$(grep 'not found' <<<"$LDD_OUT")
install them (e.g. apt-get install --no-install-recommends libglib2.0-0 libnuma1 liburing2 libudev1)"
fi
while read -r lib; do
    [ -n "$lib" ] || continue
    install -D -m 0755 "$(readlink -f "$lib")" "$ROOT$lib"
done < <(sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' <<<"$LDD_OUT")
INTERP=$(readelf -l "$QGA_BIN" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p' || true)
INTERP=${INTERP:-/lib64/ld-linux-x86-64.so.2}
[ -e "$ROOT$INTERP" ] || install -D -m 0755 "$(readlink -f "$INTERP")" "$ROOT$INTERP"

log "packing initrd-qga.img"
pack "$ROOT" "$WORK/initrd-qga.img"

cp "$VMLINUZ" "$WORK/vmlinuz"
stamp_text >"$WORK/stamp.new"

# --- publish ----------------------------------------------------------------
# Invalidate the stamp first, move each output into place atomically, and
# write the stamp last: an interrupted publish is simply rebuilt next time.
rm -f "$OUT/stamp"
for f in vmlinuz initrd.img initrd-qga.img; do
    mv -f "$WORK/$f" "$OUT/$f"
done
mv -f "$WORK/stamp.new" "$OUT/stamp"

log "done: vmlinuz $(stat -c %s "$OUT/vmlinuz") B, initrd.img $(stat -c %s "$OUT/initrd.img") B, initrd-qga.img $(stat -c %s "$OUT/initrd-qga.img") B"
finish
