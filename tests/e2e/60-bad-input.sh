#!/bin/sh
# Bad input: each refused AttachReplica gets the seed's return value as exit status and leaves
# configfs and device-mapper exactly as they were.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

SRC=$(disk 0)
TGT=$(disk 1)
SMALL=$(dm_part e2e-small "$(disk 2)" 16)
EXPT=$(disk 3)
lio_iblock src "$SRC" > /dev/null
lio_iblock tgt "$TGT" > /dev/null
lio_iblock small "$SMALL" > /dev/null
lio_iblock exported "$EXPT" > /dev/null
lio_export exported iqn.2003-01.org.linux-iscsi.e2e:exported
# a fileio backstore
truncate -s 64M /tmp/file0
mkdir -p "$LIO_ROOT/core/fileio_0/file0"
echo "fd_dev_name=/tmp/file0,fd_dev_size=67108864" > "$LIO_ROOT/core/fileio_0/file0/control"
echo 1 > "$LIO_ROOT/core/fileio_0/file0/enable"
daemon_start

# expect RC SOURCE TARGET TYPE WHY: the CLI exits RC, says why, and nothing changed
expect() {
  _want=$1
  dump_state /tmp/before
  lr attach "$2" "$3" --copy-type "$4" > /tmp/out 2> /tmp/err
  _rc=$?
  dump_state /tmp/after
  check '[ "$_rc" = "$_want" ]' "$5: exit $1 (got $_rc: $(cat /tmp/err))"
  check '[ -s /tmp/err ]' "$5: a reason on stderr"
  check 'cmp -s /tmp/before /tmp/after' "$5: configfs and device-mapper unchanged" ||
    diff /tmp/before /tmp/after >&9
}
expect 5 block/nosuch block/tgt sync "unknown source"
expect 5 block/src block/nosuch sync "unknown target"
expect 5 block/src block/src sync "source = target"
expect 5 block/src block/small sync "target smaller than source"
expect 5 block/src block/tgt 0 "CopyType 0"
expect 5 block/src block/tgt 1 "CopyType 1"
expect 5 block/src block/tgt 6 "CopyType 6"
expect 5 block/src block/tgt 32767 "CopyType 32767"
expect 1 block/src block/tgt 32768 "vendor CopyType 32768"
expect 1 block/src block/tgt 65535 "vendor CopyType 65535"
expect 1 fileio/file0 block/tgt sync "fileio source"
expect 6 block/src block/exported sync "target exported through a LUN"
expect 5 "block/../src" block/tgt sync "a name with .."

# elements already in relationships
run lr attach block/src block/tgt --copy-type unsyncassoc
check '[ $? -eq 0 ]' "a snapshot src -> tgt"
lio_iblock tgt2 "$(disk 4)" > /dev/null
lio_iblock tgt3 "$(disk 5)" > /dev/null
expect 6 block/tgt2 block/tgt sync "target already in a relationship"
expect 6 block/tgt block/tgt2 unsyncassoc "a replica as a source (no cascading)"
run lr attach block/src block/tgt2 --copy-type sync --wait > /dev/null
check '[ $? -eq 0 ]' "a Sync mirror beside the snapshot"
expect 6 block/src block/tgt3 async "a second mirror of one source"
