#!/bin/sh
# kill -9 of the daemon during a Restore: the kernel's merge goes on without it; the restarted
# daemon finds the merge, follows it with a new job to the end and ends the relationship; the
# source holds the snapshot's image and the other snapshot keeps its own.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:rkill
SRC=$(disk 0)
MB=$(($(dev_sectors "$SRC") / 2048))
BIG=$((MB - 16))                       # most of the source is rewritten after the snapshot

fill_random "$SRC" "$MB"
serve_pair "$SRC" "$(disk 1)" "$IQN"
lio_iblock s2 "$(disk 2)" > /dev/null
io_stop
H0=$(md5dev "$SRC")
run lr attach block/src block/tgt --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot tgt taken"
lun_fill "$SD" 8 8
H1=$(lun_md5 "$SD")
run lr attach block/src block/s2 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot s2 taken"
lun_fill "$SD" "$BIG" 16
initiator_logout "$IQN"

run lr --json restore src/tgt > /tmp/restore.json
check '[ "$(jfield ReturnValue < /tmp/restore.json)" = 4096 ]' "restore started"
daemon_kill9
ST=$(dmsetup status lio-replica-v1-so-src)
log "merge status after the kill: $ST"
check 'echo "$ST" | grep -q " snapshot-merge "' "the kernel goes on merging without the daemon"
check 'dmsetup status lio-replica-v1-so-src | awk "{split(\$4, a, \"/\"); exit !(a[1] > \$5)}"' \
  "... with chunks still to merge (the kill came during the merge)"

daemon_start
lr --json relationships > /tmp/rels.json; cat /tmp/rels.json >&9
check 'grep -q "\"InstanceID\": \"src/tgt\"" /tmp/rels.json' "the restarted daemon finds the restore"
wait_for 180 '! lr --json relationships | grep -q "src/tgt"'
check '! lr --json relationships | grep -q "src/tgt"' "... follows it to the end, and the relationship ends"
lr --json jobs > /tmp/jobs.json; cat /tmp/jobs.json >&9
check 'grep -q "\"JobState\": 7" /tmp/jobs.json' "the new daemon's restore job completed"
check 'shim_table src | grep -q " snapshot-origin "' "the source is a snapshot-origin again"
check '[ "$(md5dev "$SRC")" = "$H0" ]' "the source holds the snapshot's image"
dmsetup mknodes
check '[ "$(md5dev /dev/mapper/lio-replica-v1-so-s2)" = "$H1" ]' "s2 keeps its own moment"
run lr detach src/s2
check '[ $? -eq 0 ]' "detach s2"
check 'shim_table src | grep -q " linear "' "the source is on its disk again"
