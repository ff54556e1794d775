#!/usr/bin/env bash
# Build the initramfs of an end-to-end test VM.
#
#   build-initramfs.sh OUT BINARY SCENARIO...
#
# OUT is the concatenation of two gzip'd cpio archives (the kernel unpacks both, the second
# one wins on conflicts):
#  * a base image, built once and cached in $LIO_VM_DIR/initramfs/ under a key of its inputs:
#    static busybox, the kernel module closure (LIO, device-mapper, md raid1, iSCSI initiator,
#    virtio) with modules.dep, dmsetup, lvm (with an lvm.conf for a system without udev),
#    kmod, iscsid/iscsiadm, sg_persist, their libraries, and glibc;
#  * a small overlay rebuilt every time: /init, BINARY as /usr/bin/<name> with its libraries,
#    and /e2e/ holding tests/e2e/lib.sh (or $E2E_LIB) and the SCENARIO files.
# Needs scripts/vm/setup-host.sh to have run (it writes $LIO_VM_DIR/host.env).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=${LIO_VM_DIR:-/var/tmp/lio-replica-vm}
[ $# -ge 3 ] || { echo "usage: $0 OUT BINARY SCENARIO..." >&2; exit 2; }
OUT=$1 BIN=$2
shift 2
[ -r "$W/host.env" ] || { echo "build-initramfs: run scripts/vm/setup-host.sh first" >&2; exit 1; }
hostenv() { sed -n "s/^$1=//p" "$W/host.env"; }
KVER=$(hostenv KVER) KROOT=$(hostenv KROOT) IROOT=$(hostenv IROOT)

LIBDIR=lib/x86_64-linux-gnu
# Kernel modules for the guest; modprobe adds their dependencies and the load order.
MODULES="configfs target_core_mod target_core_iblock target_core_file target_core_pscsi
 target_core_user iscsi_target_mod
 dm-mod dm-mirror dm-log dm-region-hash dm-snapshot dm-bufio dm-zero dm-raid raid1 md-mod
 dm-flakey dm-delay loop ext4
 iscsi_tcp libiscsi libiscsi_tcp scsi_transport_iscsi sd_mod
 virtio_pci virtio_blk crc32c_generic crct10dif_generic 9p 9pnet_virtio"

copy_libs() { # root binary: copy the shared libraries ldd lists for binary into root
  local root=$1 bin=$2 deps lib
  mkdir -p "$root/$LIBDIR"
  # open-iscsi's own two libraries live in the unpacked package, not on the host
  deps=$(LD_LIBRARY_PATH=$IROOT/usr/lib/x86_64-linux-gnu ldd "$bin" 2>/dev/null) || return 0 # static
  awk '/=> \//{print $3}' <<<"$deps" | while read -r lib; do cp -L "$lib" "$root/$LIBDIR/"; done
}

copy_bin() { # root source dest
  install -D -m755 "$2" "$1/$3"
  copy_libs "$1" "$2"
}

pack() { # dir out: gzip'd newc cpio, owned by root, in a stable order
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$2"
}

build_base() { # out
  local out=$1 r f rel a l
  r=$(mktemp -d "$W/initramfs/rootfs.XXXXXX")
  TMPS+=("$r")
  mkdir -p "$r"/{bin,sbin,etc/iscsi,etc/target,proc,sys,dev,tmp,run,var/lib/iscsi,var/lock,lib64,usr/bin,usr/sbin,root,e2e}
  mkdir -p "$r/$LIBDIR" "$r/run/lock/iscsi"
  ln -s ../run "$r/var/run"

  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done

  # module closure in load order
  # shellcheck disable=SC2086 # word splitting of the module list is intended
  modprobe -d "$KROOT" -S "$KVER" --show-depends -a $MODULES |
    awk '/^insmod /{print $2}' | awk '!seen[$0]++' > "$r/modules.tmp"
  while read -r f; do
    rel=${f#"$KROOT"/}
    mkdir -p "$r/$(dirname "$rel")"
    cp "$f" "$r/$rel"
    echo "/$rel"
  done < "$r/modules.tmp" > "$r/etc/modules.load"
  rm "$r/modules.tmp"
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    cp "$KROOT/lib/modules/$KVER/$f" "$r/lib/modules/$KVER/"
  done
  depmod -b "$r" "$KVER"          # in-guest modprobe (and kernel autoload) works

  copy_bin "$r" /usr/sbin/dmsetup sbin/dmsetup
  # LVM (the benchmark's reference for snapshots): the one `lvm` binary, called as `lvm CMD`.
  # No udev, no lvmpolld, no dmeventd here: lvm makes its own /dev nodes and polls a merge
  # itself; no metadata backups (nothing to keep in an initramfs)
  copy_bin "$r" /sbin/lvm sbin/lvm
  mkdir -p "$r/etc/lvm" "$r/run/lock/lvm"
  cat > "$r/etc/lvm/lvm.conf" <<'EOF'
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
devices {
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
}
global {
	use_lvmpolld = 0
}
backup {
	backup = 0
	archive = 0
}
EOF
  # a journalled file system for the reboot scenarios' state disk (busybox makes only ext2)
  copy_bin "$r" /sbin/mke2fs sbin/mkfs.ext4
  copy_bin "$r" /bin/kmod sbin/kmod
  for a in modprobe insmod lsmod rmmod modinfo depmod; do
    rm -f "$r/sbin/$a" "$r/bin/$a"
    ln -s kmod "$r/sbin/$a"
  done
  copy_bin "$r" "$IROOT/sbin/iscsid" sbin/iscsid
  copy_bin "$r" "$IROOT/sbin/iscsiadm" sbin/iscsiadm
  copy_bin "$r" "$IROOT/usr/bin/sg_persist" usr/bin/sg_persist
  # the glibc runtime any cargo-built binary needs, whatever ldd says about the binary at hand
  for l in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1; do
    cp -L "/$LIBDIR/$l" "$r/$LIBDIR/"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
  echo "/$LIBDIR" > "$r/etc/ld.so.conf"
  ldconfig -r "$r" 2>/dev/null || true

  cat > "$r/etc/iscsi/iscsid.conf" <<'EOF'
iscsid.startup = /sbin/iscsid
node.startup = manual
node.session.scan = auto
node.session.timeo.replacement_timeout = 120
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
EOF
  echo "InitiatorName=iqn.1993-08.org.debian:01:lio-replica-e2e" > "$r/etc/iscsi/initiatorname.iscsi"
  echo "root:x:0:0:root:/root:/bin/sh" > "$r/etc/passwd"
  echo "root:x:0:" > "$r/etc/group"
  echo "127.0.0.1 localhost" > "$r/etc/hosts"
  echo "$KVER" > "$r/etc/kver"

  pack "$r" "$out.tmp"
  mv "$out.tmp" "$out"
  echo "build-initramfs: base image $(basename "$out"): $(wc -l < "$r/etc/modules.load") modules," \
    "$(du -h "$out" | cut -f1) gz" >&2
}

build_overlay() { # out binary scenario...
  local out=$1 bin=$2 r s
  shift 2
  r=$(mktemp -d "$W/initramfs/overlay.XXXXXX")
  TMPS+=("$r")
  install -D -m755 "$HERE/init" "$r/init"
  copy_bin "$r" "$bin" "usr/bin/$(basename "$bin")"
  install -D -m644 "${E2E_LIB:-$ROOT/tests/e2e/lib.sh}" "$r/e2e/lib.sh"
  for s in "$@"; do install -m755 "$s" "$r/e2e/$(basename "$s")"; done
  pack "$r" "$out"
}

mkdir -p "$W/initramfs"
TMPS=()
trap 'rm -rf "${TMPS[@]}" "$OUT.overlay"' EXIT
KEY=$({
  echo "$KVER $KROOT $IROOT $MODULES"
  sha256sum "$0" /bin/busybox /usr/sbin/dmsetup /sbin/lvm /sbin/mke2fs /bin/kmod /$LIBDIR/libc.so.6 | cut -d' ' -f1
} | sha256sum | cut -c1-16)
BASE=$W/initramfs/base-$KEY.cpio.gz
if [ ! -s "$BASE" ]; then
  build_base "$BASE"
  find "$W/initramfs" -maxdepth 1 -name 'base-*.cpio.gz' ! -name "base-$KEY.cpio.gz" -delete
fi
build_overlay "$OUT.overlay" "$BIN" "$@"
cat "$BASE" "$OUT.overlay" > "$OUT"
