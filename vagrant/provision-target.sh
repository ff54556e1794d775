#!/bin/sh
# Target VM: LIO, device-mapper and lio-replica installed from its Debian package, the daemon
# under systemd; root's ssh key for the initiator VM.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=
for p in dmsetup kmod targetcli-fb sg3-utils lvm2 openssh-client; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then # (the box built by vagrant/build-box.sh has them all)
  apt-get update -qq
  # shellcheck disable=SC2086 # a list of names
  apt-get install -y -qq --no-install-recommends $need > /dev/null
fi
printf '%s\n' configfs target_core_mod target_core_iblock iscsi_target_mod dm-mod dm-mirror \
  dm-snapshot dm-raid dm-flakey dm-delay dm-zero > /etc/modules-load.d/lio-replica-e2e.conf
systemctl restart systemd-modules-load.service
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
# LIO's saved configuration, restored at boot (Debian's unit for it)
systemctl enable rtslib-fb-targetctl.service
# the package named by LIO_DEB (a file in target/deb), else the newest built on the host
# shellcheck disable=SC2012 # (names made by scripts/build-deb)
deb=/vagrant/target/deb/${LIO_DEB:-$(ls -t /vagrant/target/deb/lio-replica_*.deb | head -n 1 | xargs basename)}
dpkg -i "$deb"
systemctl is-active --quiet lio-replica.service || systemctl start lio-replica.service
install -d -m 0700 /root/.ssh
install -m 0600 /vagrant/vagrant/.keys/id_ed25519 /root/.ssh/id_ed25519
printf 'Host %s\n  StrictHostKeyChecking accept-new\n' "$INITIATOR_IP" > /root/.ssh/config
