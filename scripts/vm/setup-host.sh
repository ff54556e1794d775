#!/usr/bin/env bash
# Prepare a Debian (bookworm) host for the real-kernel VM tests. Idempotent; a warm run takes
# a second or two.
#
#  * apt packages: qemu (TCG is enough), static busybox, kmod, cpio, dmsetup, lvm2 (its `lvm`
#    goes into the guest: the benchmark's LVM snapshot reference), the Rust build dependencies
#    of lio-replica (libdevmapper-dev, libclang-dev, pkg-config), ruby (Vagrantfile syntax
#    check), shellcheck (script lint), and for the CIM-XML client test openssl (its
#    self-signed certificate), python3-venv (pywbem's environment) and sblim-wbemcli, and
#    lintian for the Debian package;
#  * the guest kernel: the package behind Debian's linux-image-amd64 metapackage, and
#    open-iscsi with its two libraries and sg3-utils with its library (the initiator's
#    `sg_persist`, for SCSI persistent reservations), fetched with `apt-get download` and
#    unpacked with `dpkg-deb -x` into the work dir. Nothing is installed into the host's boot
#    path.
#
# Writes $LIO_VM_DIR/host.env (KVER, KROOT, IROOT) for build-initramfs.sh and vm-test.
# env: LIO_VM_DIR (default /var/tmp/lio-replica-vm)
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

W=${LIO_VM_DIR:-/var/tmp/lio-replica-vm}
mkdir -p "$W/debs"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
# apt-get download runs as _apt, which cannot write into a root-owned 0755 directory
APT_DL=(apt-get -q)
[ "$(id -u)" -ne 0 ] || APT_DL+=(-o APT::Sandbox::User=root)

say() { echo "setup-host: $*"; }

PKGS=(busybox-static kmod cpio dmsetup lvm2 libdevmapper-dev libclang-dev pkg-config ruby shellcheck
      ca-certificates openssl python3-venv sblim-wbemcli lintian)

missing=()
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done

# apt lists are needed once per machine: refresh them only when a look-up fails
updated=0
apt_update() {
  [ "$updated" -eq 0 ] || return 1
  say "apt-get update"
  "${SUDO[@]}" apt-get update -qq
  updated=1
}
apt_install() {
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_install "${missing[@]}" || { apt_update && apt_install "${missing[@]}"; }
fi

# qemu-system-x86. Pitfall: some machines carry qemu-utils from bookworm-backports; bookworm's
# qemu-system-x86 (7.2) conflicts with it and apt would REMOVE qemu-utils. In that case take
# qemu-system-x86 from bookworm-backports as well, through a private source list and private
# list/cache directories, so the machine's own apt configuration stays untouched.
if ! command -v qemu-system-x86_64 >/dev/null; then
  if [[ $(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null) == *bpo* ]]; then
    B=$W/apt-bpo
    mkdir -p "$B/lists/partial" "$B/archives/partial"
    URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$URI" ] || URI=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$URI" ] || URI=http://deb.debian.org/debian
    echo "deb $URI bookworm-backports main" > "$B/sources.list"
    APTO=(-o "Dir::Etc::sourcelist=$B/sources.list"
          -o "Dir::State::lists=$B/lists" -o "Dir::Cache::archives=$B/archives"
          -o APT::Sandbox::User=root)
    say "installing qemu-system-x86 from bookworm-backports (qemu-utils is a backport)"
    "${SUDO[@]}" apt-get "${APTO[@]}" update -qq
    "${SUDO[@]}" apt-get "${APTO[@]}" install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
  else
    say "installing qemu-system-x86"
    apt_install qemu-system-x86 || { apt_update && apt_install qemu-system-x86; }
  fi
fi

# --- guest kernel + open-iscsi userspace: downloaded and unpacked, never installed
# "package version" of each candidate (one apt-cache call: each costs ~0.5 s)
candidates() {
  apt-cache policy "$@" 2>/dev/null |
    awk '/^[^ ]/{p=$1; sub(/:$/, "", p)} /^  Candidate: [0-9]/{print p, $2}'
}

download() { # package version -> path of its .deb in $W/debs (downloaded once per version)
  local pkg=$1 ver=$2 deb
  # file names carry the version without its epoch
  deb=$(find "$W/debs" -maxdepth 1 -name "${pkg}_${ver#*:}_*.deb" -print -quit)
  if [ -z "$deb" ]; then
    (cd "$W/debs" && "${APT_DL[@]}" download "$pkg=$ver" >/dev/null) || return 1
    deb=$(find "$W/debs" -maxdepth 1 -name "${pkg}_${ver#*:}_*.deb" -print -quit)
  fi
  [ -n "$deb" ] && echo "$deb"
}

unpack() { # dest-dir deb... : unpack once; the directory is complete when .done exists
  local dest=$1; shift
  [ -e "$dest/.done" ] && return 0
  rm -rf "$dest" "$dest.tmp"; mkdir -p "$dest.tmp"
  local d
  for d in "$@"; do dpkg-deb -x "$d" "$dest.tmp"; done
  # shared libraries come without their soname links (ldconfig makes them on install)
  [ ! -d "$dest.tmp/usr/lib/x86_64-linux-gnu" ] || ldconfig -n "$dest.tmp/usr/lib/x86_64-linux-gnu"
  touch "$dest.tmp/.done"
  mv "$dest.tmp" "$dest"
}

fetch() { # sets KDEB and IDEBS
  local deps kpkg pkgs=(open-iscsi libopeniscsiusr libisns0 sg3-utils libsgutils2-1.46-2) p ver d
  deps=$(apt-cache depends linux-image-amd64 2>/dev/null) || return 1
  kpkg=$(awk '/Depends: linux-image-[0-9]/{print $2}' <<<"$deps" | head -n1)
  [ -n "$kpkg" ] || { echo "setup-host: cannot resolve linux-image-amd64" >&2; return 1; }
  local -A cand=()
  while read -r p ver; do cand[$p]=$ver; done < <(candidates "$kpkg" "${pkgs[@]}")
  for p in "$kpkg" "${pkgs[@]}"; do
    [ -n "${cand[$p]:-}" ] || { echo "setup-host: no candidate for $p" >&2; return 1; }
  done
  KDEB=$(download "$kpkg" "${cand[$kpkg]}") || return 1
  IDEBS=()
  for p in "${pkgs[@]}"; do
    d=$(download "$p" "${cand[$p]}") || return 1
    IDEBS+=("$d")
  done
}

if ! fetch && ! { apt_update && fetch; }; then
  # offline, or the mirror moved on: a previous complete set-up is still good
  if [ -r "$W/host.env" ]; then
    say "WARNING: could not fetch the kernel/open-iscsi/sg3-utils packages; using the previous set-up"
    exit 0
  fi
  exit 1
fi

KROOT=$W/kernel/$(basename "$KDEB" .deb)
if [ ! -e "$KROOT/.done" ]; then
  say "unpacking $(basename "$KDEB")"
  unpack "$KROOT" "$KDEB"
  KVER=$(ls "$KROOT/lib/modules")
  depmod -b "$KROOT" "$KVER"          # the .deb ships no modules.dep (its postinst makes it)
fi
KVER=$(ls "$KROOT/lib/modules")
[ -f "$KROOT/boot/vmlinuz-$KVER" ] || { echo "setup-host: no kernel image in $KROOT" >&2; exit 1; }

IKEY=$(for d in "${IDEBS[@]}"; do basename "$d"; done | sha256sum | cut -c1-12)
IROOT=$W/iscsi/$IKEY
if [ ! -e "$IROOT/.done" ]; then
  say "unpacking open-iscsi and sg3-utils"
  unpack "$IROOT" "${IDEBS[@]}"
fi

# the mirror moves on with security updates: drop what the previous kernels left behind
find "$W/kernel" -mindepth 1 -maxdepth 1 ! -name "$(basename "$KROOT")" -exec rm -rf {} +
find "$W/iscsi" -mindepth 1 -maxdepth 1 ! -name "$IKEY" -exec rm -rf {} +
KEEP=()
for d in "$KDEB" "${IDEBS[@]}"; do KEEP+=(! -name "$(basename "$d")"); done
find "$W/debs" -maxdepth 1 -name '*.deb' "${KEEP[@]}" -delete

cat > "$W/host.env.tmp" <<EOF
KVER=$KVER
KROOT=$KROOT
IROOT=$IROOT
EOF
mv "$W/host.env.tmp" "$W/host.env"
say "kernel $KVER ($KROOT), open-iscsi in $IROOT"
