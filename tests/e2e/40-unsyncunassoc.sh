#!/bin/sh
# UnSyncUnAssoc (CopyType 5): a job with progress read from the kernel; at the end the target
# equals the source as of the split (the job's completion) and no relationship remains.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:clone
SRC=$(disk 0)
# a slow replica disk (writes take 20 ms) so that the copy takes a while
TGT=$(dm_slow e2e-slow "$(disk 1)" 20)
MB=$(($(dev_sectors "$SRC") / 2048))

fill_random "$SRC" 64 16
serve_pair "$SRC" "$TGT" "$IQN"

lr --json attach block/src block/tgt --copy-type unsyncunassoc > /tmp/attach.json
check '[ $? -eq 0 ]' "attach unsyncunassoc exits 0"
check '[ "$(jfield ReturnValue < /tmp/attach.json)" = 4096 ]' "ReturnValue 4096 (job started)"
JOB=$(jfield Job < /tmp/attach.json)
: > /tmp/progress
n=0
while [ $n -lt 600 ]; do
  lr --json job "$JOB" > /tmp/job.json 2>/dev/null || break
  echo "$(jfield JobState < /tmp/job.json) $(jfield PercentComplete < /tmp/job.json)" >> /tmp/progress
  [ "$(jfield JobState < /tmp/job.json)" = 4 ] || break
  sleep 0.5
  n=$((n + 1))
done
log "progress samples: $(awk '{print $2}' /tmp/progress | uniq | tr '\n' ' ')"
check '[ "$(jfield JobState < /tmp/job.json)" = 7 ]' "job completed (7)"
check '[ "$(awk "{print \$2}" /tmp/progress | uniq | wc -l)" -ge 3 ]' "progress was reported in steps"
check 'awk "NR > 1 && \$2 < last {bad = 1} {last = \$2} END {exit bad}" /tmp/progress' "progress never went down"
check '[ "$(tail -n 1 /tmp/progress | cut -d" " -f2)" = 100 ]' "progress ended at 100"
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
lr --json relationships > /tmp/rels.json
check '! grep -q InstanceID /tmp/rels.json' "no relationship remains"
check 'shim_table src | grep -q " linear "' "the source is back on linear"
# outside the writer's slots nothing changed since the split: equal; the slots hold a
# complete pattern each (the writer rewrites the same pattern per slot)
check '[ "$(dd if="$TGT" bs=1M skip=16 count=$((MB - 16)) iflag=direct 2>/dev/null | md5sum)" = "$(dd if="$SRC" bs=1M skip=16 count=$((MB - 16)) iflag=direct 2>/dev/null | md5sum)" ]' \
  "target == source outside the writer's slots"
check 'io_verify "$TGT"' "the target holds the writer's slots as of the split"
lun_fill "$SD" 4 40
check '[ "$(md5dev "$TGT" "$MB")" != "$(md5dev "$SRC" "$MB")" ]' "the target stands alone: later source writes do not reach it"
initiator_logout "$IQN"
