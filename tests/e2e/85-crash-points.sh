#!/bin/sh
# The daemon dies (abort, via LIO_REPLICA_CRASH_AFTER) right after a step of an adoption or of
# an AttachReplica while the initiator writes. After a restart the change is either complete
# (adoption) or fully rolled back (attach), the LUN serves with its identity and the writer
# sees no I/O error, and nothing is left half-built.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:crash
SRC=$(disk 0)
TGT=$(disk 1)
lio_iblock src "$SRC" 5e2e0000-0000-4000-8000-0000000000c1 > /dev/null
lio_iblock tgt "$TGT" > /dev/null
lio_export src "$IQN"
start_iscsid
SD=$(initiator_login "$IQN")
V=$(vpd_serial "$SD")
io_start "$SD"

# crash POINT COMMAND...: start the daemon set to abort after POINT, run the command (which
# loses its daemon), restart the daemon normally
crash() {
  _point=$1
  shift
  export LIO_REPLICA_CRASH_AFTER="$_point"
  daemon_start
  unset LIO_REPLICA_CRASH_AFTER
  lr "$@" > /tmp/crash.out 2>&1
  log "'lr $*' with a crash after '$_point': exit $? ($(tail -n 1 /tmp/crash.out))"
  wait_for 10 '! _e2e_alive "$(daemon_pid)"'
  check '! _e2e_alive "$(daemon_pid)"' "daemon died after '$_point'"
  rm -f "$E2E_STATE/daemon.pid"
  daemon_start
}

# settled: the LUN's backstore enabled and exported as before, TPG enabled, no relationship,
# no device of ours but linear shims, none suspended, writes flowing without error
settled() {
  _what=$1
  check '[ "$(cat "$LIO_ROOT/iscsi/$IQN/tpgt_1/enable")" = 1 ]' "$_what: TPG enabled"
  check '[ -L "$LIO_ROOT/iscsi/$IQN/tpgt_1/lun/lun_0/lnk_src" ]' "$_what: LUN 0 links src"
  check '[ "$(cat "$(lio_so src)/enable")" = 1 ]' "$_what: backstore enabled"
  check '! lr --json relationships | grep -q InstanceID' "$_what: no relationship"
  check '[ -z "$(dmsetup table | grep lio-replica-v1- | grep -v " linear ")" ]' "$_what: only linear shims left: $(dmsetup table | tr '\n' ';')"
  check '! dmsetup info | grep -q SUSPENDED' "$_what: no device suspended"
  _n=$(io_iterations)
  wait_for 150 '[ "$(io_iterations)" -gt $((_n + 3)) ]'
  check '[ "$(io_iterations)" -gt $((_n + 3)) ]' "$_what: the initiator writes again"
  check '[ "$(io_errors)" -eq 0 ]' "$_what: no I/O error at the initiator"
  check '[ "$(vpd_serial "$SD")" = "$V" ]' "$_what: same identity at the initiator"
}

crash "delete storage object" adopt block/src
settled "adoption, crash after deleting the backstore"
run lr adopt block/src
check '[ $? -eq 0 ]' "adoption completes (or was completed by the recovery)"

crash "create storage object" attach block/src block/tgt --copy-type sync
settled "attach sync, crash after re-creating a backstore"

crash "load mirror" attach block/src block/tgt --copy-type sync
settled "attach sync, crash after loading the mirror"

crash "load snapshot on" attach block/src block/tgt --copy-type unsyncassoc
settled "attach snapshot, crash with the source suspended"

# and afterwards everything still works
run lr attach block/src block/tgt --copy-type sync --wait
check '[ $? -eq 0 ]' "a sync attach after the crashes completes"
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator in the whole scenario"
check '[ "$(md5dev "$TGT" 64)" = "$(md5dev "$SRC" 64)" ]' "target leg == source leg"
initiator_logout "$IQN"
