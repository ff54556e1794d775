#!/bin/sh
# 32 UnSyncAssoc snapshots of one exported source at once, taken at 32 moments under a live
# writer: all listed with their own InstanceIDs, each exported as a LUN of one target and read
# by the initiator showing its own moment; detaching every other one leaves the rest intact.
# The source and the snapshot stores are dm linear slices of the scratch disks.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:snap32
IQN2=iqn.2003-01.org.linux-iscsi.e2e:snap32-images
N=32
S_MB=12                      # the source; each store is a slice of the same size
SRCDEV=$(dm_part e2e-src "$(disk 0)" "$S_MB")
fill_random "$SRCDEV" "$S_MB"
k=0
while [ $k -lt $N ]; do
  d=$((1 + k / 8)) off=$(((k % 8) * S_MB * 2048))
  dmsetup create "e2e-s$k" --table "0 $((S_MB * 2048)) linear $(disk "$d") $off" ||
    fail "cannot create slice e2e-s$k"
  lio_iblock "s$k" "/dev/mapper/e2e-s$k" > /dev/null
  k=$((k + 1))
done
IO_SLOTS=4 serve_pair "$SRCDEV" "$(dm_part e2e-t "$(disk 5)" "$S_MB")" "$IQN"

k=0
while [ $k -lt $N ]; do
  dd if=/dev/urandom of="$SD" bs=64k count=1 seek=$((64 + k)) oflag=direct conv=notrunc 2>/dev/null
  eval "H$k=\$(dd if=\"\$SD\" bs=1M skip=4 count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
  lr attach block/src "block/s$k" --copy-type unsyncassoc > /dev/null || fail "attach of s$k"
  k=$((k + 1))
done
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator while $N snapshots were taken"
check '[ "$(lr --json relationships | grep -c "\"InstanceID\": \"src/s")" -eq $N ]' "$N snapshot relationships listed"
check '[ "$(lr --json relationships | grep -c "\"SyncState\": 11")" -eq $N ]' "... each Idle"

# one target with a LUN per snapshot, one login
k=0
while [ $k -lt $N ]; do lio_export "s$k" "$IQN2" "$k"; k=$((k + 1)); done
on_initiator "iscsiadm -m discovery -t sendtargets -p $PORTAL >/dev/null"
on_initiator "iscsiadm -m node -T $IQN2 -p $PORTAL --login >/dev/null" || fail "login to $IQN2"
luns_seen() { # disks the initiator has for IQN2
  on_initiator "iscsiadm -m session -P 3" |
    awk -v t="$IQN2" '$1 == "Target:" {c = $2} /Attached scsi disk/ && c == t {n++} END {print n + 0}'
}
wait_for 60 '[ "$(luns_seen)" -ge "$N" ]'
check '[ "$(luns_seen)" -eq "$N" ]' "the initiator sees $N LUNs"
SESS=$(on_initiator "iscsiadm -m session -P 3")
bad=0
k=0
while [ $k -lt $N ]; do
  dev=$(echo "$SESS" | awk -v t="$IQN2" -v l="$k" '$1 == "Target:" {c = $2} c == t && /scsi[0-9]+ Channel/ {lun = $NF} c == t && /Attached scsi disk/ && lun == l {print $4; exit}')
  want=$(eval "echo \$H$k")
  got=$(on_initiator "dd if=/dev/$dev bs=1M skip=4 count=8 iflag=direct 2>/dev/null | md5sum" | cut -d' ' -f1)
  if [ -z "$dev" ] || [ "$got" != "$want" ]; then
    log "s$k (LUN $k, /dev/$dev): $got, want $want"
    bad=$((bad + 1))
  fi
  k=$((k + 1))
done
check '[ "$bad" -eq 0 ]' "each of the $N snapshots, read through its own LUN, shows its own moment"
initiator_logout "$IQN2"
lio_unexport "$IQN2"

k=0
while [ $k -lt $N ]; do lr detach "src/s$k" > /dev/null || fail "detach src/s$k"; k=$((k + 2)); done
dmsetup mknodes
bad=0
k=1
while [ $k -lt $N ]; do
  want=$(eval "echo \$H$k")
  [ "$(dd if="/dev/mapper/lio-replica-v1-so-s$k" bs=1M skip=4 count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)" = "$want" ] ||
    bad=$((bad + 1))
  k=$((k + 2))
done
check '[ "$bad" -eq 0 ]' "with every other snapshot detached, the other $((N / 2)) keep their moments"
k=1
while [ $k -lt $N ]; do lr detach "src/s$k" > /dev/null || fail "detach src/s$k"; k=$((k + 2)); done
check 'shim_table src | grep -q " linear "' "no relationship left: the source is on its slice again"
initiator_logout "$IQN"
