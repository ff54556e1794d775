#!/bin/sh
# Run the tests/e2e scenarios on the target VM with the initiator side on the initiator VM.
# usage (on the target VM, as root): run-e2e.sh [SCENARIO.sh ...]
set -u
TOP=/vagrant
export INITIATOR="ssh:${INITIATOR_HOST:-192.168.56.11}"
export PORTAL_IP="${TARGET_IP:-192.168.56.10}"
export E2E_DISKS="${E2E_DISKS:-/dev/vdb /dev/vdc /dev/vdd /dev/vde /dev/vdf /dev/vdg}"
export PATH="/usr/local/sbin:$PATH"
pass=0; fail=0
[ $# -gt 0 ] || set -- "$TOP"/tests/e2e/[0-9]*.sh
for s in "$@"; do
  if sh "$s" > "/tmp/$(basename "$s").log" 2>&1; then
    echo "PASS: $(basename "$s")"; pass=$((pass+1))
  else
    echo "FAIL: $(basename "$s"): $(grep 'FAIL' "/tmp/$(basename "$s").log" | tail -1)"; fail=$((fail+1))
  fi
  # each scenario cleans up after itself; make sure nothing is left for the next one
  iscsiadm -m node --logoutall=all >/dev/null 2>&1 || true
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
