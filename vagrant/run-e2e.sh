#!/bin/sh
# Run the tests/e2e scenarios on the target VM with the initiator side on the initiator VM.
# usage (on the target VM, as root): run-e2e.sh [SCENARIO.sh ...]
# The scenarios start a daemon of their own: the packaged one is stopped while they run and
# started again afterwards. The disks are found by their serials (lr-disk0...).
set -u
TOP=/vagrant
export INITIATOR="ssh:${INITIATOR_HOST:-192.168.56.11}"
export PORTAL_IP="${TARGET_IP:-192.168.56.10}"
pass=0; fail=0
[ $# -gt 0 ] || set -- "$TOP"/tests/e2e/[0-9]*.sh
was_active=0
if systemctl is-active --quiet lio-replica.service; then
  was_active=1
  systemctl stop lio-replica.service
fi
for s in "$@"; do
  if sh "$s" > "/tmp/$(basename "$s").log" 2>&1; then
    echo "PASS: $(basename "$s")"; pass=$((pass+1))
  else
    echo "FAIL: $(basename "$s"): $(grep 'FAIL' "/tmp/$(basename "$s").log" | tail -1)"; fail=$((fail+1))
    grep "FAIL" "/tmp/$(basename "$s").log"
  fi
  # each scenario cleans up after itself; make sure nothing is left for the next one
  iscsiadm -m node --logoutall=all >/dev/null 2>&1 || true
done
[ "$was_active" -eq 0 ] || systemctl start lio-replica.service
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
