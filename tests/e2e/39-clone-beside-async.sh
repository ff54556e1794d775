#!/bin/sh
# A full copy (UnSyncUnAssoc) of a source that has an Async mirror and a snapshot, under a live
# writer. The raid1 keeps the source's real device; the copy replicates in a copy device that
# takes the place of the source's disk under the raid1's source leg, moved there without a
# rebuild. Checked: the Async mirror stays Synchronized and is not copied again, the copy
# holds what the source held at the split, writes made while it ran included, the snapshot
# keeps its moment, the Async target converges, and after the split the raid1 is back on the
# source's disk with the copy device gone.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:clone-async
# the Async target needs room for two metadata areas beyond the source's size
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
TGT=$(disk 1)
# the copy's disk delays writes by 10 ms, so that the copy is still running while the
# initiator writes during it
CL=$(dm_slow e2e-cl "$(disk 2)" 10)
R_AT=16 R_MB=48            # the checked region: 16..64 MiB (the writer uses 0..8 MiB)

region() { dd if="$1" bs=1M skip="${2:-$R_AT}" count="${3:-$R_MB}" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }
copy_running() { lr --json relationships | grep -q '"InstanceID": "src/cl"'; }
raid_recovery_events() { dmesg | grep -cE "md: (resync|recovery) of RAID array"; }

fill_random "$SRC" "$R_MB" "$R_AT"
serve_pair "$SRC" "$TGT" "$IQN"
lio_iblock cl "$CL" > /dev/null
lio_iblock s1 "$(disk 3)" > /dev/null

run lr attach block/src block/tgt --copy-type async --wait > /dev/null
check '[ $? -eq 0 ]' "Async mirror in sync"
RAID=$(real_table src)
run lr attach block/src block/s1 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s1 beside the Async mirror"
H1=$(region "$SD")
lun_fill "$SD" 8 24                           # the initiator changes the region
RESYNCS=$(raid_recovery_events)
check '[ "$RESYNCS" -ge 1 ]' "the Async mirror's initial copy shows in the kernel log ($RESYNCS)"

run lr attach block/src block/cl --copy-type unsyncunassoc > /tmp/attach.out 2>&1
check '[ $? -eq 0 ]' "a full copy of a source with an Async mirror and a snapshot starts"
cat /tmp/attach.out >&9
COPY=$(dmsetup table lio-replica-v1-copy-src 2>/dev/null)
log "copy device: $COPY; real device: $(real_table src)"
lun_fill "$SD" 8 48                           # written while the copy runs
DURING=no
if copy_running; then
  DURING=yes
  check 'echo "$COPY" | grep -q " mirror core "' "the copy replicates in a mirror under the raid1: $COPY"
  check 'real_table src | grep -q " raid raid1 "' "the raid1 keeps the real device: $(real_table src)"
  check '! real_table src | grep -q rebuild' "its source leg was moved without a rebuild"
fi
wait_for 300 '! copy_running'
check '! copy_running' "the copy completed and its relationship ended"
check '[ "$(raid_recovery_events)" -eq "$RESYNCS" ]' "the Async target was not copied again"
check '[ "$(real_table src)" = "$RAID" ]' "the raid1 is back on the source's disk, as it was: $(real_table src)"
check '! dmsetup info lio-replica-v1-copy-src > /dev/null 2>&1' "the copy device is gone"
lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check 'grep -q "\"InstanceID\": \"src/tgt\"" /tmp/rels.json && grep -q "\"SyncState\": 6" /tmp/rels.json' \
  "the Async mirror is still Synchronized"

sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator through every change"
H2=$(region "$SD")
if [ "$DURING" = yes ]; then
  check '[ "$(region "$CL")" = "$H2" ]' "the copy holds the region, the writes made while it ran included"
else
  # the copy ended before those writes did: only what was written before it is certain
  log "the copy ended before the writes made while it ran; checking the region written before it"
  check '[ "$(region "$CL" 16 32)" = "$(region "$SD" 16 32)" ]' "the copy holds what was written before it started"
fi
wait_for 30 '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "the Async target converged to the source"
check 'io_verify "$TGT"' "the writer's data is on the Async target"
dmsetup mknodes
check '[ "$(region /dev/mapper/lio-replica-v1-so-s1)" = "$H1" ]' "the snapshot keeps its moment"

for r in src/s1 src/tgt; do
  run lr detach "$r"
  check '[ $? -eq 0 ]' "detach $r"
done
check 'shim_table src | grep -q " linear "' "with no relationship left the source is on its disk again: $(shim_table src)"
initiator_logout "$IQN"
