#!/usr/bin/env bash
# Builds a `debian/bookworm64` Vagrant box for the libvirt provider from Debian's archive alone
# (no Vagrant Cloud): mmdebstrap makes the root file system with everything the suite needs
# (systemd, openssh, open-iscsi, targetcli-fb, sg3-utils, lvm2, dmsetup, ...), a raw disk gets
# one partition, ext4 and extlinux, and qemu-img makes it the box's qcow2. The box is cached
# under its inputs' hash (this script and the package list): a second run with the same inputs
# only prints the path.
#
#   vagrant/build-box.sh            prints the .box file's path on its last line
#   env: LIO_VM_DIR (/var/tmp/lio-replica-vm): the cache is $LIO_VM_DIR/boxes
#        BOX_MIRROR (http://deb.debian.org/debian)
# Needs root (mmdebstrap, a loop device, mount).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive
W=${LIO_VM_DIR:-/var/tmp/lio-replica-vm}
MIRROR=${BOX_MIRROR:-http://deb.debian.org/debian}
SIZE_GB=20

PACKAGES=(linux-image-amd64 systemd-sysv udev dbus openssh-server sudo ifupdown isc-dhcp-client
  rsync open-iscsi targetcli-fb sg3-utils lvm2 dmsetup kmod iproute2 procps ca-certificates
  python3 less)

say() { echo "build-box: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root"; exit 1; }

KEY=$( { cat "$0"; printf '%s\n' "${PACKAGES[@]}"; } | sha256sum | cut -c1-16)
BOX=$W/boxes/debian-bookworm64-$KEY.box
if [ -s "$BOX" ]; then
  say "cached: $BOX"
  echo "$BOX"
  exit 0
fi
need=()
for p in mmdebstrap extlinux syslinux-common e2fsprogs qemu-utils fdisk; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null; }
fi

mkdir -p "$W/boxes"
T=$(mktemp -d "$W/boxes/build.XXXXXX")
LOOP=
cleanup() {
  mountpoint -q "$T/mnt" 2> /dev/null && umount -R "$T/mnt"
  [ -z "$LOOP" ] || losetup -d "$LOOP" 2> /dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

# Vagrant's well-known insecure key: vagrant logs in with it once and puts a key of its own in
# its place (config.ssh.insert_key), as with every public box.
VAGRANT_PUB=$(find /usr/share/rubygems-integration /usr/lib/ruby /usr/share/vagrant -name vagrant.pub \
  -path '*keys*' 2> /dev/null | head -n 1 || true)
[ -n "$VAGRANT_PUB" ] || { say "vagrant's insecure public key not found: install vagrant first"; exit 1; }

say "root file system (mmdebstrap bookworm from $MIRROR)"
mkdir -p "$T/root"
# shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's root, expanded by its shell
mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook='echo vagrant > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 vagrant\n" > "$1/etc/hosts"' \
  --customize-hook='printf "/dev/vda1 / ext4 errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
  --customize-hook='printf "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n" > "$1/etc/network/interfaces"' \
  --customize-hook='chroot "$1" useradd -m -s /bin/bash -G sudo vagrant' \
  --customize-hook='echo vagrant:vagrant | chroot "$1" chpasswd' \
  --customize-hook='echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/vagrant"; chmod 0440 "$1/etc/sudoers.d/vagrant"' \
  --customize-hook='echo "UseDNS no" > "$1/etc/ssh/sshd_config.d/vagrant.conf"' \
  bookworm "$T/root" "$MIRROR"
install -d -m 0700 -o 1000 -g 1000 "$T/root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$VAGRANT_PUB" "$T/root/home/vagrant/.ssh/authorized_keys"
# fresh host keys at first boot, not the builder's
rm -f "$T/root"/etc/ssh/ssh_host_*
mkdir -p "$T/root/etc/systemd/system/ssh.service.d"
# (the unit's own ExecStartPre, sshd -t, fails without keys: it runs after the keys are made)
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  > "$T/root/etc/systemd/system/ssh.service.d/keys.conf"

say "disk image (${SIZE_GB} GiB sparse, one ext4 partition, extlinux)"
truncate -s "${SIZE_GB}G" "$T/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$T/disk.raw"
# the partition through a loop device of its own (offset and size), so that no partition
# device node is needed: containers often have no udev to make one
LOOP=$(losetup -f --show -o $((2048 * 512)) --sizelimit $(((SIZE_GB << 30) - 2048 * 512)) "$T/disk.raw")
mkfs.ext4 -q -L root "$LOOP"
mkdir -p "$T/mnt"
mount "$LOOP" "$T/mnt"
(cd "$T/root" && tar -cf - .) | (cd "$T/mnt" && tar -xpf -)
mkdir -p "$T/mnt/boot/extlinux"
extlinux --install "$T/mnt/boot/extlinux" 2> /dev/null
KVER=$(basename "$(ls -d "$T"/mnt/lib/modules/*)")
cat > "$T/mnt/boot/extlinux/extlinux.conf" << EOF
DEFAULT debian
TIMEOUT 1
LABEL debian
  LINUX /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND root=/dev/vda1 ro net.ifnames=0 console=ttyS0
EOF
umount "$T/mnt"
losetup -d "$LOOP"
LOOP=
dd if=/usr/lib/EXTLINUX/mbr.bin of="$T/disk.raw" bs=440 count=1 conv=notrunc status=none

say "qcow2 and box"
qemu-img convert -O qcow2 "$T/disk.raw" "$T/box.img"
rm -f "$T/disk.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$SIZE_GB" > "$T/metadata.json"
cat > "$T/Vagrantfile" << 'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "kvm"
  end
end
EOF
tar -C "$T" -czf "$BOX.part" metadata.json Vagrantfile box.img
mv "$BOX.part" "$BOX"
say "built $BOX ($(du -h "$BOX" | cut -f1))"
echo "$BOX"
