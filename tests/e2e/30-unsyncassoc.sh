#!/bin/sh
# UnSyncAssoc (CopyType 4): attach returns 0 at once under a live writer; the target,
# exported through its own LUN and read by the initiator, shows the point-in-time image while
# the source keeps changing; the COW usage is reported.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:snapsrc
IQN2=iqn.2003-01.org.linux-iscsi.e2e:snaptgt
SRC=$(disk 0)
TGT=$(disk 1)

fill_random "$SRC" 24 16          # region R: 16..40 MiB
H_R=$(dd if="$SRC" bs=1M skip=16 count=24 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
serve_pair "$SRC" "$TGT" "$IQN"
wait_for 30 '[ "$(io_iterations)" -ge 16 ]'    # every slot written at least once

run lr --json attach block/src block/tgt --copy-type unsyncassoc > /tmp/attach.json
check '[ $? -eq 0 ]' "attach unsyncassoc exits 0"
cat /tmp/attach.json >&9
check '[ "$(jfield ReturnValue < /tmp/attach.json)" = 0 ]' "ReturnValue 0 (completed, no job)"
check '[ "$(jfield Job < /tmp/attach.json)" = null ]' "no job"
check 'dmsetup table lio-replica-v1-so-tgt | grep -q " snapshot "' "target is a dm snapshot"
check 'shim_table src | grep -q " snapshot-origin "' "source is a snapshot-origin"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator across the switch"

lun_fill "$SD" 24 16            # the source changes after the point in time
check '[ "$(dd if="$SRC" bs=1M skip=16 count=24 iflag=direct 2>/dev/null | md5sum | cut -d" " -f1)" != "$H_R" ]' \
  "the source region changed"

lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check '[ "$(jfield SyncState < /tmp/rels.json)" = 11 ]' "relationship Idle (11)"
USED=$(jfield CowUsedSectors < /tmp/rels.json)
check '[ -n "$USED" ] && [ "$USED" -gt 0 ]' "COW usage reported: $USED sectors"

# the initiator reads the image through the target's own LUN
lio_export tgt "$IQN2"
SD2=$(initiator_login "$IQN2")
H_T=$(on_initiator "dd if=$SD2 bs=1M skip=16 count=24 iflag=direct 2>/dev/null | md5sum" | cut -d' ' -f1)
check '[ "$H_T" = "$H_R" ]' "the target LUN shows the point-in-time image of region R"
check 'io_verify_lun "$SD2"' "the target LUN shows the writer's slots as they were"
initiator_logout "$IQN2"
lio_unexport "$IQN2"

REL=$(jfield InstanceID < /tmp/rels.json)
run lr detach "$REL"
check '[ $? -eq 0 ]' "detach exits 0"
check 'dmsetup table lio-replica-v1-so-tgt | grep -q " linear "' "target back on linear"
check 'shim_table src | grep -q " linear "' "source back on linear"
initiator_logout "$IQN"
