#!/bin/sh
# vm-test: boots=2
# Host reboot of a change-tracked Sync mirror (a raid1: its target has the room). Boot 1: the
# source is a device-mapper volume of the host's own (as an LVM volume would be), the mirror
# gets in sync, then a writer keeps rewriting 2 MiB of the source while the daemon dies
# (SIGKILL) and the power fails, the raid1 in the middle of writes. Boot 2: the host's
# volume comes back, `restore-devices` re-creates the raid1 on its kept metadata, and md goes
# on from its superblocks and bitmap, copying at most the regions the bitmap marks: the target
# disk takes a few MiB at most, not the source's size (a Sync `mirror` copies it all). The daemon finds the relationship Synchronized and change-tracked, and the
# disks are equal.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

PERSIST=/persist                 # the state disk, a file system that survives the reboot
STATE=$PERSIST/lio-replica       # the daemon's --state-dir
NODES=/run/lio-replica/dev       # the daemon's device nodes where /dev/mapper has none
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16)) # room on the target for the raid1's metadata
FULL=$((SMB * 2048))
TGT=$(disk 1)
SDISK=$(by_serial lr-state) || { fail "no state disk (serial lr-state)"; exit 1; }

tgt_written() { awk '{print $7}' "/sys/block/$(basename "$TGT")/stat"; }
rels() { lr --json relationships > /tmp/rels.json; }

# the host's own volume: the same name, UUID and place on disk 0 at every boot
dmsetup create e2e-vol --uuid E2E-VOL-98 --table "0 $FULL linear $(disk 0) 0" ||
  fail "cannot create e2e-vol"
SRC=/dev/mapper/e2e-vol

persist_mount "$SDISK" "$PERSIST" || exit 1

if [ "$LIO_BOOT" = 1 ]; then
  fill_random "$SRC" "$SMB"
  lio_iblock src "$SRC" > /dev/null
  lio_iblock tgt "$TGT" > /dev/null
  daemon_start --state-dir "$STATE" || exit 1
  run lr attach block/src block/tgt --copy-type sync --wait > /dev/null
  check '[ $? -eq 0 ]' "Sync src -> tgt in sync"
  check 'real_table src | grep " raid1 " | grep -vq write_mostly' "on a raid1: $(real_table src)"
  # the source changes through its device, which the raid1 mirrors, up to the power-off
  # (without a pause: md marks an array clean after 200 ms without writes)
  for SO in /dev/mapper/lio-replica-v1-so-src "$NODES/lio-replica-v1-so-src"; do
    [ ! -b "$SO" ] || break
  done
  check '[ -b "$SO" ]' "the source's device node: $SO"
  while :; do
    dd if=/dev/zero of="$SO" bs=64k count=32 seek=640 oflag=direct 2>/dev/null
  done &
  sleep 2
  daemon_kill9
  power_cut
fi

# ---- boot 2
W0=$(tgt_written)
run lio-replica restore-devices --state-dir "$STATE" > /tmp/restore.out 2>&1
check '[ $? -eq 0 ]' "restore-devices exits 0"
cat /tmp/restore.out >&9
check 'real_table src | grep " raid1 " | grep -vq write_mostly' "the raid1 is back: $(real_table src)"
check 'dmsetup table lio-replica-v1-meta0-src | grep -q " linear 7:" && grep -qs meta0-src /sys/block/loop*/loop/backing_file' \
  "the source leg's metadata file is bound to a loop device again: $(dmsetup table lio-replica-v1-meta0-src)"
in_sync() { _st=$(dmsetup status lio-replica-v1-real-src); echo "$_st" | grep -q " AA \([0-9]*\)/\1 idle "; }
wait_for 120 in_sync
check in_sync "md has resynchronised: $(dmsetup status lio-replica-v1-real-src)"
dmesg | grep "md" | tail -n 6 >&9
log "md after the power cut: $(dmesg | grep -c "md: resync of RAID array") resync(s)"
W=$(($(tgt_written) - W0))
check '[ "$W" -lt $((FULL / 4)) ]' "the target was not copied again: $W of $FULL sectors written to it"
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "the target equals the source"
daemon_start --state-dir "$STATE" || exit 1
rels
cat /tmp/rels.json >&9
check '[ "$(jfield SyncState < /tmp/rels.json)" = 6 ] && [ "$(jfield CopyType < /tmp/rels.json)" = 3 ]' \
  "the daemon finds src/tgt Sync and Synchronized"
check '[ "$(jfield ChangeTracking < /tmp/rels.json)" = true ]' "and change-tracked"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
daemon_stop
persist_umount "$PERSIST"
