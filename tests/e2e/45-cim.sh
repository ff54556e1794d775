#!/bin/sh
# One copy of each kind driven over CIM-XML (the daemon's WBEM server, plain HTTP on loopback)
# while the initiator writes: AttachReplica with volume references, the job followed by
# GetInstance, ModifySynchronization to detach; the bytes on every replica checked. The volume's
# CIM Name is the NAA identifier the initiator reads.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:cim
# the source leaves the room of an Async copy's metadata on the 128 MiB disks
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
fill_random "$SRC" "$SMB"
# (with a unit serial LIO derives the NAA identifier from it)
lio_iblock src "$SRC" 5e2e0000-0000-4000-8000-0000000c1001 > /dev/null
for n in 1 2 3 4; do lio_iblock "t$n" "$(disk "$n")" > /dev/null; done
lio_export src "$IQN"
start_iscsid
SD=$(initiator_login "$IQN")

CIM_PORT=5988 CIM_USER=e2e CIM_PW=e2e-cim-pw
printf '%s\n' "$CIM_PW" | lio-replica cim-user add "$CIM_USER" --file /tmp/cim-users >&9 2>&1
daemon_start --cim-listen "127.0.0.1:$CIM_PORT" --cim-users /tmp/cim-users
io_start "$SD"
sleep 2

# outside the writer's slots (0-8 MiB): equal to the source as of TIME, checked per replica
same_outside_slots() { # DEV
  [ "$(dd if="$1" bs=1M skip=16 count=$((SMB - 16)) iflag=direct 2>/dev/null | md5sum)" = \
    "$(dd if="$SRC" bs=1M skip=16 count=$((SMB - 16)) iflag=direct 2>/dev/null | md5sum)" ]
}

cim_enumerate CIM_StorageVolume > /tmp/vols.xml
check '[ "$(grep -c "<INSTANCE CLASSNAME=\"LIO_StorageVolume\">" /tmp/vols.xml)" -eq 5 ]' "EnumerateInstances CIM_StorageVolume: 5 volumes"
NAA=$(grep '>block/src<' /tmp/vols.xml | cim_prop Name)
WWID=$(on_initiator "cat /sys/block/$(basename "$SD")/device/wwid")
log "src: CIM Name $NAA, initiator wwid $WWID"
check '[ "naa.$(echo "$NAA" | tr A-F a-f)" = "$WWID" ]' "the volume's Name is the NAA identifier the initiator reads"

attach() { # SOURCE TARGET COPYTYPE WHAT: attach, follow the job; 0 if it completed
  cim_attach "$1" "$2" "$3" > /tmp/attach.xml
  _rv=$(cim_rv < /tmp/attach.xml)
  log "$4: AttachReplica returned $_rv"
  [ "$_rv" = 4096 ] || return 1
  _job=$(cim_job_ref < /tmp/attach.xml)
  check '[ -n "$_job" ]' "$4: the Job reference"
  check '[ "$(cim_wait_job "$_job")" = 7 ]' "$4: the job followed by GetInstance ended Completed (7)"
  check 'grep -q "<PROPERTY.ARRAY NAME=\"OperationalStatus\" TYPE=\"uint16\"><VALUE.ARRAY><VALUE>2</VALUE><VALUE>17</VALUE>" "$E2E_STATE/cim-job.xml"' \
    "$4: OperationalStatus {2 OK, 17 Completed}"
  check '[ "$(cim_prop PercentComplete < "$E2E_STATE/cim-job.xml")" = 100 ]' "$4: PercentComplete 100"
}

sync_state() { # SOURCE TARGET
  cim_enumerate CIM_StorageSynchronized | grep ">block/$2<" | cim_prop SyncState
}

# Sync (3), detached under the writer: the target frozen as the source was then
attach src t1 3 "Sync src -> t1"
check '[ "$(sync_state src t1)" = 6 ]' "Sync: StorageSynchronized says Synchronized (6)"
check 'real_table src | grep -Eq " (mirror|raid) "' "Sync: the source is mirrored: $(real_table src)"
check '[ "$(cim_modify 2 src t1 | cim_rv)" = 0 ]' "Sync: Detach through ModifySynchronization returns 0"
check 'same_outside_slots "$(disk 1)"' "Sync: t1 == source outside the writer's slots"
check 'io_verify "$(disk 1)"' "Sync: t1 holds the writer's slots as of the detach"

# UnSyncAssoc (4): 0 at once; the image keeps its moment while the source changes
BEFORE=$(dd if="$SRC" bs=1M skip=16 count=16 iflag=direct 2>/dev/null | md5sum)
check '[ "$(cim_attach src t3 4 | cim_rv)" = 0 ]' "UnSyncAssoc src -> t3: AttachReplica returns 0"
lun_fill "$SD" 8 20
dmsetup mknodes # (no udev: the node of the daemon's device is made here)
check '[ "$(dd if=/dev/mapper/lio-replica-v1-so-t3 bs=1M skip=16 count=16 iflag=direct 2>/dev/null | md5sum)" = "$BEFORE" ]' \
  "UnSyncAssoc: the snapshot image keeps the moment of the attach"
check '[ "$(dd if="$SRC" bs=1M skip=16 count=16 iflag=direct 2>/dev/null | md5sum)" != "$BEFORE" ]' "UnSyncAssoc: the source has changed since"
check '[ "$(cim_modify 2 src t3 | cim_rv)" = 0 ]' "UnSyncAssoc: Detach returns 0"

# UnSyncUnAssoc (5): a full copy as of its end
attach src t4 5 "UnSyncUnAssoc src -> t4"
check 'same_outside_slots "$(disk 4)"' "UnSyncUnAssoc: t4 == source outside the writer's slots"
check 'io_verify "$(disk 4)"' "UnSyncUnAssoc: t4 holds the writer's slots as of the end"

# Async (2): converges once the writer stops
attach src t2 2 "Async src -> t2"
check '[ "$(sync_state src t2)" = 6 ]' "Async: Synchronized (6)"
check 'real_table src | grep -q "write_mostly"' "Async: the target leg is write-mostly: $(real_table src)"
sleep 2
io_stop
wait_for 30 '[ "$(md5dev "$(disk 2)" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
check '[ "$(md5dev "$(disk 2)" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "Async: t2 converged to the source"
check 'io_verify "$(disk 2)"' "Async: the writer's data is on t2"
check '[ "$(cim_modify 2 src t2 | cim_rv)" = 0 ]' "Async: Detach returns 0"
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator through it all"
check '! cim_enumerate CIM_StorageSynchronized | grep -q LIO_StorageSynchronized' "no relationship left"
check 'shim_table src | grep -q " linear "' "the source is back on linear"
initiator_logout "$IQN"
