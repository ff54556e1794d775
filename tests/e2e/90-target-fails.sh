#!/bin/sh
# Sync (CopyType 3) when the target device fails, with a live initiator writing: (a) after
# the sync, (b) Resync once the device is back, (c) during the initial resync. The kernel's
# mirror (handle_errors) marks the failed leg and holds writes until its table is reloaded;
# the daemon drops the leg (source back on linear, noflush), so the LUN keeps serving with no
# I/O error; the relationship is Broken with its reason, a running job ends in Exception, and
# Resync copies everything again.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:tfail
SRC=$(disk 0)
D1=$(disk 1)
N=$(dev_sectors "$D1")
MB=$((N / 2048))
LINEAR="0 $N linear $D1 0"
REC=lio-replica-v1-rec3-tgt

# the target's disk behind a dm device of the scenario's own, to make it fail at will
dmsetup create e2e-tleg --table "$LINEAR" || fail "cannot create e2e-tleg"
TGT=/dev/mapper/e2e-tleg
rels() { lr --json relationships > /tmp/rels.json; }
job_state() { lr --json job "$JOB" | jfield JobState; }

fill_random "$SRC" 24 16          # data outside the writer's slots, to be copied
serve_pair "$SRC" "$TGT" "$IQN"

log "--- (a) the target fails after the sync"
run lr attach block/src block/tgt --copy-type sync --wait
check '[ $? -eq 0 ]' "attach sync --wait exits 0 (job completed)"
rels
check '[ "$(jfield SyncState < /tmp/rels.json)" = 6 ]' "relationship Synchronized (6)"
REL=$(jfield InstanceID < /tmp/rels.json)
log "mirror status: $(dmsetup status lio-replica-v1-real-src)"
IT=$(io_iterations)
dm_swap e2e-tleg "0 $N error"
# Broken shows as soon as the kernel marks the leg; the reason is complete once the daemon
# has dropped it
wait_for 30 'rels; [ "$(jfield SyncState < /tmp/rels.json)" = 12 ] && grep -q "dropped" /tmp/rels.json'
cat /tmp/rels.json >&9
check '[ "$(jfield SyncState < /tmp/rels.json)" = 12 ]' "relationship Broken (12)"
# (jfield stops at a comma: read the reason with grep)
check 'grep -q "\"ProgressStatus\": \"mirror leg 1 .* failed: health AD; .*dropped" /tmp/rels.json' \
  "ProgressStatus gives the reason (leg 1 failed, health AD, dropped)"
check 'real_table src | grep -q " linear "' "the failed leg was dropped: $(real_table src)"
check 'dmsetup table "$REC" | grep -q " error"' "the relationship record is marked broken"
grep -E 'failed target leg dropped|dm suspend.*so-src' "$LR_LOG" | tail -n 3 >&9
WANT=$((IT + 16))
wait_for 30 '[ "$(io_iterations)" -ge "$WANT" ]'
check '[ "$(io_iterations)" -ge "$WANT" ]' "the initiator keeps writing after the failure ($IT -> $(io_iterations) writes)"
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"

log "--- (b) the target is back: Resync"
dm_swap e2e-tleg "$LINEAR"
lr --json resync "$REL" > /tmp/resync.json
cat /tmp/resync.json >&9
check '[ "$(jfield ReturnValue < /tmp/resync.json)" = 4096 ]' "resync of the broken relationship starts a job"
JOB=$(jfield Job < /tmp/resync.json)
wait_for 120 '[ "$(job_state)" -ge 7 ]'
check '[ "$(job_state)" = 7 ]' "the resync job completed"
rels
check '[ "$(jfield SyncState < /tmp/rels.json)" = 6 ]' "relationship Synchronized (6) again"
check 'real_table src | grep -q " mirror "' "the source is on a mirror again: $(real_table src)"
check '! dmsetup table "$REC" | grep -q " error"' "the broken mark is cleared"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check 'io_verify "$SRC"' "the writer's data is on the source leg"
check 'io_verify "$TGT"' "the writer's later writes are on the target leg too"
H_SRC=$(md5dev "$SRC" "$MB")
check '[ "$(md5dev "$TGT" "$MB")" = "$H_SRC" ]' "target leg == source leg ($H_SRC)"

log "--- (c) the target fails during the initial resync"
run lr detach "$REL"
check '[ $? -eq 0 ]' "detach exits 0"
dm_swap e2e-tleg "0 $N delay $D1 0 0 $D1 0 50"   # slow writes: the resync lasts
io_start "$SD"
lr --json attach block/src block/tgt --copy-type sync > /tmp/attach.json
JOB=$(jfield Job < /tmp/attach.json)
check '[ -n "$JOB" ] && [ "$JOB" != null ]' "a job started: $JOB"
wait_for 60 '[ "$(lr --json job "$JOB" | jfield PercentComplete)" -gt 0 ]'
lr --json job "$JOB" > /tmp/job.json
check '[ "$(jfield JobState < /tmp/job.json)" = 4 ]' "job running at $(jfield PercentComplete < /tmp/job.json) %"
log "mirror status: $(dmsetup status lio-replica-v1-real-src)"
IT=$(io_iterations)
dm_swap e2e-tleg "0 $N error"
wait_for 60 '[ "$(job_state)" -ge 7 ]'
lr --json job "$JOB" > /tmp/job.json
cat /tmp/job.json >&9
check '[ "$(jfield JobState < /tmp/job.json)" = 10 ]' "the job ends in Exception (10)"
check 'grep -q "\"ErrorDescription\": \".*broken: mirror leg 1 .* failed: health A" /tmp/job.json' \
  "ErrorDescription names the failure"
rels
check '[ "$(jfield SyncState < /tmp/rels.json)" = 12 ]' "relationship Broken (12)"
check 'real_table src | grep -q " linear "' "the failed leg was dropped: $(real_table src)"
WANT=$((IT + 8))
wait_for 30 '[ "$(io_iterations)" -ge "$WANT" ]'
check '[ "$(io_iterations)" -ge "$WANT" ]' "the initiator keeps writing after the failure ($IT -> $(io_iterations) writes)"
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check 'io_verify_lun "$SD"' "the LUN serves the writer's data"
run lr detach "$REL"
check '[ $? -eq 0 ]' "detach of the broken relationship exits 0"
check 'shim_table src | grep -q " linear " && [ -z "$(real_table src)" ]' "the source is on its disk again: $(shim_table src)"
check '! dmsetup info "$REC" >/dev/null 2>&1' "the relationship record is gone"
log "kernel messages:"
dmesg | grep -iE 'mirror|raid1|device-mapper|I/O error|blk_update' | tail -n 20 >&9
initiator_logout "$IQN"
