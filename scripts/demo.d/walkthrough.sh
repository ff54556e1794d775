#!/bin/sh
# The demo: AttachReplica of every copy type on a real LIO target while an open-iscsi
# initiator writes, printing return values, job progress, relationship states and checksums.
# Runs inside the test VM (scripts/demo boots it) or on a real target host (disks from
# E2E_DISKS). Uses the e2e helpers.
# shellcheck disable=SC1090,SC1091,SC2016 # lib.sh is copied beside it; check takes code in single quotes
. "${E2E_LIB:-$(dirname "$0")/lib.sh}"

say() { printf '\n==> %s\n' "$*" >&9; }
show() { printf '    %s\n' "$@" >&9; }

IQN=iqn.2003-01.org.linux-iscsi.demo:db
SRC=$(disk 0)
say "A block backstore 'db' on $SRC, exported as $IQN lun 0, an initiator writing to it"
fill_random "$SRC" 32 16
lio_iblock db "$SRC" 5e2e0000-0000-4000-8000-00000000db01 > /dev/null
lio_iblock mirror "$(disk 1)" > /dev/null
lio_iblock snap "$(disk 2)" > /dev/null
lio_iblock clone "$(disk 3)" > /dev/null
lio_export db "$IQN"
start_iscsid
SD=$(initiator_login "$IQN")
show "initiator disk: $SD, unit serial $(vpd_serial "$SD")"
daemon_start
io_start "$SD"
sleep 2
lr storage-objects >&9

say "CopyType 3 Sync: lio-replica attach block/db block/mirror --copy-type sync --wait"
lr attach block/db block/mirror --copy-type sync --wait > /tmp/attach.out 2>&1
rc=$?
cat /tmp/attach.out >&9
show "exit status $rc"
lr relationships >&9
show "kernel: $(shim_table db)"

say "CopyType 4 UnSyncAssoc needs db out of its Sync relationship: detach it"
lr detach db/mirror >&9 2>&1
show "exit status $?"

say "CopyType 4 UnSyncAssoc: lio-replica attach block/db block/snap --copy-type unsyncassoc"
lr attach block/db block/snap --copy-type unsyncassoc >&9 2>&1
show "exit status $? (0: the point-in-time copy exists at return)"
fill_random "$SD" 8 24
lr relationships >&9
lr detach db/snap >&9 2>&1

say "CopyType 5 UnSyncUnAssoc: lio-replica attach block/db block/clone --copy-type unsyncunassoc --wait"
lr attach block/db block/clone --copy-type unsyncunassoc --wait > /tmp/attach.out 2>&1
rc=$?
cat /tmp/attach.out >&9
show "exit status $rc"
lr jobs >&9
io_stop
show "initiator: $(io_iterations) writes, $(io_errors) I/O errors"
MB=$(($(dev_sectors "$SRC") / 2048))
show "md5 source $(md5dev "$SRC" "$MB")"
show "md5 mirror $(md5dev "$(disk 1)" "$MB") (detached: the source as of the detach)"
show "md5 clone  $(md5dev "$(disk 3)" "$MB") (the source as of the clone's completion)"

say "Refusals: unknown element, same element, vendor CopyType"
lr attach block/nosuch block/clone --copy-type sync; show "exit status $?"
lr attach block/db block/db --copy-type sync; show "exit status $?"
lr attach block/db block/clone --copy-type 40000; show "exit status $?"
lr relationships >&9
initiator_logout "$IQN"
check '[ "$(io_errors)" -eq 0 ]' "the initiator saw no I/O error during the whole demo"
