#!/bin/sh
# vm-test: boots=2
# Host reboot of a source with several relationships. Boot 1: an exported source with two
# snapshots taken at different moments, a Sync mirror between them, and a third snapshot being
# merged back (Restore) when the daemon dies and the VM powers off. Boot 2 (disks renumbered)
# runs restore-devices, LIO's part and the daemon: every snapshot shows its own moment again,
# the mirror resynchronises, the interrupted merge resumes and ends with the source at the
# third snapshot's moment.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:rstack
PERSIST=/persist
STATE=$PERSIST/lio-replica
NOTES=$PERSIST/e2e-notes
NODES=/run/lio-replica/dev
SRC=$(disk 0)
MB=$(($(dev_sectors "$SRC") / 2048))
R_MB=24 R_AT=16
SDISK=$(by_serial lr-state) || { fail "no state disk (serial lr-state)"; exit 1; }

region() { dd if="$1" bs=1M skip=$R_AT count=$R_MB iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

persist_mount "$SDISK" "$PERSIST" || exit 1

if [ "$LIO_BOOT" = 1 ]; then
  fill_random "$SRC" "$MB"
  lio_iblock src "$SRC" 5e2e0000-0000-4000-8000-000000000096 > /dev/null
  lio_export src "$IQN"
  start_iscsid
  SD=$(initiator_login "$IQN") || exit 1
  daemon_start --state-dir "$STATE" || exit 1
  for n in 1 2 3; do lio_iblock "s$n" "$(disk "$n")" > /dev/null; done
  lio_iblock m "$(disk 4)" > /dev/null
  H1=$(region "$SD")
  run lr attach block/src block/s1 --copy-type unsyncassoc
  check '[ $? -eq 0 ]' "snapshot s1"
  lun_fill "$SD" 8 16
  run lr attach block/src block/m --copy-type sync --wait > /dev/null
  check '[ $? -eq 0 ]' "Sync mirror src -> m in sync"
  H2=$(region "$SD")
  run lr attach block/src block/s2 --copy-type unsyncassoc
  check '[ $? -eq 0 ]' "snapshot s2"
  lun_fill "$SD" 8 24
  H3=$(lun_md5 "$SD")
  run lr attach block/src block/s3 --copy-type unsyncassoc
  check '[ $? -eq 0 ]' "snapshot s3"
  lun_fill "$SD" $((MB - 16)) 16       # most of the source changes after s3
  initiator_logout "$IQN"
  run lr --json restore src/s3 > /tmp/restore.json
  check '[ "$(jfield ReturnValue < /tmp/restore.json)" = 4096 ]' "restore of s3 started"
  daemon_kill9
  ST=$(dmsetup status lio-replica-v1-so-src)
  log "merge status at the power-off: $ST"
  check 'echo "$ST" | grep -q " snapshot-merge "' "the merge is running at the power-off"
  printf 'H1=%s\nH2=%s\nH3=%s\n' "$H1" "$H2" "$H3" > "$NOTES"
  sync # (no unmount: a power-off; a metadata file there may be held)
  exit 0
fi

# ---- boot 2
# shellcheck disable=SC1090,SC1091 # written by boot 1
. "$NOTES"
run lio-replica restore-devices --state-dir "$STATE" > /tmp/restore.out 2>&1
check '[ $? -eq 0 ]' "restore-devices exits 0"
cat /tmp/restore.out >&9
dmsetup table | grep lio-replica >&9
check 'dmsetup table lio-replica-v1-so-src | grep -q " snapshot-merge "' "the source resumes its merge"
check 'dmsetup table lio-replica-v1-real-src | grep -q " mirror "' "the source's mirror is back"
for n in 1 2; do
  _n=$n
  check 'dmsetup table "lio-replica-v1-so-s$_n" | grep -q " snapshot "' "s$n is a snapshot again"
done
check '[ "$(region "$NODES/lio-replica-v1-so-s1")" = "$H1" ] && [ "$(region "$NODES/lio-replica-v1-so-s2")" = "$H2" ]' \
  "s1 and s2 show their own moments after the reboot"
lio_tpg "$IQN" > /dev/null
daemon_start --state-dir "$STATE" || exit 1
lr --json relationships > /tmp/rels.json; cat /tmp/rels.json >&9
for r in src/s1 src/s2 src/m; do
  _r=$r
  check 'grep -q "\"InstanceID\": \"$_r\"" /tmp/rels.json' "relationship $r is back"
done
wait_for 240 '! lr --json relationships | grep -q "src/s3"'
check '! lr --json relationships | grep -q "src/s3"' "the interrupted restore went on to its end"
check 'lio_so src > /dev/null' "the daemon re-created the storage object src"
start_iscsid
SD=$(initiator_login "$IQN") || exit 1
check '[ "$(on_initiator "dd if=$SD bs=1M iflag=direct 2>/dev/null | md5sum" | cut -d" " -f1)" = "$H3" ]' \
  "the initiator reads the source at s3's moment"
check '[ "$(region "$NODES/lio-replica-v1-so-s1")" = "$H1" ] && [ "$(region "$NODES/lio-replica-v1-so-s2")" = "$H2" ]' \
  "s1 and s2 still show their own moments after the merge"
io_start "$SD"
wait_for 240 'lr --json relationships | grep -q "\"SyncState\": 6"'
check 'lr --json relationships | grep -q "\"SyncState\": 6"' "the mirror resynchronised after the reboot"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator after the reboot"
check '[ "$(md5dev "$(disk 4)")" = "$(md5dev "$SRC")" ]' "mirror leg == source"
initiator_logout "$IQN"
