#!/bin/sh
# Sync (CopyType 3) when the *source* disk fails, with a live initiator writing. (a) After the
# initial copy (and a daemon restart since): the mirror holds the writes for the failed leg; the daemon moves the source's
# real device onto the target's disk (noflush: the held writes complete there), so the LUN
# keeps serving with its identity and no I/O error; the target's own backstore is fenced; the
# relationship is Broken saying where the LUN runs; Detach leaves the source on that disk.
# (b) During the initial copy: the target is incomplete, so the LUN gets the failed disk's
# errors at once instead of writes held by the mirror (the initiator keeps making progress).
# (c) While a full copy shares the Sync mirror: the copy cannot complete and ends in Exception,
# the LUN moves onto the Sync target's disk as in (a), with no I/O error.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:sfail
D0=$(disk 0)
N=$(dev_sectors "$D0")
TGT=$(disk 1)

devno() { printf '%d:%d' "0x$(stat -Lc %t "$1")" "0x$(stat -Lc %T "$1")"; }
rels() { lr --json relationships > /tmp/rels.json; }
broken() { rels; [ "$(jfield SyncState < /tmp/rels.json)" = 12 ]; }

# the source's disk behind a dm device of the scenario's own, to make it fail at will (dm_swap)
dmsetup create e2e-sleg --table "0 $N linear $D0 0" || fail "cannot create e2e-sleg"
SRC=/dev/mapper/e2e-sleg
fill_random "$SRC" 24 16
serve_pair "$SRC" "$TGT" "$IQN"
SERIAL=$(vpd_serial "$SD")

log "--- (a) the source's disk fails after the initial copy"
run lr attach block/src block/tgt --copy-type sync --wait > /dev/null
check '[ $? -eq 0 ]' "Sync mirror in sync"
# a restarted daemon knows the target is whole from the kernel's in-sync count
daemon_kill9 && daemon_start
wait_for 20 'grep -q "mirror seen in sync after a restart" "$LR_LOG"'
check 'grep -q "mirror seen in sync after a restart" "$LR_LOG"' "the restarted daemon sees the mirror in sync"
IT=$(io_iterations)
dm_swap e2e-sleg "0 $N error"
wait_for 30 broken
cat /tmp/rels.json >&9
check broken "relationship Broken (12)"
check 'grep -q "runs on the target.s disk" /tmp/rels.json' "the reason says the LUN runs on the target's disk"
check 'real_table src | grep -q " linear $(devno "$TGT") 0"' "the source's real device is on the target's disk: $(real_table src)"
check 'shim_table tgt | grep -q " error"' "the target's own backstore is fenced: $(shim_table tgt)"
check_serving_on "$IT" "$SERIAL"
run lr resync src/tgt 2> /tmp/resync.err
RC=$?
check '[ "$RC" -eq 5 ] && grep -q "attach a new target" /tmp/resync.err' "Resync is refused with what to do: $(cat /tmp/resync.err)"
io_stop
check 'io_verify "$TGT"' "the writer's data is on the target's disk"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
check 'shim_table src | grep -q " linear $(devno "$TGT") 0"' "the source stays on the disk that has its data: $(shim_table src)"
initiator_logout "$IQN"

log "--- (b) the source's disk fails during the initial copy"
D2=$(disk 2)
dmsetup create e2e-sleg2 --table "0 $N linear $D2 0" || fail "cannot create e2e-sleg2"
fill_random /dev/mapper/e2e-sleg2 64
TGT2=$(dm_slow e2e-slow "$(disk 3)" 40)         # a slow target: the copy lasts
lio_iblock src2 /dev/mapper/e2e-sleg2 > /dev/null
lio_iblock tgt2 "$TGT2" > /dev/null
lio_export src2 "$IQN-2"
SD2=$(initiator_login "$IQN-2")
io_start "$SD2"
run lr attach block/src2 block/tgt2 --copy-type sync > /dev/null
check '[ $? -eq 0 ]' "attach of a Sync mirror starts"
sleep 2
check '! lr --json relationships | grep -q "\"SyncState\": 6"' "the initial copy is still running"
IT=$(io_iterations)
dm_swap e2e-sleg2 "0 $N error"
wait_for 30 broken
cat /tmp/rels.json >&9
check broken "relationship Broken (12)"
check 'grep -q "during the initial copy" /tmp/rels.json' "the reason says the copy was incomplete"
check 'real_table src2 | grep -q " linear /*[0-9]*:[0-9]* 0"' "no mirror holds the writes any more: $(real_table src2)"
WANT=$((IT + 4))
wait_for 60 '[ "$(io_iterations)" -ge "$WANT" ]'
check '[ "$(io_iterations)" -ge "$WANT" ]' "the initiator is answered, not held ($IT -> $(io_iterations) writes)"
check '[ "$(io_errors)" -gt 0 ]' "it gets the failed disk's I/O errors ($(io_errors))"
io_stop
run lr detach src2/tgt2
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN-2"

log "--- (c) the source's disk fails while a full copy shares the Sync mirror"
# 60 MiB parts: the source, its Sync target (the same size: a dm mirror) and a slow copy target
dmsetup create e2e-sleg3 --table "0 $((60 * 2048)) linear $(disk 4) 0" || fail "cannot create e2e-sleg3"
TGT3=$(dm_part e2e-tgt3 "$(disk 5)" 60)
CPY3=$(dm_slow e2e-cslow "$(dm_part e2e-cpy3 "$(disk 5)" 60 60)" 40)
lio_iblock src3 /dev/mapper/e2e-sleg3 > /dev/null
lio_iblock tgt3 "$TGT3" > /dev/null
lio_iblock cpy3 "$CPY3" > /dev/null
lio_export src3 "$IQN-3"
SD3=$(initiator_login "$IQN-3")
SERIAL3=$(vpd_serial "$SD3")
SD=$SD3
io_start "$SD3"
run lr attach block/src3 block/tgt3 --copy-type sync --wait > /dev/null
check '[ $? -eq 0 ]' "Sync src3 -> tgt3 in sync"
check 'real_table src3 | grep -q " mirror "' "on a dm mirror: $(real_table src3)"
run lr --json attach block/src3 block/cpy3 --copy-type unsyncunassoc > /tmp/copy3.json
check '[ $? -eq 0 ]' "a full copy of src3 starts"
COPYJOB=$(jfield Job < /tmp/copy3.json)
check 'real_table src3 | grep -q " mirror core .* 3 "' "one mirror with a leg each: $(real_table src3)"
IT=$(io_iterations)
dm_swap e2e-sleg3 "0 $((60 * 2048)) error"
wait_for 30 'lr --json job "$COPYJOB" | grep -q "\"JobState\": 10"'
lr --json job "$COPYJOB" >&9
check 'lr --json job "$COPYJOB" | grep -q "\"JobState\": 10"' "the copy's job ends in Exception"
rels
cat /tmp/rels.json >&9
check 'grep -q "runs on the target.s disk" /tmp/rels.json' "src3/tgt3 says the LUN runs on the target's disk"
check 'real_table src3 | grep -q " linear $(devno "$TGT3") 0"' "the source's real device is on tgt3's disk: $(real_table src3)"
check '! grep -q "src3/cpy3" /tmp/rels.json' "no relationship of the copy left"
check_serving_on "$IT" "$SERIAL3"
io_stop
check 'io_verify "$TGT3"' "the writer's data is on tgt3's disk"
run lr detach src3/tgt3
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN-3"
