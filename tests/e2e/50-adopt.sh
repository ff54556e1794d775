#!/bin/sh
# Adoption of a backstore made the plain way on a raw disk, exported and in use: no I/O error
# at the initiator, the LUN's identity (unit serial seen by the initiator, LUN number,
# configfs serial) unchanged, and the backstore now on a device-mapper device.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

IQN=iqn.2003-01.org.linux-iscsi.e2e:adopt
SERIAL=5e2e0000-0000-4000-8000-0000000000ad
SRC=$(disk 0)
lio_iblock src "$SRC" "$SERIAL" > /dev/null
lio_export src "$IQN"
start_iscsid
SD=$(initiator_login "$IQN")
V80=$(vpd_serial "$SD")
log "initiator sees: $V80"
check '[ -n "$V80" ]' "the initiator sees the LUN's identity: $V80"
daemon_start
io_start "$SD"
sleep 2
dump_state /tmp/before
run lr adopt block/src
check '[ $? -eq 0 ]' "adopt exits 0"
sleep 4
io_stop
check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator across the adoption"
check 'io_verify_lun "$SD"' "the writer's data reads back through the LUN"
check 'io_verify "$SRC"' "the writer's data is on the raw disk"
check '[ "$(vpd_serial "$SD")" = "$V80" ]' "the initiator sees the same unit serial"
check 'grep -q "$SERIAL" "$(lio_so src)/wwn/vpd_unit_serial"' "configfs keeps the serial"
check '[ -L "$LIO_ROOT/iscsi/$IQN/tpgt_1/lun/lun_0/lnk_src" ]' "LUN 0 and its link name kept"
check '[ "$(cat "$LIO_ROOT/iscsi/$IQN/tpgt_1/enable")" = 1 ]' "TPG enabled again"
check 'shim_table src | grep -q " linear "' "backstore served by the daemon's linear device"
lr --json storage-objects > /tmp/so.json
check 'grep -q "\"Adopted\": true" /tmp/so.json' "storage-objects reports it adopted"
dump_state /tmp/after
run lr adopt block/src
check '[ $? -eq 0 ]' "adopting again is a no-op that succeeds"
dump_state /tmp/after2
check 'cmp -s /tmp/after /tmp/after2' "nothing changed the second time"
initiator_logout "$IQN"
