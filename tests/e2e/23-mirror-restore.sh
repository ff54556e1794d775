#!/bin/sh
# Restore of a fractured mirror, Sync then Async: refused while the initiator is logged in,
# forced: the LUN reads the target's image from the first moment (read through the initiator
# while the restore still runs, onto a source disk made slow), the job ends with the source
# equal to the image, and the relationship mirrors again (the source leg first, the writer's
# later data on both disks).
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:mirror-restore
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
# writes to the source disk take 300 ms: the restore, which writes it, lasts long enough to read
# the LUN meanwhile (the initial copy only reads it)
PART=$(dm_part e2e-srcpart "$(disk 0)" "$SMB")
SRC=$(dm_slow e2e-src "$PART" 300)
TGT=$(disk 1)

state_is() { lr --json relationships | grep -q "\"SyncState\": $1"; }

fill_random "$SRC" "$SMB"
serve_pair "$SRC" "$TGT" "$IQN"

restore_round() { # COPY_TYPE
  CT=$1
  run lr attach block/src block/tgt --copy-type "$CT" --wait > /dev/null
  check '[ $? -eq 0 ]' "$CT: mirror in sync"
  run lr fracture src/tgt
  check '[ $? -eq 0 ]' "$CT: fracture exits 0"
  IMAGE=$(md5dev "$TGT" "$SMB")
  fill_random "$SD" 8 40 # the initiator changes the source after the fracture
  sleep 2
  io_stop
  check '[ "$(md5dev "$SRC" "$SMB")" != "$IMAGE" ]' "$CT: the source has moved on from the image"

  run lr restore src/tgt > "$E2E_STATE/out" 2>&1
  check '[ $? -eq 6 ]' "$CT: restore refused (6) while the initiator is logged in"
  check 'grep -q "logged in" "$E2E_STATE/out"' "$CT: the refusal says who is logged in: $(cat "$E2E_STATE/out")"
  run lr restore src/tgt --force
  check '[ $? -eq 0 ]' "$CT: forced restore started"
  check 'state_is 10' "$CT: RestoreInProgress: $(lr relationships)"
  check '[ "$(md5dev "$SD" "$SMB")" = "$IMAGE" ]' "$CT: the initiator reads the target's image at once"
  check 'state_is 10' "$CT: (read while the restore was still running: $(lr relationships))"
  wait_for 600 'state_is 6'
  check 'state_is 6' "$CT: Synchronized after the restore: $(lr relationships)"
  check '[ "$(md5dev "$SRC" "$SMB")" = "$IMAGE" ]' "$CT: the source disk holds the image"
  log "$CT: real table after the restore: $(real_table src)"
  case $CT in
    sync) check 'real_table src | grep -q "mirror core 2 [0-9]* nosync 2 [0-9:]* 0 [0-9:]* 0"' "$CT: a mirror again with nosync" ;;
    async) check 'real_table src | grep -q "raid1 .*nosync.*write_mostly 1"' "$CT: a raid1 again with nosync" ;;
  esac
  io_start "$SD"
  # every slot written once at least (the source disk is slow), so that all hold the new data
  wait_for 120 '[ "$(io_iterations)" -ge 8 ]'
  io_stop
  check '[ "$(io_errors)" -eq 0 ]' "$CT: no I/O error at the initiator"
  wait_for 30 '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
  check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "$CT: mirroring again: the target equals the source"
  check 'io_verify "$TGT"' "$CT: the writer's new data is on the target"
  run lr detach src/tgt
  check '[ $? -eq 0 ]' "$CT: detach exits 0"
  io_start "$SD"
}

restore_round sync
restore_round async
io_stop
initiator_logout "$IQN"
