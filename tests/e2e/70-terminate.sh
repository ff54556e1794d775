#!/bin/sh
# Job Terminate during a Sync resync: the job ends Terminated (8), the source LUN keeps
# serving without error, the mirror is rolled back to linear and no relationship remains.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:term
SRC=$(disk 0)
TGT=$(dm_slow e2e-slow "$(disk 1)" 50)
serve_pair "$SRC" "$TGT" "$IQN"
lr --json attach block/src block/tgt --copy-type sync > /tmp/attach.json
JOB=$(jfield Job < /tmp/attach.json)
check '[ -n "$JOB" ] && [ "$JOB" != null ]' "a job started: $JOB"
wait_for 60 '[ "$(lr --json job "$JOB" | jfield PercentComplete)" -gt 0 ]'
lr --json job "$JOB" > /tmp/job.json
check '[ "$(jfield JobState < /tmp/job.json)" = 4 ]' "job running at $(jfield PercentComplete < /tmp/job.json) %"
run lr job "$JOB" --terminate
check '[ $? -eq 0 ]' "terminate exits 0"
lr --json job "$JOB" > /tmp/job.json
check '[ "$(jfield JobState < /tmp/job.json)" = 8 ]' "job Terminated (8)"
check 'shim_table src | grep -q " linear "' "the source is back on linear: $(shim_table src)"
check '! dmsetup info lio-replica-v1-rel3-src >/dev/null 2>&1' "the relationship record is gone"
lr --json relationships > /tmp/rels.json
check '! grep -q InstanceID /tmp/rels.json' "no relationship remains"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check 'io_verify_lun "$SD"' "the LUN still serves the writer's data"
initiator_logout "$IQN"
