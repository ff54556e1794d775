#!/bin/sh
# UnSyncAssoc (CopyType 4) when a disk under a snapshot fails, with a live initiator writing
# to the source. A failing COW store breaks only its own snapshot, with the reason, while the
# source and the other snapshot go on (no I/O error). A failing source disk breaks every
# snapshot of it, with the reason; the initiator gets that disk's errors (there is no second
# copy to serve from). Detach ends a broken snapshot and leaves its target on linear.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:snapfail
MB=64
N=$((MB * 2048))

rels() { lr --json relationships > /tmp/rels.json; }
# rel_block REL: the lines of relationship REL in /tmp/rels.json
rel_block() {
  awk -v id="\"InstanceID\": \"$1\"" 'index($0, id) { p = 1; next } /"InstanceID"/ { p = 0 } p' \
    /tmp/rels.json
}
rel_field() { rel_block "$1" | jfield "$2"; }
reason_of() { rel_block "$1" | grep '"ProgressStatus"'; }
state_of() { rels; [ "$(rel_field "$1" SyncState)" = "$2" ]; }

# every disk behind a dm device of the scenario's own, to make it fail at will (dm_swap)
SRC=$(dm_part e2e-sleg "$(disk 0)" "$MB")
COW0=$(dm_part e2e-cow0 "$(disk 1)" "$MB")
COW1=$(dm_part e2e-cow1 "$(disk 2)" "$MB")
fill_random "$SRC" 24 16
serve_pair "$SRC" "$COW0" "$IQN"
lio_iblock c1 "$COW1" > /dev/null
SERIAL=$(vpd_serial "$SD")

run lr attach block/src block/tgt --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot src/tgt taken"
run lr attach block/src block/c1 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "snapshot src/c1 taken"
check 'state_of src/tgt 11 && state_of src/c1 11' "both snapshots Idle (11)"

log "--- the COW store of src/c1 fails"
IT=$(io_iterations)
dm_swap e2e-cow1 "0 $N error"
rels
cat /tmp/rels.json >&9
check '[ "$(rel_field src/c1 SyncState)" = 12 ]' "src/c1 Broken (12)"
check 'reason_of src/c1 | grep -q "the COW store.s disk ([0-9:]*) fails"' \
  "its reason names the COW store's disk: $(reason_of src/c1)"
check '[ "$(rel_field src/tgt SyncState)" = 11 ]' "the other snapshot is still Idle"
check_serving_on "$IT" "$SERIAL"
run lr detach src/c1
check '[ $? -eq 0 ]' "detach of the broken snapshot exits 0"
check 'shim_table c1 | grep -q " linear "' "its target is on linear again: $(shim_table c1)"
dm_swap e2e-cow1 "0 $N linear $(disk 2) 0"
run lr attach block/src block/c1 --copy-type unsyncassoc
check '[ $? -eq 0 ]' "a new snapshot src/c1 on the disk that is back"

log "--- the source's disk fails"
IT=$(io_iterations)
dm_swap e2e-sleg "0 $N error"
rels
cat /tmp/rels.json >&9
for r in src/tgt src/c1; do
  check '[ "$(rel_field $r SyncState)" = 12 ]' "$r Broken (12)"
  check 'reason_of $r | grep -q "the source.s disk ([0-9:]*) fails"' \
    "its reason names the source's disk: $(reason_of $r)"
done
WANT=$((IT + 4))
wait_for 60 '[ "$(io_iterations)" -ge "$WANT" ]'
check '[ "$(io_errors)" -gt 0 ]' "the initiator gets the failed disk's I/O errors ($(io_errors))"
dm_swap e2e-sleg "0 $N linear $(disk 0) 0"
sleep 2
io_stop
rels
cat /tmp/rels.json >&9
for r in tgt c1; do
  run lr detach src/$r
  check '[ $? -eq 0 ]' "detach of src/$r exits 0"
  check 'shim_table $r | grep -q " linear "' "its target is on linear again: $(shim_table $r)"
done
check '[ -z "$(lr --json relationships | grep InstanceID)" ]' "no relationship left"
initiator_logout "$IQN"
