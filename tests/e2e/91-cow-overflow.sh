#!/bin/sh
# UnSyncAssoc (CopyType 4) whose COW store overflows: the target is as large as the source
# (32 MiB each) and the initiator rewrites the whole source, so the persistent snapshot runs
# out of room (its metadata needs space too). The snapshot turns Invalid, the relationship is
# Broken with a reason, the source is unaffected (no I/O error, its data reads back right);
# Resync takes a new point in time and Detach leaves both backstores on linear.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:cow
MB=32                              # small devices: rewriting them all stays quick
SRC=$(dm_part e2e-src "$(disk 0)" "$MB")
TGT=$(dm_part e2e-tgt "$(disk 1)" "$MB")
REST=$((MB - 8))                   # everything after the writer's 8 slots
rels() { lr --json relationships > /tmp/rels.json; }
tail_md5() { # DEV: md5 of DEV after the writer's slots
  dd if="$1" bs=1M skip=8 count="$REST" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
}

serve_pair "$SRC" "$TGT" "$IQN"
wait_for 30 '[ "$(io_iterations)" -ge 16 ] 2>/dev/null'   # every slot written at least once

run lr --json attach block/src block/tgt --copy-type unsyncassoc > /tmp/attach.json
check '[ "$(jfield ReturnValue < /tmp/attach.json)" = 0 ]' "attach unsyncassoc returns 0"
rels
check '[ "$(jfield SyncState < /tmp/rels.json)" = 11 ]' "relationship Idle (11)"
REL=$(jfield InstanceID < /tmp/rels.json)
log "snapshot status: $(dmsetup status lio-replica-v1-so-tgt)"

# the initiator rewrites the rest of the source while the writer keeps rewriting its slots:
# every chunk is copied to the COW store, which cannot hold them all with its metadata
dd if=/dev/urandom of=/tmp/fill bs=1M count="$REST" 2>/dev/null
H_FILL=$(md5sum < /tmp/fill | cut -d' ' -f1)
log "rewriting $REST MiB of the source through the initiator"
dd if=/tmp/fill of="$SD" bs=1M seek=8 oflag=direct conv=notrunc 2>/tmp/dd.err
check '[ $? -eq 0 ]' "the initiator's rewrite of the source succeeds ($(tail -n 1 /tmp/dd.err))"
wait_for 30 'rels; [ "$(jfield SyncState < /tmp/rels.json)" = 12 ]'
cat /tmp/rels.json >&9
log "snapshot status: $(dmsetup status lio-replica-v1-so-tgt)"
check '[ "$(jfield SyncState < /tmp/rels.json)" = 12 ]' "relationship Broken (12)"
# (jfield stops at a comma: read the reason with grep)
check 'grep -q "\"ProgressStatus\": \"snapshot is Invalid: the kernel gave it up when its COW store overflowed" /tmp/rels.json' \
  "ProgressStatus gives the reason (snapshot Invalid, COW store overflowed)"
check 'dmsetup status lio-replica-v1-so-tgt | grep -q " Invalid"' "the kernel reports the snapshot Invalid"
check 'shim_table src | grep -q " snapshot-origin "' "the source is still a snapshot-origin"
dmesg | grep -iE "snapshot|exception" | tail -n 3 >&9
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check 'io_verify_lun "$SD"' "the LUN serves the writer's data"
check '[ "$(tail_md5 "$SD")" = "$H_FILL" ]' "the LUN reads back the rewrite"
check 'io_verify "$SRC" && [ "$(tail_md5 "$SRC")" = "$H_FILL" ]' "the source disk holds it all"

run lr --json resync "$REL" > /tmp/resync.json
check '[ "$(jfield ReturnValue < /tmp/resync.json)" = 0 ]' "resync takes a new point in time (0)"
rels
check '[ "$(jfield SyncState < /tmp/rels.json)" = 11 ]' "relationship Idle (11) again"
log "snapshot status: $(dmsetup status lio-replica-v1-so-tgt)"
check '! dmsetup status lio-replica-v1-so-tgt | grep -q Invalid' "the new snapshot is valid"

run lr detach "$REL"
check '[ $? -eq 0 ]' "detach exits 0"
rels
check '! grep -q InstanceID /tmp/rels.json' "no relationship remains"
check 'dmsetup table lio-replica-v1-so-tgt | grep -q " linear "' "the target is back on linear"
check 'shim_table src | grep -q " linear "' "the source is back on linear"
lun_fill "$SD" 4 20
check '[ "$(lun_md5 "$SD" "$MB")" = "$(md5dev "$SRC" "$MB")" ]' "the LUN still serves, straight from the source disk"
initiator_logout "$IQN"
