#!/bin/sh
# vm-test: boots=2
# Host reboot. Boot 1 builds a Sync mirror under a live initiator, a snapshot whose source then
# changes, and a relationship that is detached again; then the daemon dies (SIGKILL) and the
# VM powers off. Boot 2 (the same disks, attached in the reverse order, so every disk has
# another name and number) does what the shipped systemd units do: `lio-replica
# restore-devices` before LIO's configuration is restored, then LIO's own part (here by hand:
# the iSCSI target and portal, as targetcli's saved configuration would), then the daemon. The
# relationships come back on the right disks, the snapshot still shows its point in time, the
# detached pair stays detached, the exported source keeps its identity and data, and the mirror
# resynchronises under the initiator.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:reboot
PERSIST=/persist                 # the state disk, a file system that survives the reboot
STATE=$PERSIST/lio-replica       # the daemon's --state-dir
NOTES=$PERSIST/e2e-notes         # what boot 1 measured, for boot 2 to compare
NODES=/run/lio-replica/dev       # the daemon's device nodes (no udev here)
SRC=$(disk 0)
TGT=$(disk 1)
A=$(disk 2)
B=$(disk 3)
C=$(disk 4)
D=$(disk 5)
MB=$(($(dev_sectors "$SRC") / 2048))
SDISK=$(by_serial lr-state) || { fail "no state disk (serial lr-state)"; exit 1; }

devno() { # DEV: major:minor, as dm tables write it
  cat "/sys/block/$(basename "$1")/dev"
}
lr_table() { dmsetup table "lio-replica-v1-$1" 2>/dev/null; }

persist_mount "$SDISK" "$PERSIST" || exit 1

if [ "$LIO_BOOT" = 1 ]; then
  fill_random "$SRC" 24 16
  fill_random "$A" 8
  lio_iblock src "$SRC" 5e2e0000-0000-4000-8000-000000000095 > /dev/null
  lio_iblock tgt "$TGT" > /dev/null
  lio_export src "$IQN"
  start_iscsid
  SD=$(initiator_login "$IQN") || exit 1
  check '[ -n "$(vpd_serial "$SD")" ]' "the initiator sees the LUN's serial"
  SERIAL=$(vpd_serial "$SD")
  daemon_start --state-dir "$STATE" || exit 1
  io_start "$SD"
  sleep 2
  lio_iblock a "$A" > /dev/null
  lio_iblock b "$B" > /dev/null
  lio_iblock c "$C" > /dev/null
  lio_iblock d "$D" > /dev/null

  run lr attach block/src block/tgt --copy-type sync --wait > /dev/null
  check '[ $? -eq 0 ]' "Sync src -> tgt attached and in sync"
  H_A=$(md5dev "$A" 8)
  run lr attach block/a block/b --copy-type unsyncassoc > /dev/null
  check '[ $? -eq 0 ]' "snapshot a -> b taken"
  # the snapshot's source changes after its point in time (through its origin device: a write
  # to the disk underneath would go around the copy-on-write)
  fill_random "$NODES/lio-replica-v1-so-a" 8
  H_A2=$(md5dev "$A" 8)
  check '[ "$H_A2" != "$H_A" ] && [ "$(md5dev "$NODES/lio-replica-v1-so-b" 8)" = "$H_A" ]' \
    "a changed; the snapshot b still shows a's image of before the change"
  run lr attach block/c block/d --copy-type sync --wait > /dev/null
  check '[ $? -eq 0 ]' "Sync c -> d attached"
  run lr detach c/d
  check '[ $? -eq 0 ]' "c/d detached before the reboot"
  io_stop
  check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator before the reboot"
  check '[ -s "$STATE/state.json" ]' "the daemon saved its state"
  {
    echo "SERIAL=$SERIAL"
    echo "H_SRC=$(md5dev "$SRC" "$MB")"
    echo "H_A=$H_A"
    echo "H_A2=$H_A2"
  } > "$NOTES"
  cat "$NOTES" >&9
  # no clean shutdown: the daemon dies, the VM powers off with the LUN still logged in
  daemon_kill9
  sync # (no unmount: a power-off; a metadata file there may be held)
  exit 0
fi

# ---- boot 2
# shellcheck disable=SC1090,SC1091 # written by boot 1
. "$NOTES"
check '[ -z "$(dmsetup ls 2>/dev/null | grep lio-replica)" ]' "a fresh boot: no device of ours"
check '[ "$(devno "$SRC")" != "" ]' "disk 0 is $SRC ($(devno "$SRC")) at this boot"

# 1. before LIO's restore (target.service): the devices
run lio-replica restore-devices --state-dir "$STATE" > /tmp/restore.out 2>&1
check '[ $? -eq 0 ]' "restore-devices exits 0"
cat /tmp/restore.out >&9
check 'lr_table real-src | grep -q " mirror "' "src is on a mirror again: $(lr_table real-src)"
LEGS="2 $(devno "$SRC") 0 $(devno "$TGT") 0"
check 'lr_table real-src | grep -q "$LEGS"' "... whose legs are disk 0 then disk 1 under their new numbers ($LEGS)"
check 'lr_table real-a | grep -q " linear $(devno "$A") "' "a's real device is on disk 2"
REAL_A=$(dmsetup info -c --noheadings -o major,minor --separator : lio-replica-v1-real-a 2>/dev/null | tr -d ' ')
check 'lr_table so-a | grep -q " snapshot-origin $REAL_A"' "a is a snapshot-origin over it"
check 'lr_table so-b | grep -q " snapshot $REAL_A $(devno "$B") P "' "b is the persistent snapshot of a in disk 3"
check 'lr_table so-c | grep -q " linear $(devno "$C") "' "c is back, alone on linear"
check 'lr_table so-d | grep -q " linear $(devno "$D") "' "d is back, alone on linear"
check '[ -z "$(lr_table rec3-d)" ]' "the detached relationship has no record"
check '[ -b "$NODES/lio-replica-v1-so-src" ]' "the source's device node has its stable name"
run lio-replica restore-devices --state-dir "$STATE" > /tmp/restore2.out 2>&1
check '[ $? -eq 0 ] && grep -q "0 re-created" /tmp/restore2.out' "a second restore-devices does nothing"

# the snapshot kept its point in time across the reboot
check '[ "$(md5dev "$NODES/lio-replica-v1-so-b" 8)" = "$H_A" ]' \
  "the snapshot still shows a's image of before the change"
check '[ "$(md5dev "$A" 8)" = "$H_A2" ]' "a itself kept the change"
check '[ "$(md5dev "$SRC" "$MB")" = "$H_SRC" ]' "the source disk holds what it held at the power-off"

# 2. LIO's own restore: the target and its portal (no backstore of ours: those the daemon makes)
lio_tpg "$IQN" > /dev/null

# 3. the daemon
daemon_start --state-dir "$STATE" || exit 1
# (the socket is up before the engine: the first answer comes once start-up is over)
lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check 'grep -q "\"InstanceID\": \"src/tgt\"" /tmp/rels.json' "relationship src/tgt is back"
check 'grep -q "\"InstanceID\": \"a/b\"" /tmp/rels.json' "relationship a/b is back"
check '! grep -q "c/d" /tmp/rels.json' "c/d stays detached"
check 'lio_so src > /dev/null' "the daemon re-created the storage object src"
SO=$(lio_so src)
check 'grep -q "lio-replica-v1-so-src" "$SO/udev_path"' "... on its shim: $(cat "$SO/udev_path")"
check '[ -L "$LIO_ROOT/iscsi/$IQN/tpgt_1/lun/lun_0/lnk_src" ]' "... exported again as LUN 0 under its link name"
check '[ "$(cat "$LIO_ROOT/iscsi/$IQN/tpgt_1/enable")" = 1 ]' "... and the TPG enabled"
for n in tgt a b c d; do
  _so=$n
  check 'lio_so "$_so" > /dev/null' "storage object $n is back"
done

start_iscsid
SD=$(initiator_login "$IQN") || exit 1
check '[ "$(vpd_serial "$SD")" = "$SERIAL" ]' "the initiator sees the same serial ($SERIAL)"
check '[ "$(on_initiator "dd if=$SD bs=1M count=$MB iflag=direct 2>/dev/null | md5sum" | cut -d" " -f1)" = "$H_SRC" ]' \
  "the initiator reads the source's data of before the reboot"
io_start "$SD"
wait_for 240 'lr --json relationships | grep -q "\"SyncState\": 6"' ||
  fail "src/tgt did not become Synchronized again"
check 'lr --json relationships | grep -q "\"SyncState\": 6"' "the mirror resynchronised after the reboot"
sleep 2
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator after the reboot"
check '[ "$(md5dev "$TGT" "$MB")" = "$(md5dev "$SRC" "$MB")" ]' "target leg == source leg"
initiator_logout "$IQN"
daemon_stop
persist_umount "$PERSIST"
