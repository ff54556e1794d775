#!/bin/sh
# Async change tracking: Fracture leaves the raid1's target leg out (`- -`), the target keeps
# the image of the fracture while the initiator goes on writing, and Resync copies only the
# regions the write-intent bitmap marked (the target disk's own write counter shows it).
# A fractured target written behind the bitmap's back gets everything copied again.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:async-fracture
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
TGT=$(disk 1)
FULL=$((SMB * 2048))

# sectors written to the target disk so far (the kernel's I/O statistics)
tgt_written() { awk '{print $7}' "/sys/block/$(basename "$TGT")/stat"; }
in_sync() { lr --json relationships | grep -q '"SyncState": 6'; }
# resync_written WHAT: Resync, wait for Synchronized; WRITTEN is then the sectors that the
# resync wrote to the target disk
resync_written() {
  _w0=$(tgt_written)
  run lr resync src/tgt > /dev/null
  check '[ $? -eq 0 ]' "resync $1 exits 0"
  wait_for 120 in_sync
  WRITTEN=$(($(tgt_written) - _w0))
  log "resync $1 wrote $WRITTEN sectors to the target disk; the source has $FULL"
}

fill_random "$SRC" "$SMB"
serve_pair "$SRC" "$TGT" "$IQN"
run lr attach block/src block/tgt --copy-type async --wait > /dev/null
check '[ $? -eq 0 ]' "Async mirror in sync"
FULL_TABLE=$(real_table src)

run lr fracture src/tgt
check '[ $? -eq 0 ]' "fracture exits 0"
check 'real_table src | grep -q " - -$"' "the target leg is left out of the raid1: $(real_table src)"
check 'lr --json relationships | grep -q "\"SyncState\": 13"' "relationship Fractured (13)"
check 'lr relationships | grep -q bitmap' "the relationship says changes are tracked: $(lr relationships)"
check 'lr --json relationships | grep -q "\"ChangeTracking\": true"' "ChangeTracking true in the API"
IMAGE=$(md5dev "$TGT" "$SMB")
lun_fill "$SD" 1 60                           # the initiator rewrites 1 % of the source
sleep 2
check '[ "$(md5dev "$TGT" "$SMB")" = "$IMAGE" ]' "the target keeps the image of the fracture"

resync_written "after the fracture"
check '[ "$WRITTEN" -lt $((FULL / 4)) ]' "the resync copied only the changed regions: $WRITTEN of $FULL sectors"
check '[ "$(real_table src)" = "$FULL_TABLE" ]' "the raid1 has both legs again, as before: $(real_table src)"
check 'in_sync' "relationship Synchronized again"

# written behind the bitmap's back: a full copy
run lr fracture src/tgt
check '[ $? -eq 0 ]' "second fracture exits 0"
dmsetup mknodes
fill_random /dev/mapper/lio-replica-v1-so-tgt 1 20 # someone writes to the fractured target
resync_written "after a write to the fractured target"
check '[ "$WRITTEN" -ge "$FULL" ]' "everything was copied again: $WRITTEN of $FULL sectors"

sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
wait_for 30 '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "the target equals the source"
check 'io_verify "$TGT"' "the writer's data is on the target"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN"
