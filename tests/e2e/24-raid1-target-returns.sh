#!/bin/sh
# A raid1 mirror (Sync with a target that has the room, then Async) whose target disk fails
# under a writer and comes back: md degrades by itself (no I/O error, the LUN keeps its
# serial), the relationship is Broken saying that the source's disk serves alone, and Resync
# is refused while the disk is still gone; with the disk back, Resync loads the same raid1 again, md takes the leg back and copies only the
# regions written meanwhile (the target disk's write counter says so), and both disks are
# equal afterwards; the daemon's state is saved throughout.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:target-returns
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16)) # room on the target for the raid1's metadata
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
N1=$(dev_sectors "$(disk 1)")
FULL=$((SMB * 2048))
META0=/var/lib/lio-replica/raid-meta/meta0-src.img # the daemon's default state directory

# the target's disk behind a dm device of the scenario's own, to make it fail at will
dmsetup create e2e-tleg --table "0 $N1 linear $(disk 1) 0" || fail "cannot create e2e-tleg"
TGT=/dev/mapper/e2e-tleg

rels() { lr --json relationships > /tmp/rels.json; }
state_is() { rels; [ "$(jfield SyncState < /tmp/rels.json)" = "$1" ]; }
jobs_done() { ! lr --json jobs | grep -q '"JobState": 4'; }
tgt_written() { awk '{print $7}' "/sys/block/$(basename "$(disk 1)")/stat"; }
src_written() { awk '{print $7}' "/sys/block/$(basename "$(disk 0)")/stat"; }

fill_random "$SRC" "$SMB"
serve_pair "$SRC" "$TGT" "$IQN"
SERIAL=$(vpd_serial "$SD")

for CT in sync async; do
  log "--- $CT"
  run lr attach block/src block/tgt --copy-type "$CT" --wait > /dev/null
  check '[ $? -eq 0 ]' "$CT: in sync"
  check 'real_table src | grep -q " raid1 "' "$CT: on a raid1: $(real_table src)"
  # the source leg's metadata must not fail with the target's disk
  check 'dmsetup table lio-replica-v1-meta0-src | grep -q " linear 7:" && [ -f "$META0" ]' \
    "$CT: the source leg's metadata is on a loop device over $META0: $(dmsetup table lio-replica-v1-meta0-src)"
  IT=$(io_iterations)
  dm_swap e2e-tleg "0 $N1 error"
  wait_for 30 'state_is 12'
  cat /tmp/rels.json >&9
  check 'state_is 12' "$CT: Broken (12) once the target's disk fails"
  check 'grep -q "(the target.s disk): the source.s disk serves alone" /tmp/rels.json' \
    "$CT: the reason says the target's disk failed and the source's serves"
  check_serving_on "$IT" "$SERIAL"
  lun_fill "$SD" 1 60 # the initiator changes 1 MiB while the target is out
  run lr resync src/tgt 2> /tmp/resync.err
  RC=$?
  check '[ "$RC" -eq 5 ] && grep -q "does not answer" /tmp/resync.err' \
    "$CT: Resync refused while the target's disk is still gone: $(cat /tmp/resync.err)"
  dm_swap e2e-tleg "0 $N1 linear $(disk 1) 0"
  W0=$(tgt_written) S0=$(src_written)
  run lr resync src/tgt > /dev/null
  check '[ $? -eq 0 ]' "$CT: resync exits 0"
  wait_for 120 'state_is 6 && jobs_done'
  check 'state_is 6' "$CT: Synchronized again"
  # the writer's writes reach both disks; a copy only the target's
  W=$(($(tgt_written) - W0 - ($(src_written) - S0)))
  log "$CT: the resync made the target disk take $W sectors more than the source disk; the source has $FULL"
  check '[ "$W" -lt $((FULL / 4)) ]' "$CT: only the regions written meanwhile were copied: $W of $FULL sectors"
  dmesg | grep "md" | tail -n 5 >&9
  sleep 2
  io_stop
  check '[ "$(io_errors)" -eq 0 ]' "$CT: no I/O error at the initiator, failure and return included"
  check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "$CT: the target's disk equals the source's"
  check 'io_verify "$TGT"' "$CT: the writer's data is on the target's disk"
  run lr detach src/tgt
  check '[ $? -eq 0 ]' "$CT: detach exits 0"
  check '[ ! -e "$META0" ] && ! cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -q meta0-src' \
    "$CT: detach removed the metadata file and its loop device"
  io_start "$SD"
done
io_stop
# (the kernel shows a failed write-mostly leg's index as -1 in the table, which is saved)
check '! grep -q "cannot save the state" "$LR_LOG"' "the daemon saved its state at every change"
initiator_logout "$IQN"
