#!/bin/sh
# Initiator VM: open-iscsi; root ssh access for the target's scenario runner, with the key
# pair the Vagrantfile made on the host.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=
for p in open-iscsi openssh-server sg3-utils; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086 # a list of names
  apt-get install -y -qq --no-install-recommends $need > /dev/null
fi
systemctl enable --now iscsid
install -d -m 0700 /root/.ssh
grep -qsF "$(cat /vagrant/vagrant/.keys/id_ed25519.pub)" /root/.ssh/authorized_keys ||
  cat /vagrant/vagrant/.keys/id_ed25519.pub >> /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
