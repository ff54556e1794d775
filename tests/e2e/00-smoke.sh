#!/bin/sh
# Smoke test of the harness: the lio-replica binary is there, LIO works through configfs, the
# open-iscsi initiator logs in and moves data, device-mapper works without udev, and the
# dm targets the copy types need are available.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:smoke

check 'command -v lio-replica >/dev/null' "lio-replica is on PATH"
check 'lio-replica --help > /tmp/help.txt 2>&1' "lio-replica --help exits 0"
check '[ -d "$LIO_ROOT/core" ] && [ -d "$LIO_ROOT/iscsi" ]' "LIO is in configfs"
for d in $E2E_DISKS; do
  [ -b "$d" ] || fail "disk $d is missing"
done
A=$(disk 0)
B=$(disk 1)
log "disks: $E2E_DISKS, $(dev_sectors "$A") sectors each"

# --- LIO block backstore exported over iSCSI, initiator in this VM
dump_state /tmp/state.before
lio_iblock smoke0 "$A" 5e2e0000-0000-4000-8000-000000000001 > /dev/null
check 'grep -q 5e2e0000-0000-4000-8000-000000000001 "$(lio_so smoke0)/wwn/vpd_unit_serial"' \
  "backstore smoke0 has its unit serial"
lio_export smoke0 "$IQN"
start_iscsid
SD=$(initiator_login "$IQN")
check 'on_initiator "[ -b $SD ]"' "logged in to $IQN: $SD"

WANT=$(on_initiator "dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null; md5sum < /tmp/pattern" | cut -d' ' -f1)
check 'on_initiator "dd if=/tmp/pattern of=$SD bs=1M oflag=direct 2>/dev/null"' "8 MiB written through iSCSI"
check '[ "$(lun_md5 "$SD" 8)" = "$WANT" ]' "8 MiB read back through iSCSI"
check '[ "$(md5dev "$A" 8)" = "$WANT" ]' "the backing disk holds the same 8 MiB"

IO_OFFSET_MB=16
io_start "$SD"
sleep 3
io_stop
check '[ "$(io_iterations)" -gt 0 ] && [ "$(io_errors)" -eq 0 ]' "background writer: writes done, no errors"
check 'io_verify_lun "$SD"' "writer's slots read back through iSCSI"
check 'io_verify "$A"' "writer's slots are on the backing disk"

dump_state /tmp/state.exported
check 'grep -q "^l ./iscsi/$IQN/tpgt_1/lun/lun_0/lnk_smoke0 -> .*/core/iblock_[0-9]*/smoke0$" /tmp/state.exported' \
  "dump_state shows the LUN link"
check 'grep -q "^f ./core/iblock_[0-9]*/smoke0/udev_path = $A$" /tmp/state.exported' \
  "dump_state shows the udev_path"

initiator_logout "$IQN"
lio_unexport "$IQN"
lio_delete smoke0
dump_state /tmp/state.after
check 'cmp -s /tmp/state.before /tmp/state.after' "LIO state after teardown equals the state before" ||
  diff /tmp/state.before /tmp/state.after >&2

# --- device-mapper without udev
S=$(dev_sectors "$B")
check 'dmsetup create e2e-linear --table "0 $S linear $B 0"' "dmsetup create linear"
check '[ -b /dev/mapper/e2e-linear ]' "/dev/mapper/e2e-linear exists (DM_DISABLE_UDEV)"
fill_random /dev/mapper/e2e-linear 4 2
check '[ "$(md5dev /dev/mapper/e2e-linear 6)" = "$(md5dev "$B" 6)" ]' "linear maps onto $B"
check 'dmsetup remove e2e-linear' "dmsetup remove"
check '[ ! -e /dev/mapper/e2e-linear ]' "/dev/mapper/e2e-linear is gone"

# --- the dm targets the copy types build on (loaded at boot or on demand)
for t in mirror snapshot snapshot-origin raid flakey delay zero; do
  check 'dmsetup targets | grep -q "^$t "' "dm target $t is available"
done
