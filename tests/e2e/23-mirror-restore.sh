#!/bin/sh
# Restore of a fractured mirror, Sync on a same-size target (a dm mirror), Sync and Async on
# a raid1 (their target has room for the metadata): refused while the initiator is logged in,
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
TGT1=$(disk 1)
TGT0=$(dm_part e2e-tgt0 "$(disk 2)" "$SMB") # the source's size: no room for raid metadata

state_is() { lr --json relationships | grep -q "\"SyncState\": $1"; }

fill_random "$SRC" "$SMB"
serve_pair "$SRC" "$TGT1" "$IQN"
lio_iblock tgt0 "$TGT0" > /dev/null

restore_round() { # COPY_TYPE TARGET_NAME TARGET_DEVICE
  CT=$1 T=$2 TGT=$3
  run lr attach block/src "block/$T" --copy-type "$CT" --wait > /dev/null
  check '[ $? -eq 0 ]' "$CT/$T: mirror in sync"
  run lr fracture "src/$T"
  check '[ $? -eq 0 ]' "$CT/$T: fracture exits 0"
  IMAGE=$(md5dev "$TGT" "$SMB")
  lun_fill "$SD" 8 40 # the initiator changes the source after the fracture
  sleep 2
  io_stop
  check '[ "$(md5dev "$SRC" "$SMB")" != "$IMAGE" ]' "$CT/$T: the source has moved on from the image"

  run lr restore "src/$T" > "$E2E_STATE/out" 2>&1
  check '[ $? -eq 6 ]' "$CT/$T: restore refused (6) while the initiator is logged in"
  check 'grep -q "logged in" "$E2E_STATE/out"' "$CT/$T: the refusal says who is logged in: $(cat "$E2E_STATE/out")"
  run lr restore "src/$T" --force
  check '[ $? -eq 0 ]' "$CT/$T: forced restore started"
  check 'state_is 10' "$CT/$T: RestoreInProgress: $(lr relationships)"
  check '[ "$(lun_md5 "$SD" "$SMB")" = "$IMAGE" ]' "$CT/$T: the initiator reads the target's image at once"
  check 'state_is 10' "$CT/$T: (read while the restore was still running: $(lr relationships))"
  wait_for 600 'state_is 6'
  check 'state_is 6' "$CT/$T: Synchronized after the restore: $(lr relationships)"
  check '[ "$(md5dev "$SRC" "$SMB")" = "$IMAGE" ]' "$CT/$T: the source disk holds the image"
  log "$CT/$T: real table after the restore: $(real_table src)"
  case $CT/$T in
    sync/tgt0) check 'real_table src | grep -q "mirror core 2 [0-9]* nosync 2 [0-9:]* 0 [0-9:]* 0"' "$CT/$T: a mirror again with nosync" ;;
    sync/tgt) check 'real_table src | grep "raid1 .*nosync" | grep -vq write_mostly' "$CT/$T: a raid1 without write_mostly again, with nosync" ;;
    async/tgt) check 'real_table src | grep -q "raid1 .*nosync.*write_mostly 1"' "$CT/$T: a raid1 again with nosync" ;;
  esac
  io_start "$SD"
  # every slot written once at least (the source disk is slow), so that all hold the new data
  wait_for 120 '[ "$(io_iterations)" -ge 8 ]'
  io_stop
  check '[ "$(io_errors)" -eq 0 ]' "$CT/$T: no I/O error at the initiator"
  wait_for 30 '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
  check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "$CT/$T: mirroring again: the target equals the source"
  check 'io_verify "$TGT"' "$CT/$T: the writer's new data is on the target"
  run lr detach "src/$T"
  check '[ $? -eq 0 ]' "$CT/$T: detach exits 0"
  io_start "$SD"
}

restore_round sync tgt0 "$TGT0"
restore_round sync tgt "$TGT1"
restore_round async tgt "$TGT1"
io_stop
initiator_logout "$IQN"
