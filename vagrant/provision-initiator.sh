#!/bin/sh
# Initiator VM: open-iscsi, root ssh access for the target's scenario runner.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends open-iscsi openssh-server >/dev/null
systemctl enable --now iscsid
mkdir -p /root/.ssh
if [ -f /vagrant/vagrant/.target-key.pub ]; then
  cat /vagrant/vagrant/.target-key.pub >> /root/.ssh/authorized_keys
fi
