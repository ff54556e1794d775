#!/bin/sh
# Async (CopyType 2): raid1 with the target leg write-mostly and a bounded write-behind; the
# lag bound is reported; once writes stop the target converges to the source.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:async
# the target needs room for two metadata areas beyond the source's size
SMB=$(($(dev_sectors "$(disk 0)") / 2048 - 16))
SRC=$(dm_part e2e-src "$(disk 0)" "$SMB")
TGT=$(disk 1)

fill_random "$SRC" 24 16
serve_pair "$SRC" "$TGT" "$IQN"

run lr attach block/src block/tgt --copy-type async --wait > /tmp/attach.out 2>&1
check '[ $? -eq 0 ]' "attach async --wait exits 0 (initial copy completed)"
cat /tmp/attach.out >&9
check 'real_table src | grep -q " raid raid1 .*write_mostly 1"' "the source is served by dm raid1 with a write-mostly target: $(real_table src)"
lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check '[ "$(jfield CopyType < /tmp/rels.json)" = 2 ]' "relationship CopyType 2"
check '[ "$(jfield SyncState < /tmp/rels.json)" = 6 ]' "relationship Synchronized (6)"
LAG=$(jfield MaxLagWrites < /tmp/rels.json)
check '[ -n "$LAG" ] && [ "$LAG" -gt 0 ]' "the lag bound is reported: $LAG writes"

sleep 4
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
# converged: once writes stop, the write-behind drains
wait_for 30 '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]'
check '[ "$(md5dev "$TGT" "$SMB")" = "$(md5dev "$SRC" "$SMB")" ]' "target converged to the source"
check 'io_verify "$TGT"' "the writer's data is on the target"

REL=$(jfield InstanceID < /tmp/rels.json)
run lr detach "$REL"
check '[ $? -eq 0 ]' "detach exits 0"
check 'shim_table src | grep -q " linear "' "the source is back on linear"
check '! dmsetup info lio-replica-v1-meta0-src >/dev/null 2>&1' "metadata devices removed"
initiator_logout "$IQN"
