#!/bin/sh
# Reset To Async and back to Sync on a live mirror with the initiator writing: each switch is
# one table swap with `nosync` (the kernel copies nothing: its log shows no resync and the
# target disk's write counter moves only by the writer's writes), the relationship stays
# Synchronized throughout, and the former Sync mirror tracks changes over a Fracture.
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

# Sync -> Async
COPIES=$(md_copies)
W0=$(tgt_written) S0=$(src_written)
run lr reset-to-async src/tgt
check '[ $? -eq 0 ]' "reset-to-async exits 0"
check 'rel_is 2' "CopyType Async and Synchronized at once: $(lr relationships)"
check 'real_table src | grep -q "raid1 .*nosync.*write_mostly 1"' "the real device is a raid1 loaded with nosync: $(real_table src)"
check 'lr --json relationships | grep -q "\"ChangeTracking\": true"' "the relationship now tracks changes"
sleep 3
W=$(copied_since "$W0" "$S0")
log "the switch to Async and 3 s of writing: the target disk took $W sectors more than the source disk; the source has $FULL"
check '[ "$W" -lt $((FULL / 4)) ]' "nothing was copied: $W of $FULL sectors"
check '[ "$(md_copies)" -eq "$COPIES" ]' "the kernel ran no resync or recovery"
check 'rel_is 2' "still Synchronized under load"
# (the jobs of this relationship end just after it shows Synchronized)
jobs_done() { ! lr --json jobs | grep -q '"JobState": 4'; }

# the former Sync mirror's Fracture is change-tracked
run lr fracture src/tgt
check '[ $? -eq 0 ]' "fracture exits 0"
fill_random "$SD" 1 60
W0=$(tgt_written)
run lr resync src/tgt > /dev/null
check '[ $? -eq 0 ]' "resync exits 0"
wait_for 120 'rel_is 2 && jobs_done'
W=$(($(tgt_written) - W0))
check '[ "$W" -lt $((FULL / 4)) ]' "the resync copied only the changed regions: $W of $FULL sectors"

# Async -> Sync
COPIES=$(md_copies)
W0=$(tgt_written) S0=$(src_written)
run lr reset-to-sync src/tgt
check '[ $? -eq 0 ]' "reset-to-sync exits 0"
check 'rel_is 3' "CopyType Sync and Synchronized at once: $(lr relationships)"
check 'real_table src | grep -q "mirror core 2 [0-9]* nosync"' "the real device is a mirror loaded with nosync: $(real_table src)"
check '! dmsetup info lio-replica-v1-meta0-src > /dev/null 2>&1' "the raid metadata devices are gone"
check 'dmsetup info lio-replica-v1-rec3-tgt > /dev/null 2>&1 && ! dmsetup info lio-replica-v1-rec2-tgt > /dev/null 2>&1' "the record names the Sync copy type"
sleep 3
W=$(copied_since "$W0" "$S0")
log "the switch to Sync and 3 s of writing: the target disk took $W sectors more than the source disk"
check '[ "$W" -lt $((FULL / 4)) ]' "nothing was copied: $W of $FULL sectors"
check '[ "$(md_copies)" -eq "$COPIES" ]' "the kernel ran no resync or recovery"
check 'dmsetup status lio-replica-v1-real-src | grep -q " AA "' "both mirror legs healthy: $(dmsetup status lio-replica-v1-real-src)"

# a restarted daemon finds the Sync mirror
daemon_stop
daemon_start
check 'rel_is 3' "after a daemon restart: Sync, Synchronized"

sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "the target equals the source"
check 'io_verify "$TGT"' "the writer's data is on the target"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN"
