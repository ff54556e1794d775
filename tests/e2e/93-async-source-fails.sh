#!/bin/sh
# Async (CopyType 2) when the *source* disk fails, with a live initiator writing: md marks the
# source's leg faulty and the raid1 serves the LUN from the target's disk alone, with no I/O
# error and the same identity; the relationship is Broken saying which disk failed and what
# serves. Resync (which would copy the failed disk) is refused with what to do; once the disk
# is back, Restore copies the target onto it under the writer and the raid1 mirrors again.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:asfail
D0=$(disk 0)
N=$(($(dev_sectors "$D0") - 16 * 2048)) # room on the target for the raid1's metadata
TGT=$(disk 1)

rels() { lr --json relationships > /tmp/rels.json; }
state_is() { rels; [ "$(jfield SyncState < /tmp/rels.json)" = "$1" ]; }

# the source's disk behind a dm device of the scenario's own, to make it fail at will (dm_swap)
dmsetup create e2e-sleg --table "0 $N linear $D0 0" || fail "cannot create e2e-sleg"
SRC=/dev/mapper/e2e-sleg
fill_random "$SRC" 24 16
serve_pair "$SRC" "$TGT" "$IQN"
SERIAL=$(vpd_serial "$SD")

run lr attach block/src block/tgt --copy-type async --wait > /dev/null
check '[ $? -eq 0 ]' "Async mirror in sync"
IT=$(io_iterations)
dm_swap e2e-sleg "0 $N error"
wait_for 30 'state_is 12'
cat /tmp/rels.json >&9
check 'state_is 12' "relationship Broken (12)"
check 'grep -q "(the source.s disk): the LUN is served from the target.s disk alone" /tmp/rels.json' \
  "the reason says the source's disk failed and the target's serves"
check_serving_on "$IT" "$SERIAL"
run lr resync src/tgt 2> /tmp/resync.err
RC=$?
check '[ "$RC" -eq 5 ] && grep -q "Restore (Operation 5)" /tmp/resync.err' "Resync is refused with what to do: $(cat /tmp/resync.err)"

log "--- the source's disk is back"
dm_swap e2e-sleg "0 $N linear $D0 0"
run lr restore src/tgt --force
check '[ $? -eq 0 ]' "restore starts"
wait_for 300 'state_is 6'
cat /tmp/rels.json >&9
check 'state_is 6' "Synchronized again after the restore"
check 'real_table src | grep -q "raid1 .*nosync.*write_mostly 1"' "the raid1 again, the source leg first: $(real_table src)"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator, failure and restore included"
MB=$((N / 2048))
check '[ "$(md5dev "$SRC" "$MB")" = "$(md5dev "$TGT" "$MB")" ]' "the source's disk equals the target's"
check 'io_verify "$SRC"' "the writer's data is on the source's disk"
check 'io_verify "$TGT"' "the writer's data is on the target's disk"
run lr detach src/tgt
check '[ $? -eq 0 ]' "detach exits 0"
initiator_logout "$IQN"
