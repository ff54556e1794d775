#!/bin/sh
# The target's side of the Vagrant suite's systemd checks (scripts/vagrant-test runs the
# phases around a reboot, a hard power-off and a package upgrade of the target VM). Runs on
# the target as root against the packaged daemon (lio-replica.service), with the initiator on
# the initiator VM.
#
#   systemd-checks.sh setup      an exported source adopted, a Sync mirror and a snapshot of
#                                it, LIO's configuration saved, the initiator logged in with
#                                automatic start-up, data written through it
#   systemd-checks.sh check      after a reboot: units, LIO, relationships, the initiator's
#                                session back by itself, its data, the snapshot's data
#   systemd-checks.sh upgrade DEB   DEB installed while the initiator writes and the mirror
#                                resyncs: no I/O error, relationships rediscovered
# Each phase prints "N passed, N failed" (lib.sh's scenario end) and exits non-zero on failure.
# shellcheck disable=SC2016 # check and wait_for take code in single quotes, evaluated later
set -u
INITIATOR="ssh:${INITIATOR_HOST:-192.168.56.11}"
PORTAL_IP="${TARGET_IP:-192.168.56.10}"
LR_SOCKET=/run/lio-replica/lio-replica.sock # the packaged daemon's (lib.sh's default is the scenarios')
export INITIATOR PORTAL_IP
# shellcheck source=SCRIPTDIR/../tests/e2e/lib.sh
. /vagrant/tests/e2e/lib.sh
IQN=iqn.2003-01.org.linux-iscsi.vagrant:systemd
NOTES=/root/systemd-checks.notes
SRC=$(by_serial lr-disk0) TGT=$(by_serial lr-disk1) SNAP=$(by_serial lr-disk2)
MB=32 # the part of the source the checks compare

rels() { lr --json relationships > /tmp/rels.json; }
rel_state() { # INSTANCE_ID: its SyncState
  awk -v id="\"$1\"" '$1 == "\"InstanceID\":" {cur = $2; sub(",", "", cur)}
    $1 == "\"SyncState\":" && cur == id {s = $2; sub(",", "", s); print s}' /tmp/rels.json
}
synced() { rels; [ "$(rel_state src/tgt)" = 6 ]; }
units_ok() {
  for u in lio-replica-restore.service rtslib-fb-targetctl.service lio-replica.service; do
    [ "$(systemctl show -p Result --value "$u")" = success ] || return 1
  done
  systemctl is-active --quiet lio-replica.service
}

case ${1:-} in
  setup)
    systemctl start lio-replica.service
    wait_for 60 'lr jobs > /dev/null 2>&1'
    check 'lr jobs > /dev/null' "the packaged daemon answers"
    fill_random "$SRC" "$MB"
    lio_iblock src "$SRC" 5e2e0000-0000-4000-8000-0000000000a1 > /dev/null
    lio_iblock tgt "$TGT" > /dev/null
    lio_iblock snap "$SNAP" > /dev/null
    lio_export src "$IQN"
    # a target reboot under TCG takes minutes: the initiator queues I/O meanwhile
    on_initiator "iscsiadm -m discovery -t sendtargets -p $PORTAL > /dev/null &&
      iscsiadm -m node -T $IQN -p $PORTAL -o update -n node.startup -v automatic &&
      iscsiadm -m node -T $IQN -p $PORTAL -o update -n node.session.timeo.replacement_timeout -v 900"
    SD=$(initiator_login "$IQN") || exit 1
    run lr attach block/src block/tgt --copy-type sync --wait > /dev/null
    check '[ $? -eq 0 ]' "Sync mirror of the exported source in sync"
    run lr attach block/src block/snap --copy-type unsyncassoc > /dev/null
    check '[ $? -eq 0 ]' "snapshot of it taken"
    H_SNAP=$(lun_md5 "$SD" "$MB")
    lun_fill "$SD" 8 4
    H_LUN=$(lun_md5 "$SD" "$MB")
    check '[ "$H_LUN" != "$H_SNAP" ]' "the initiator changed the source after the snapshot"
    run targetctl save
    check '[ $? -eq 0 ]' "LIO's configuration saved"
    printf 'H_SNAP=%s\nH_LUN=%s\nSERIAL=%s\n' "$H_SNAP" "$H_LUN" "$(vpd_serial "$SD")" > "$NOTES"
    sync
    ;;
  check)
    # shellcheck disable=SC1090 # written by setup
    . "$NOTES"
    wait_for 300 units_ok
    check units_ok "restore-devices, LIO's restore and the daemon ran in order and succeeded"
    check '[ "$(systemctl show -p ActiveEnterTimestampMonotonic --value rtslib-fb-targetctl.service)" -ge "$(systemctl show -p ActiveEnterTimestampMonotonic --value lio-replica-restore.service)" ]' \
      "the devices came back before LIO's configuration"
    check 'dmsetup table lio-replica-v1-so-src | grep -q .' "the source's stack is back: $(dmsetup table lio-replica-v1-so-src)"
    rels
    cat /tmp/rels.json >&9
    check '[ -n "$(rel_state src/tgt)" ] && [ -n "$(rel_state src/snap)" ]' "both relationships are back"
    wait_for 600 synced
    check synced "the Sync mirror is Synchronized again"
    # the initiator's session comes back by itself, on the same SCSI disk
    wait_for 300 'on_initiator "iscsiadm -m session -P 1 2>/dev/null | grep -q \"iSCSI Session State: LOGGED_IN\""'
    SD=$(initiator_dev "$IQN")
    check '[ -n "$SD" ]' "the initiator is logged in again: $SD"
    check '[ "$(lun_md5 "$SD" "$MB")" = "$H_LUN" ]' "the initiator reads its data"
    check '[ "$(vpd_serial "$SD")" = "$SERIAL" ]' "the LUN has its serial"
    check '[ "$(md5dev "$TGT" "$MB")" = "$H_LUN" ]' "the mirror's target holds it"
    check '[ "$(md5dev /dev/mapper/lio-replica-v1-so-snap "$MB")" = "$H_SNAP" ]' "the snapshot keeps its moment"
    ;;
  upgrade)
    DEB=${2:?upgrade takes the package}
    SD=$(initiator_dev "$IQN")
    OLD=$(systemctl show -p MainPID --value lio-replica.service)
    io_start "$SD"
    # a mirror resyncing through the upgrade: Fracture, then Resync (a full copy here)
    run lr fracture src/tgt > /dev/null
    run lr resync src/tgt > /dev/null
    check '[ $? -eq 0 ]' "resync started"
    rels
    check '[ "$(rel_state src/tgt)" != 6 ]' "the mirror is resynchronising ($(rel_state src/tgt))"
    run dpkg -i "$DEB"
    check '[ $? -eq 0 ]' "the newer package installs: $(dpkg-query -W -f='${Version}' lio-replica)"
    wait_for 60 'lr jobs > /dev/null 2>&1'
    NEW=$(systemctl show -p MainPID --value lio-replica.service)
    check '[ "$NEW" != "$OLD" ] && [ "$NEW" != 0 ]' "the daemon was restarted ($OLD -> $NEW)"
    rels
    check '[ -n "$(rel_state src/tgt)" ] && [ -n "$(rel_state src/snap)" ]' "the restarted daemon finds both relationships"
    wait_for 600 synced
    check synced "the mirror finished its resync"
    io_stop
    check '[ "$(io_iterations)" -gt 0 ] && [ "$(io_errors)" -eq 0 ]' "the initiator wrote throughout with no I/O error ($(io_iterations) writes)"
    check 'io_verify_lun "$SD"' "its data reads back through the LUN"
    check 'io_verify "$TGT"' "and is on the mirror's target"
    ;;
  *)
    echo "usage: $0 setup|check|upgrade DEB" >&2
    exit 2
    ;;
esac
