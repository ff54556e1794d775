#!/bin/sh
# kill -9 of the daemon during a Sync resync: the LUN keeps serving without error (the kernel
# keeps the mirror), and after a restart the relationship is rediscovered with its state.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:kill
SRC=$(disk 0)
TGT=$(dm_slow e2e-slow "$(disk 1)" 20)
MB=$(($(dev_sectors "$SRC") / 2048))
fill_random "$SRC" 32 16
serve_pair "$SRC" "$TGT" "$IQN"
lr --json attach block/src block/tgt --copy-type sync > /tmp/attach.json
JOB=$(jfield Job < /tmp/attach.json)
wait_for 60 '[ "$(lr --json job "$JOB" | jfield PercentComplete)" -gt 0 ]'
daemon_kill9
sleep 3
check '[ "$(io_errors)" -eq 0 ]' "the LUN serves without error while the daemon is dead"
check 'real_table src | grep -q " mirror "' "the kernel keeps the mirror"
daemon_start
lr --json relationships > /tmp/rels.json
cat /tmp/rels.json >&9
check '[ "$(jfield CopyType < /tmp/rels.json)" = 3 ]' "relationship rediscovered with CopyType 3"
check '[ "$(jfield InstanceID < /tmp/rels.json)" = src/tgt ]' "rediscovered as src/tgt"
ST=$(jfield SyncState < /tmp/rels.json)
check '[ "$ST" = 5 ] || [ "$ST" = 6 ]' "state ResyncInProgress or Synchronized ($ST)"
wait_for 300 '[ "$(lr --json relationships | jfield SyncState)" = 6 ]'
check '[ "$(lr --json relationships | jfield SyncState)" = 6 ]' "reaches Synchronized after the restart"
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
check '[ "$(md5dev "$TGT" "$MB")" = "$(md5dev "$SRC" "$MB")" ]' "target leg == source leg"
initiator_logout "$IQN"
