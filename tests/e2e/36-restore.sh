#!/bin/sh
# Restore (ModifySynchronization 5) of UnSyncAssoc snapshots. Refused while an initiator is
# logged in to the source; with the initiator logged out, the source returns to the snapshot's
# moment (snapshot-merge, followed by a job) while its other snapshot keeps its own image; read
# again through the LUN after logging in. Then a forced restore under a live writer: 0 I/O
# errors (the one write in flight at the switch may read back the snapshot's data), the
# writer's data intact, the rest of the source back at the snapshot's moment.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:restore
SRC=$(disk 0)
R_MB=24 R_AT=16

region() { dd if="$1" bs=1M skip=$R_AT count=$R_MB iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }
job_state() { lr --json job "$1" | jfield JobState; }

fill_random "$SRC" "$R_MB" "$R_AT"
serve_pair "$SRC" "$(disk 1)" "$IQN"           # tgt on disk 1: the first snapshot
lio_iblock s2 "$(disk 2)" > /dev/null
H0=$(region "$SD")
run lr attach block/src block/tgt --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot tgt taken"
lun_fill "$SD" 16 16
H1=$(region "$SD")
run lr attach block/src block/s2 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s2 taken"
lun_fill "$SD" 16 24
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error while the snapshots were taken"

# logged in: refused, naming the session
run lr restore src/tgt 2> /tmp/refused.err
RC=$?
check '[ "$RC" -eq 6 ] && grep -q "logged in" /tmp/refused.err && grep -q "iqn\." /tmp/refused.err' \
  "restore refused while an initiator is logged in: $(cat /tmp/refused.err)"
check 'shim_table src | grep -q " snapshot-origin "' "... and nothing changed"

initiator_logout "$IQN"
run lr --json restore src/tgt > /tmp/restore.json
check '[ "$(jfield ReturnValue < /tmp/restore.json)" = 4096 ]' "restore started a job"
JOB=$(jfield Job < /tmp/restore.json)
wait_for 120 '[ "$(job_state "$JOB")" -ge 7 ]'
lr --json job "$JOB" > /tmp/job.json; cat /tmp/job.json >&9
check '[ "$(jfield JobState < /tmp/job.json)" = 7 ] && [ "$(jfield PercentComplete < /tmp/job.json)" = 100 ]' "the restore job completed at 100%"
check 'shim_table src | grep -q " snapshot-origin "' "the source is a snapshot-origin again (s2 remains)"
check 'shim_table tgt | grep -q " linear "' "the spent snapshot's target is free, on linear"
check '! lr --json relationships | grep -q "src/tgt"' "the restored relationship has ended"
check 'lr --json relationships | grep -q "src/s2"' "the other snapshot's relationship remains"
dmsetup mknodes
check '[ "$(region /dev/mapper/lio-replica-v1-so-s2)" = "$H1" ]' "s2 still shows its own moment"
SD=$(initiator_login "$IQN")
check '[ "$(on_initiator "dd if=$SD bs=1M skip=$R_AT count=$R_MB iflag=direct 2>/dev/null | md5sum" | cut -d" " -f1)" = "$H0" ]' \
  "logged in again, the initiator reads the snapshot's moment"

# forced, with the initiator logged in and writing
io_start "$SD"
sleep 2
run lr --json restore src/s2 --force > /tmp/forced.json
check '[ "$(jfield ReturnValue < /tmp/forced.json)" = 4096 ]' "a forced restore starts while the initiator writes"
wait_for 120 '! lr --json relationships | grep -q "src/s2"'
check '! lr --json relationships | grep -q "src/s2"' "... and ends"
sleep 2
io_stop
# A write just before the switch to the merge, read back just after it, shows the snapshot's
# data: that is what a forced Restore does to the LUN under the initiator. Only the one
# write in flight at the switch can; a failed write or read (an empty read) is an I/O error.
EMPTY=d41d8cd98f00b204e9800998ecf8427e
io_error_lines > /tmp/io-errors
cat /tmp/io-errors >&9
FAILED_IO=$(grep -c -e " failed" -e "reads back $EMPTY" /tmp/io-errors)
REVERTED=$(grep "reads back" /tmp/io-errors | grep -vc "reads back $EMPTY")
check '[ "$FAILED_IO" -eq 0 ]' "no I/O error at the initiator during the forced restore"
check '[ "$REVERTED" -le 1 ]' "at most the write in flight at the switch reads back the snapshot's data ($REVERTED)"
check 'io_verify "$SRC"' "the writer's slots hold what it wrote last"
check '[ "$(region "$SRC")" = "$H1" ]' "the region is back at s2's moment"
check 'shim_table src | grep -q " linear "' "no relationship left: the source is on its disk again"
initiator_logout "$IQN"
