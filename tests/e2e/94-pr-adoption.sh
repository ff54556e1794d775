#!/bin/sh
# SCSI persistent reservations and ALUA groups across adoption. Adoption re-creates the
# backstore, which would silently drop them: with the initiator registered and holding a
# reservation (sg_persist), adoption and AttachReplica are refused with 6 and a reason naming
# them, and the initiator reads the same key and reservation afterwards; so with a target port
# group of the object's own. Released, the adoption goes through.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:pr
# LIO writes a PR state file under its dbroot (/etc/target) at every PROUT and answers "not
# ready" when it cannot; a target host has that directory, this VM makes it
mkdir -p /etc/target/pr
SO=$(lio_iblock src "$(disk 0)") || exit 1
lio_iblock tgt "$(disk 1)" > /dev/null
lio_export src "$IQN"
start_iscsid
SD=$(initiator_login "$IQN") || exit 1
daemon_start || exit 1
KEY=0x5eed1234

pr() { on_initiator "sg_persist --no-inquiry $* $SD"; }
keys() { pr --in --read-keys 2>&1; }
resv() { pr --in --read-reservation 2>&1; }

# the LUN answers PR commands (right after the login it may still report "not ready")
wait_for 30 'pr --in --read-keys > /dev/null 2>&1' || fail "PERSISTENT RESERVE IN is not answered"
run pr --out --register "--param-sark=$KEY"
check '[ $? -eq 0 ]' "the initiator registers key $KEY"
run pr --out --reserve "--param-rk=$KEY" --prout-type=1
check '[ $? -eq 0 ]' "the initiator takes a Write Exclusive reservation"
KEYS=$(keys) RESV=$(resv)
log "keys: $KEYS"
log "reservation: $RESV"
log "LIO: $(cat "$SO/pr/res_pr_registered_i_pts") / $(cat "$SO/pr/res_holder")"
check 'echo "$RESV" | grep -qi "$KEY"' "the reservation is held with key $KEY"

io_start "$SD" # a writer of the reservation holder: adoption would happen under load
run lr adopt block/src > /tmp/adopt.out 2>&1
RC=$?
check '[ "$RC" -eq 6 ]' "adoption refused with 6 (exit $RC)"
check 'grep -q "persistent reservation registrations" /tmp/adopt.out && grep -q "a reservation" /tmp/adopt.out' \
  "the reason names the registrations and the reservation: $(cat /tmp/adopt.out)"
run lr attach block/src block/tgt --copy-type sync > /tmp/attach.out 2>&1
RC=$?
check '[ "$RC" -eq 6 ] && grep -q "cannot be adopted" /tmp/attach.out' "AttachReplica refused with 6 too: $(cat /tmp/attach.out)"
check '[ "$(keys)" = "$KEYS" ]' "the initiator reads the same registrations"
check '[ "$(resv)" = "$RESV" ]' "the initiator reads the same reservation"
check '! dmsetup info lio-replica-v1-so-src > /dev/null 2>&1' "no device of the daemon's was made"
io_stop
check '[ "$(io_errors)" -eq 0 ]' "the holder's writer saw no I/O error"

run pr --out --release "--param-rk=$KEY" --prout-type=1
run pr --out --register "--param-rk=$KEY" --param-sark=0
check 'keys | grep -qi "no registered reservation keys"' "released and unregistered: $(keys)"

mkdir "$SO/alua/site-a" && echo 7 > "$SO/alua/site-a/tg_pt_gp_id"
check '[ $? -eq 0 ]' "a target port group of the object's own"
run lr adopt block/src > /tmp/adopt.out 2>&1
RC=$?
check '[ "$RC" -eq 6 ] && grep -q "ALUA target port groups: site-a" /tmp/adopt.out' \
  "adoption refused naming the ALUA group: $(cat /tmp/adopt.out)"
rmdir "$SO/alua/site-a"

run lr adopt block/src
check '[ $? -eq 0 ]' "with nothing to lose the adoption goes through"
check 'shim_table src | grep -q " linear "' "the object is on the daemon's shim"
initiator_logout "$IQN"
