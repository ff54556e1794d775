#!/bin/sh
# Sync (CopyType 3) under a live initiator: the job reaches 100 %, the relationship is
# Synchronized, later writes land on both legs, and after Detach the target holds exactly the
# source's image of that moment and no longer changes.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:sync
SRC=$(disk 0)
TGT=$(disk 1)
MB=$(($(dev_sectors "$SRC") / 2048))

fill_random "$SRC" 24 16          # data outside the writer's slots, to be copied
serve_pair "$SRC" "$TGT" "$IQN"

run lr attach block/src block/tgt --copy-type sync --wait > /tmp/attach.out 2>&1
check '[ $? -eq 0 ]' "attach sync --wait exits 0 (job completed)"
cat /tmp/attach.out >&9
lr --json jobs > /tmp/jobs.json
check '[ "$(jfield JobState < /tmp/jobs.json)" = 7 ]' "job state 7 Completed"
check '[ "$(jfield PercentComplete < /tmp/jobs.json)" = 100 ]' "job at 100 %"
lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check '[ "$(jfield CopyType < /tmp/rels.json)" = 3 ]' "relationship CopyType 3"
check '[ "$(jfield SyncState < /tmp/rels.json)" = 6 ]' "relationship Synchronized (6)"
check 'real_table src | grep -q " mirror "' "the source is served by a dm mirror: $(real_table src)"
REL=$(jfield InstanceID < /tmp/rels.json)

sleep 3                            # the writer keeps rewriting its slots on the mirror
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator during attach and resync"
check 'io_verify "$SRC"' "the writer's data is on the source leg"
check 'io_verify "$TGT"' "the writer's later writes landed on the target leg too"
H_SRC=$(md5dev "$SRC" "$MB")
check '[ "$(md5dev "$TGT" "$MB")" = "$H_SRC" ]' "target leg == source leg ($H_SRC)"

run lr detach "$REL"
check '[ $? -eq 0 ]' "detach exits 0"
lr --json relationships > /tmp/rels2.json
check '! grep -q InstanceID /tmp/rels2.json' "no relationship remains"
check 'shim_table src | grep -q " linear "' "the source is back on linear"
lun_fill "$SD" 4 40             # the source changes after the detach ...
check '[ "$(md5dev "$TGT" "$MB")" = "$H_SRC" ]' "... the detached target does not"
check '[ "$(md5dev "$SRC" "$MB")" != "$H_SRC" ]' "the source took the new write"
initiator_logout "$IQN"
