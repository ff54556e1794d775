#!/bin/sh
# Several relationships on one exported source under a live writer: three UnSyncAssoc
# snapshots taken at different moments and a Sync mirror added between them. Each snapshot,
# exported through its own LUN, shows the region as it was at its own moment; the mirror leg
# equals the source; detaching one snapshot leaves the others' images and the mirror as they
# were; a full copy runs beside them; an element in several relationships must be named by
# InstanceID.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:many
SRC=$(disk 0)
R_MB=24 R_AT=16            # the checked region: 16..40 MiB (the writer uses 0..8 MiB)

region() { dd if="$1" bs=1M skip=$R_AT count=$R_MB iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

fill_random "$SRC" "$R_MB" "$R_AT"
serve_pair "$SRC" "$(disk 1)" "$IQN"          # src, and tgt (unused here)
lio_iblock s1 "$(disk 2)" > /dev/null
lio_iblock s2 "$(disk 3)" > /dev/null
lio_iblock s3 "$(disk 4)" > /dev/null
lio_iblock m "$(disk 5)" > /dev/null
wait_for 30 '[ "$(io_iterations)" -ge 16 ]'

H1=$(region "$SD")
run lr attach block/src block/s1 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s1 taken"
lun_fill "$SD" 8 16                           # the initiator changes the region
H2=$(region "$SD")
run lr attach block/src block/s2 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s2 taken"
run lr attach block/src block/m --copy-type sync --wait > /dev/null
check '[ $? -eq 0 ]' "a Sync mirror on the source that has two snapshots, in sync"
check 'real_table src | grep -q " mirror "' "the mirror is in the source's real device: $(real_table src)"
lun_fill "$SD" 8 24
H3=$(region "$SD")
run lr attach block/src block/s3 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s3 taken beside the mirror"
lun_fill "$SD" 8 32                           # and changes it again
check '[ "$H1" != "$H2" ] && [ "$H2" != "$H3" ] && [ "$(region "$SD")" != "$H3" ]' "the region changed between the moments"
H4=$(region "$SD")
# a full copy beside the snapshots and the mirror: one mirror with a leg for each copy
run lr attach block/src block/tgt --copy-type unsyncunassoc --wait > /dev/null
check '[ $? -eq 0 ]' "a full copy of the source with three snapshots and a mirror completed"
check '[ "$(region "$(disk 1)")" = "$H4" ]' "the copy holds the region"
check 'real_table src | grep -q " mirror core 2 [0-9]* nosync 2 "' \
  "the mirror goes on with its two legs, without a new copy: $(real_table src)"
check 'lr --json relationships | grep -q "\"SyncState\": 6"' "the Sync mirror is still Synchronized"

lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check '[ "$(grep -c "\"InstanceID\"" /tmp/rels.json)" -eq 4 ]' "four relationships listed"
for r in src/s1 src/s2 src/s3 src/m; do
  check 'grep -q "\"InstanceID\": \"$r\"" /tmp/rels.json' "relationship $r listed on its own"
done
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator through every change"

# each image through its own LUN
k=1
for h in "$H1" "$H2" "$H3"; do
  lio_export "s$k" "$IQN-s$k"
  SDK=$(initiator_login "$IQN-s$k")
  check '[ "$(on_initiator "dd if=$SDK bs=1M skip=$R_AT count=$R_MB iflag=direct 2>/dev/null | md5sum" | cut -d" " -f1)" = "$h" ]' \
    "snapshot s$k, read through its own LUN, shows the region of its moment"
  initiator_logout "$IQN-s$k"
  lio_unexport "$IQN-s$k"
  k=$((k + 1))
done
check '[ "$(md5dev "$SRC")" = "$(md5dev "$(disk 5)")" ]' "the mirror leg equals the source"

# an element in four relationships is ambiguous
run lr detach block/src 2> /tmp/amb.err
RC=$?
check '[ "$RC" -eq 5 ] && grep -q "src/s1" /tmp/amb.err && grep -q "src/m" /tmp/amb.err' \
  "detach block/src is refused, listing the candidates: $(cat /tmp/amb.err)"

T1=$(dmsetup table lio-replica-v1-so-s1) T3=$(dmsetup table lio-replica-v1-so-s3) TM=$(real_table src)
run lr detach src/s2
check '[ $? -eq 0 ]' "detach of snapshot s2"
check 'shim_table s2 | grep -q " linear "' "s2 is back on linear"
check '[ "$(dmsetup table lio-replica-v1-so-s1)" = "$T1" ] && [ "$(dmsetup table lio-replica-v1-so-s3)" = "$T3" ] && [ "$(real_table src)" = "$TM" ]' \
  "the other snapshots and the mirror are exactly as they were"
dmsetup mknodes
check '[ "$(region /dev/mapper/lio-replica-v1-so-s1)" = "$H1" ] && [ "$(region /dev/mapper/lio-replica-v1-so-s3)" = "$H3" ]' \
  "s1 and s3 still show their own moments"
run lr detach block/s2
RC=$?
check '[ "$RC" -ne 0 ]' "s2 is in no relationship any more"

for r in src/s1 src/m src/s3; do
  run lr detach "$r"
  check '[ $? -eq 0 ]' "detach $r"
done
check 'shim_table src | grep -q " linear "' "with no relationship left the source is on its disk again: $(shim_table src)"
check '[ -z "$(real_table src)" ]' "its real device is gone"
initiator_logout "$IQN"
