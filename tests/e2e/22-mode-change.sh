#!/bin/sh
# A Sync mirror whose target has the room is a raid1 without write_mostly; Reset To Async and
# back to Sync on it with the initiator writing: each switch is one table swap on the same
# metadata, only the target leg's write_mostly changes (the kernel copies nothing: its log
# shows no resync and the target disk's write counter moves only by the writer's writes),
# the relationship stays Synchronized throughout, and a Fracture of either type is
# change-tracked.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:mode-change
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
TGT=$(disk 1)
FULL=$((SMB * 2048))

tgt_written() { awk '{print $7}' "/sys/block/$(basename "$TGT")/stat"; }
src_written() { awk '{print $7}' "/sys/block/$(basename "$(disk 0)")/stat"; }
# copied_since W_TGT W_SRC: sectors the target disk took beyond what the source disk took (the
# writer's writes reach both; a copy only the target)
copied_since() { echo $(($(tgt_written) - $1 - ($(src_written) - $2))); }
md_copies() { dmesg | grep -c "md: \(resync\|recovery\) of RAID array"; }
rel_is() { lr --json relationships | grep -q "\"CopyType\": $1" && lr --json relationships | grep -q '"SyncState": 6'; }

fill_random "$SRC" "$SMB"
serve_pair "$SRC" "$TGT" "$IQN"
run lr attach block/src block/tgt --copy-type sync --wait > /dev/null
check '[ $? -eq 0 ]' "Sync mirror in sync"
check 'real_table src | grep " raid1 " | grep -vq write_mostly' "a raid1 without write_mostly: $(real_table src)"
check 'lr --json relationships | grep -q "\"ChangeTracking\": true"' "the Sync mirror tracks changes"
META=$(dmsetup table lio-replica-v1-meta0-src; dmsetup table lio-replica-v1-meta1-src)
meta_kept() { [ "$(dmsetup table lio-replica-v1-meta0-src; dmsetup table lio-replica-v1-meta1-src)" = "$META" ]; }
# tracked_round CT: Fracture, 1 MiB rewritten, Resync: far less than the source copied
tracked_round() {
  _ct=$1
  run lr fracture src/tgt
  check '[ $? -eq 0 ]' "$_ct: fracture exits 0"
  check 'real_table src | grep -q " - -$"' "$_ct: the target leg is left out of the raid1: $(real_table src)"
  lun_fill "$SD" 1 60
  W0=$(tgt_written)
  run lr resync src/tgt > /dev/null
  check '[ $? -eq 0 ]' "$_ct: resync exits 0"
  wait_for 120 'rel_is "$_ct" && jobs_done'
  W=$(($(tgt_written) - W0))
  check '[ "$W" -lt $((FULL / 4)) ]' "$_ct: the resync copied only the changed regions: $W of $FULL sectors"
}
# (the jobs of this relationship end just after it shows Synchronized)
jobs_done() { ! lr --json jobs | grep -q '"JobState": 4'; }
tracked_round 3

# Sync -> Async
COPIES=$(md_copies)
W0=$(tgt_written) S0=$(src_written)
run lr reset-to-async src/tgt
check '[ $? -eq 0 ]' "reset-to-async exits 0"
check 'rel_is 2' "CopyType Async and Synchronized at once: $(lr relationships)"
check 'real_table src | grep -q "raid1 .*write_mostly 1"' "the target leg is write_mostly: $(real_table src)"
check meta_kept "on the same metadata devices"
sleep 3
W=$(copied_since "$W0" "$S0")
log "the switch to Async and 3 s of writing: the target disk took $W sectors more than the source disk; the source has $FULL"
check '[ "$W" -lt $((FULL / 4)) ]' "nothing was copied: $W of $FULL sectors"
check '[ "$(md_copies)" -eq "$COPIES" ]' "the kernel ran no resync or recovery"
check 'rel_is 2' "still Synchronized under load"
tracked_round 2

# Async -> Sync
COPIES=$(md_copies)
W0=$(tgt_written) S0=$(src_written)
run lr reset-to-sync src/tgt
check '[ $? -eq 0 ]' "reset-to-sync exits 0"
check 'rel_is 3' "CopyType Sync and Synchronized at once: $(lr relationships)"
check 'real_table src | grep " raid1 " | grep -vq write_mostly' "a raid1 without write_mostly again: $(real_table src)"
check meta_kept "on the same metadata devices"
check 'dmsetup info lio-replica-v1-rec3-tgt > /dev/null 2>&1 && ! dmsetup info lio-replica-v1-rec2-tgt > /dev/null 2>&1' "the record names the Sync copy type"
sleep 3
W=$(copied_since "$W0" "$S0")
log "the switch to Sync and 3 s of writing: the target disk took $W sectors more than the source disk"
check '[ "$W" -lt $((FULL / 4)) ]' "nothing was copied: $W of $FULL sectors"
check '[ "$(md_copies)" -eq "$COPIES" ]' "the kernel ran no resync or recovery"
check 'dmsetup status lio-replica-v1-real-src | grep -q " AA "' "both legs healthy: $(dmsetup status lio-replica-v1-real-src)"

# a restarted daemon finds the Sync mirror
daemon_stop
daemon_start
check 'rel_is 3' "after a daemon restart: Sync, Synchronized"
check 'lr --json relationships | grep -q "\"ChangeTracking\": true"' "and tracking changes on its raid1"
tracked_round 3

sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "the target equals the source"
check 'io_verify "$TGT"' "the writer's data is on the target"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN"
