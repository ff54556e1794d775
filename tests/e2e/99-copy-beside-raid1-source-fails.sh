#!/bin/sh
# A full copy (UnSyncUnAssoc) runs beside an Async mirror, in the copy device under the
# raid1's source leg, when the *source* disk fails under a writer. The copy cannot complete
# without the source's disk: its job ends in Exception saying so, the copy device goes and the
# raid1 is back on the (failed) disk, where md has failed the source leg and serves the LUN
# from the target's disk alone. The initiator keeps being answered with no I/O error and the
# same serial; the Async relationship is Broken saying which disk failed and what serves.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:copy-sfail
D0=$(disk 0)
N=$(($(dev_sectors "$D0") - 16 * 2048)) # room on the Async target for the raid1's metadata
TGT=$(disk 1)

devno() { printf '%d:%d' "0x$(stat -Lc %t "$1")" "0x$(stat -Lc %T "$1")"; }
rels() { lr --json relationships > /tmp/rels.json; }
copy_running() { rels; grep -q '"InstanceID": "src/cl"' /tmp/rels.json; }

# the source's disk behind a dm device of the scenario's own, to make it fail at will (dm_swap)
dmsetup create e2e-sleg --table "0 $N linear $D0 0" || fail "cannot create e2e-sleg"
SRC=/dev/mapper/e2e-sleg
# the copy's disk delays writes by 500 ms: the copy is still running when the disk fails
CL=$(dm_slow e2e-cl "$(disk 2)" 500)
fill_random "$SRC" 24 16
serve_pair "$SRC" "$TGT" "$IQN"
SERIAL=$(vpd_serial "$SD")
lio_iblock cl "$CL" > /dev/null

run lr attach block/src block/tgt --copy-type async --wait > /dev/null
check '[ $? -eq 0 ]' "Async mirror in sync"
lr --json attach block/src block/cl --copy-type unsyncunassoc > /tmp/attach.json
check '[ "$(jfield ReturnValue < /tmp/attach.json)" = 4096 ]' "full copy started (job $(jfield Job < /tmp/attach.json))"
JOB=$(jfield Job < /tmp/attach.json)
check copy_running "the copy is running"
check 'dmsetup table lio-replica-v1-copy-src | grep -q " mirror "' "in the copy device under the raid1's source leg"

IT=$(io_iterations)
dm_swap e2e-sleg "0 $N error"
wait_for 60 '! copy_running'
check '! copy_running' "the copy's relationship is gone"
lr --json jobs > /tmp/jobs.json
cat /tmp/jobs.json >&9
check 'grep -A8 "\"InstanceID\": \"$JOB\"" /tmp/jobs.json | grep -q "\"JobState\": 10"' "its job ended in Exception (10)"
check 'grep -q "copy src/cl failed: mirror leg 0 .* failed" /tmp/jobs.json' "the job's error says the source's leg failed"
check '! dmsetup info lio-replica-v1-copy-src > /dev/null 2>&1' "the copy device is gone"
check 'real_table src | grep -q " raid raid1 .* $(devno "$SRC") "' "the raid1 is back on the source's disk: $(real_table src)"
wait_for 30 'rels; [ "$(jfield SyncState < /tmp/rels.json)" = 12 ]'
cat /tmp/rels.json >&9
check '[ "$(jfield SyncState < /tmp/rels.json)" = 12 ]' "the Async relationship is Broken (12)"
check 'grep -q "(the source.s disk): the LUN is served from the target.s disk alone" /tmp/rels.json' \
  "the reason says the source's disk failed and the target's serves"
check 'dmsetup status lio-replica-v1-real-src | grep -q " DA "' "md failed the source leg: $(dmsetup status lio-replica-v1-real-src)"
check_serving_on "$IT" "$SERIAL"
io_stop
check 'io_verify "$TGT"' "the writer's data is on the target's disk"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN"
