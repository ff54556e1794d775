#!/bin/sh
# Run the tests/e2e scenarios on the target VM with the initiator side on the initiator VM.
# usage (on the target VM, as root): run-e2e.sh [SCENARIO.sh ...]
# The scenarios start a daemon of their own: the packaged one is stopped while they run and
# started again afterwards. The disks are found by their serials (lr-disk0...).
# Each scenario expects what the VM suite gives it, a fresh machine: before each one (and
# after the last) both hosts are reset: the initiator's sessions and node records, the
# scenario's daemon, LIO's whole configuration, the dm devices of the product and of the
# scenarios, the daemon's state directory.
set -u
TOP=/vagrant
export INITIATOR="ssh:${INITIATOR_HOST:-192.168.56.11}"
export PORTAL_IP="${TARGET_IP:-192.168.56.10}"
SSH="ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new ${INITIATOR#ssh:}"
export PATH="$PATH:/usr/sbin:/sbin"
pass=0; fail=0
[ $# -gt 0 ] || set -- "$TOP"/tests/e2e/[0-9]*.sh

reset() {
  # (a write to a disk that had gone away leaves a regular file where udev puts the node)
  $SSH 'iscsiadm -m node --logoutall=all; iscsiadm -m node -o delete; pkill -f "sh -s -- /tmp/e2e-io";
    find /dev -maxdepth 1 -name "sd*" -type f -delete' > /dev/null 2>&1
  pkill -x lio-replica 2> /dev/null && sleep 1
  targetctl clear > /dev/null 2>&1
  # ours and the scenarios' own, stacked: remove what is unused until nothing moves
  ours() { dmsetup ls 2> /dev/null | awk '$1 ~ /^(lio-replica-v1-|e2e-)/ {print $1}'; }
  for _ in 1 2 3 4 5 6; do
    left=$(ours)
    [ -n "$left" ] || break
    for d in $left; do dmsetup remove "$d" > /dev/null 2>&1; done
  done
  rm -rf /var/lib/lio-replica/* /tmp/e2e /tmp/e2e-io
  left=$(ours)
  [ -z "$left" ] || echo "reset: still present: $left"
}

was_active=0
if systemctl is-active --quiet lio-replica.service; then
  was_active=1
  systemctl stop lio-replica.service
fi
for s in "$@"; do
  reset
  if sh "$s" > "/tmp/$(basename "$s").log" 2>&1; then
    echo "PASS: $(basename "$s")"; pass=$((pass+1))
  else
    echo "FAIL: $(basename "$s"): $(grep 'FAIL' "/tmp/$(basename "$s").log" | tail -1)"; fail=$((fail+1))
    grep "FAIL" "/tmp/$(basename "$s").log"
  fi
done
reset
[ "$was_active" -eq 0 ] || systemctl start lio-replica.service
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
