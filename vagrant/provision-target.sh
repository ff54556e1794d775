#!/bin/sh
# Target VM: LIO, device-mapper, the lio-replica binary built on the host, ssh to the initiator.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends dmsetup kmod targetcli-fb openssh-client >/dev/null
for m in configfs target_core_mod target_core_iblock iscsi_target_mod dm-mod dm-mirror \
         dm-snapshot dm-raid dm-flakey; do modprobe "$m"; done
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
install -m 0755 /vagrant/target/release/lio-replica /usr/local/sbin/lio-replica
# scenarios reach the initiator over ssh as root (key made here, installed by the initiator)
[ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp /root/.ssh/id_ed25519.pub /vagrant/vagrant/.target-key.pub
