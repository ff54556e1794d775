# shellcheck shell=sh
# shellcheck disable=SC2016 # check and wait_for take code in single quotes, evaluated later
# shellcheck disable=SC2317 # a library: its functions are called by the scenarios
# Helpers for the end-to-end scenarios (POSIX sh: the test VM runs busybox sh).
# A scenario sources this file:   . "$(dirname "$0")/lib.sh"
# See README.md beside this file for the scenario contract.
#
# Messages go to the stderr the scenario had when it sourced this file (fd 9), so helpers that
# print a result on stdout (lio_iblock, initiator_login, md5dev, ...) can be used in $(...).
# Helpers keep their locals in _e2e_* variables (POSIX sh has no `local`).
#
# Environment (all optional):
#   E2E_DISKS      the scratch disks a scenario may use, space-separated (the test VM's
#                  disks with serials lr-disk0 ... lr-disk5, which are /dev/vda ... /dev/vdf
#                  unless a reboot scenario's later boot reorders them, and lr-disk6 when
#                  the VM has a seventh disk); see `disk N`
#   LIO_BOOT       which boot of a reboot scenario this is (1, 2, ...; set by the VM's init)
#   INITIATOR      local (default: open-iscsi in this machine, via PORTAL_IP) or ssh:[USER@]HOST
#                  (initiator commands run there through ssh; set PORTAL_IP to this target's
#                  address on the network between the two; E2E_SSH_OPTS adds ssh options)
#   PORTAL_IP      portal address the targets listen on and the initiator logs in to (127.0.0.1)
#   PORTAL_PORT    3260
#   LIO_ROOT       LIO's configfs directory (/sys/kernel/config/target)
#   LR_SOCKET      the daemon's API socket (/run/lio-replica.sock)
#   LR_LOG         the daemon's log (/tmp/daemon.log)
#   IO_SLOTS, IO_OFFSET_MB   the background writer's area: IO_SLOTS (8) slots of 1 MiB from
#                  IO_OFFSET_MB (0)

# by_serial SERIAL: the /dev/vdX whose virtio serial is SERIAL; 1 if none
by_serial() {
  for _e2e_s in /sys/block/vd*/serial; do
    if [ ! -r "$_e2e_s" ] || [ "$(cat "$_e2e_s")" != "$1" ]; then continue; fi
    _e2e_s=${_e2e_s%/serial}
    echo "/dev/${_e2e_s##*/}"
    return 0
  done
  return 1
}
if [ -z "${E2E_DISKS:-}" ]; then
  if by_serial lr-disk0 > /dev/null; then
    for _e2e_i in 0 1 2 3 4 5; do
      E2E_DISKS="${E2E_DISKS:-}${E2E_DISKS:+ }$(by_serial "lr-disk$_e2e_i")"
    done
    # the optional seventh disk (scripts/vm-test's EXTRA_DISK_MB)
    if by_serial lr-disk6 > /dev/null; then E2E_DISKS="$E2E_DISKS $(by_serial lr-disk6)"; fi
  else
    E2E_DISKS="/dev/vda /dev/vdb /dev/vdc /dev/vdd /dev/vde /dev/vdf"
  fi
fi
LIO_BOOT=${LIO_BOOT:-1}
INITIATOR=${INITIATOR:-local}
PORTAL_IP=${PORTAL_IP:-127.0.0.1}
PORTAL_PORT=${PORTAL_PORT:-3260}
PORTAL=$PORTAL_IP:$PORTAL_PORT
LIO_ROOT=${LIO_ROOT:-/sys/kernel/config/target}
LR_SOCKET=${LR_SOCKET:-/run/lio-replica.sock}
LR_LOG=${LR_LOG:-/tmp/daemon.log}
E2E_SSH_OPTS=${E2E_SSH_OPTS:--o BatchMode=yes -o StrictHostKeyChecking=accept-new}
E2E_STATE=/tmp/e2e            # this machine: failure list, daemon pid, writer script
E2E_IO_DIR=/tmp/e2e-io        # the initiator's machine: the writer's patterns and counters
export DM_DISABLE_UDEV=1      # no udev in the test VM: libdevmapper makes /dev/mapper nodes
export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$E2E_STATE"
# LIO creates a fabric's configfs directory on first use; make iscsi/ exist from the start (as
# targetcli does) so that dump_state before and after a scenario's work compare equal
[ ! -d "$LIO_ROOT" ] || mkdir -p "$LIO_ROOT/iscsi"
: > "$E2E_STATE/fails"
: > "$E2E_STATE/passes"
exec 9>&2

# ---------------------------------------------------------------- reporting

# log MSG...: timestamped message
log() { echo "e2e[$(cut -d' ' -f1 /proc/uptime)] $*" >&9; }

# pass MSG...: record a passed check
pass() { echo "$*" >> "$E2E_STATE/passes"; log "PASS: $*"; }

# fail MSG...: record a failed check; the scenario then exits non-zero (even if fail ran in a
# subshell). The host reports the last fail message as the scenario's reason.
fail() { echo "$*" >> "$E2E_STATE/fails"; log "FAIL: $*"; }

# failures: number of failed checks so far
failures() { wc -l < "$E2E_STATE/fails" | tr -d ' '; }

# check 'COMMAND' MSG...: eval COMMAND; pass MSG if it succeeds, fail MSG (and return 1)
# otherwise. COMMAND sees the caller's last exit status as $? (check '[ $? -eq 0 ]' right
# after a command).
# (COMMAND is evaluated inside check: use variables in it, not the caller's $1, $2, ...)
check() {
  _e2e_st=$?
  _e2e_cmd=$1
  shift
  _e2e_own_params check "$_e2e_cmd" || return 1
  if (exit "$_e2e_st"); eval "$_e2e_cmd"; then pass "$*"; else fail "$* [failed: $_e2e_cmd]"; return 1; fi
}

# A command for check/wait_for that uses $1, $@, ... would silently see the helper's own
# parameters, not the caller's: refuse it with a clear failure instead (\$1 is fine).
_e2e_own_params() { # WHO COMMAND
  case $(printf '%s' "$2" | sed 's/\\\$//g') in
    *'$'[1-9@*#]* | *'${'[1-9@*#]*)
      fail "$1 '$2': inside $1, \$1 \$2 ... \$@ are $1's own arguments; copy the value to a variable first"
      return 1 ;;
  esac
}

# run CMD ARG...: log the command, run it, log a non-zero status; returns its status
run() {
  log "\$ $*"
  "$@"
  _e2e_rc=$?
  [ "$_e2e_rc" -eq 0 ] || log "  -> exit $_e2e_rc"
  return "$_e2e_rc"
}

# wait_for SECONDS 'COMMAND': eval COMMAND every 0.2 s until it succeeds; 1 on timeout
# (same rule as check: no positional parameters in COMMAND)
wait_for() {
  _e2e_own_params wait_for "$2" || return 1
  _e2e_wf_n=$(($1 * 5))
  while ! eval "$2"; do
    _e2e_wf_n=$((_e2e_wf_n - 1))
    [ "$_e2e_wf_n" -gt 0 ] || return 1
    sleep 0.2
  done
}

_e2e_exit() {
  _e2e_rc=$?
  if [ "$_e2e_rc" -eq 0 ] && [ "$(failures)" -gt 0 ]; then _e2e_rc=1; fi
  log "scenario end: $(wc -l < "$E2E_STATE/passes" | tr -d ' ') passed, $(failures) failed, exit $_e2e_rc"
  exit "$_e2e_rc"
}
trap _e2e_exit EXIT

# persist_mount DISK DIR: the state disk of a reboot scenario, a journalled ext4 (made at boot
# 1; it has to survive a power cut with the daemon's files open), mounted on DIR
persist_mount() {
  if [ "$LIO_BOOT" = 1 ]; then
    run mkfs.ext4 -q -F "$1" || { fail "mkfs.ext4 $1"; return 1; }
  fi
  mkdir -p "$2"
  run mount -t ext4 "$1" "$2" || { fail "cannot mount the state disk"; return 1; }
}

# persist_umount DIR: at the end, nothing of ours holds a file there any more
persist_umount() {
  _e2e_dir=$1
  check 'umount "$_e2e_dir"' "the state disk unmounts: nothing holds a file on it"
}

# power_cut: end this boot of a rebooting scenario as a power failure would, with no shutdown:
# the VM stops at once (the host's isa-debug-exit port, as scripts/vm/init ends a boot), so
# nothing is flushed and md cannot mark its arrays clean (its reboot notifier would on a
# poweroff). The scenario's result so far is reported as scripts/vm/init reports it.
power_cut() {
  _e2e_rc=0
  [ "$(failures)" -eq 0 ] || _e2e_rc=1
  log "scenario end: $(wc -l < "$E2E_STATE/passes" | tr -d ' ') passed, $(failures) failed, power cut"
  echo "e2e-init: EXIT rc=$_e2e_rc uptime=$(cut -d' ' -f1 /proc/uptime)s"
  # shellcheck disable=SC2059 # the format is the octal escape of the status byte
  printf "\\$(printf %03o "$_e2e_rc")" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
  sleep 60
}

# ---------------------------------------------------------------- block devices

# disk N: the Nth scratch disk (0-based) of $E2E_DISKS, e.g. SRC=$(disk 0)
disk() {
  # shellcheck disable=SC2086 # E2E_DISKS is a list
  _e2e_d=$(echo $E2E_DISKS | awk -v n="$1" '{print $(n + 1)}')
  [ -n "$_e2e_d" ] || { fail "disk $1: E2E_DISKS has no such disk ($E2E_DISKS)"; return 1; }
  echo "$_e2e_d"
}

# md5dev DEV [MiB]: md5 of DEV (or of its first MiB), read with O_DIRECT (device-mapper writes
# do not refresh the page cache of the devices underneath)
md5dev() {
  if [ -n "${2:-}" ]; then
    dd if="$1" bs=1M count="$2" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
  else
    dd if="$1" bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
  fi
}

# fill_random DEV MiB [SEEK_MiB]: write MiB of random data (O_DIRECT) at SEEK_MiB (0)
fill_random() {
  dd if=/dev/urandom of="$1" bs=1M count="$2" seek="${3:-0}" oflag=direct conv=notrunc 2>/dev/null ||
    { fail "fill_random $*: dd failed"; return 1; }
}

# lun_fill DEV MiB [SEEK_MiB] and lun_md5 DEV [MiB]: fill_random and md5dev on the initiator's
# side, for the device a login gave (on another host under INITIATOR=ssh:HOST)
lun_fill() {
  # (a disk that went away must not become a regular file in /dev)
  on_initiator "[ -b $1 ] && dd if=/dev/urandom of=$1 bs=1M count=$2 seek=${3:-0} oflag=direct conv=notrunc 2>/dev/null" ||
    { fail "lun_fill $*: dd failed"; return 1; }
}
lun_md5() {
  on_initiator "dd if=$1 bs=1M ${2:+count=$2} iflag=direct 2>/dev/null | md5sum" | cut -d' ' -f1
}

# dev_sectors DEV: size in 512-byte sectors (what a dm table wants)
dev_sectors() { blockdev --getsz "$1"; }

# ---------------------------------------------------------------- LIO (configfs only)

# lio_so NAME: configfs directory of the storage object NAME (any plugin); 1 if none
lio_so() {
  for _e2e_so in "$LIO_ROOT"/core/*/"$1"; do
    [ -d "$_e2e_so" ] && echo "$_e2e_so" && return 0
  done
  return 1
}

# lio_iblock NAME DEV [SERIAL]: create block backstore NAME on DEV in a free core/iblock_N, the
# way targetcli does (control udev_path, udev_path, enable, then the unit serial); prints its
# configfs directory
lio_iblock() {
  _e2e_n=0
  while [ -e "$LIO_ROOT/core/iblock_$_e2e_n" ]; do _e2e_n=$((_e2e_n + 1)); done
  _e2e_so=$LIO_ROOT/core/iblock_$_e2e_n/$1
  if ! { mkdir -p "$_e2e_so" &&
         echo "udev_path=$2" > "$_e2e_so/control" &&
         echo "$2" > "$_e2e_so/udev_path" &&
         echo 1 > "$_e2e_so/enable"; }; then
    fail "lio_iblock $1 $2: configfs refused"
    return 1
  fi
  if [ -n "${3:-}" ] && ! echo "$3" > "$_e2e_so/wwn/vpd_unit_serial"; then
    fail "lio_iblock $1: cannot set serial $3"
    return 1
  fi
  echo "$_e2e_so"
}

# lio_delete NAME: remove storage object NAME (and its hba directory when that is empty)
lio_delete() {
  _e2e_so=$(lio_so "$1") || { fail "lio_delete: no storage object $1"; return 1; }
  rmdir "$_e2e_so" || { fail "lio_delete $1: rmdir refused"; return 1; }
  rmdir "$(dirname "$_e2e_so")" 2>/dev/null
  return 0
}

# lio_tpg IQN: target IQN's tpgt_1 with portal $PORTAL in demo mode (no ACLs, no
# authentication, writable), not enabled, no LUN; prints its directory
lio_tpg() {
  _e2e_tpg=$LIO_ROOT/iscsi/$1/tpgt_1
  if ! { mkdir -p "$_e2e_tpg" &&
         { [ -d "$_e2e_tpg/np/$PORTAL" ] || mkdir "$_e2e_tpg/np/$PORTAL"; } &&
         echo 0 > "$_e2e_tpg/attrib/authentication" &&
         echo 1 > "$_e2e_tpg/attrib/generate_node_acls" &&
         echo 0 > "$_e2e_tpg/attrib/demo_mode_write_protect" &&
         echo 1 > "$_e2e_tpg/attrib/cache_dynamic_acls"; }; then
    fail "lio_tpg $1: configfs refused"
    return 1
  fi
  echo "$_e2e_tpg"
}

# lio_export NAME IQN [LUN]: export storage object NAME as LUN (0) of target IQN (lio_tpg),
# and enable the TPG
lio_export() {
  _e2e_so=$(lio_so "$1") || { fail "lio_export: no storage object $1"; return 1; }
  _e2e_tpg=$(lio_tpg "$2") || return 1
  _e2e_lun=$_e2e_tpg/lun/lun_${3:-0}
  if ! { mkdir -p "$_e2e_lun" &&
         ln -s "$_e2e_so" "$_e2e_lun/lnk_$1" &&
         echo 1 > "$_e2e_tpg/enable"; }; then
    fail "lio_export $1 $2: configfs refused"
    return 1
  fi
}

# lio_unexport IQN: remove target IQN (TPGs, LUNs, mapped LUNs, ACLs, portals); the storage
# objects stay
lio_unexport() {
  _e2e_t=$LIO_ROOT/iscsi/$1
  [ -d "$_e2e_t" ] || { fail "lio_unexport: no target $1"; return 1; }
  for _e2e_tpg in "$_e2e_t"/tpgt_*; do
    [ -d "$_e2e_tpg" ] || continue
    echo 0 > "$_e2e_tpg/enable" 2>/dev/null
    for _e2e_d in "$_e2e_tpg"/acls/*/lun_* "$_e2e_tpg"/lun/lun_*; do
      [ -d "$_e2e_d" ] || continue
      for _e2e_l in "$_e2e_d"/*; do [ ! -L "$_e2e_l" ] || rm "$_e2e_l"; done
      rmdir "$_e2e_d"
    done
    for _e2e_d in "$_e2e_tpg"/acls/* "$_e2e_tpg"/np/*; do [ ! -d "$_e2e_d" ] || rmdir "$_e2e_d"; done
    rmdir "$_e2e_tpg"
  done
  rmdir "$_e2e_t" || { fail "lio_unexport $1: rmdir refused"; return 1; }
}

# dump_state FILE: sorted dump of the LIO configfs tree (directories, symlink targets, the
# enable / udev_path / unit serial values) and of `dmsetup table` and `dmsetup ls`, for
# before/after comparisons (`cmp`, `diff`)
dump_state() {
  {
    echo "## configfs $LIO_ROOT"
    (cd "$LIO_ROOT" && find .) | LC_ALL=C sort | while IFS= read -r _e2e_p; do
      _e2e_f=$LIO_ROOT/${_e2e_p#./}
      if [ -L "$_e2e_f" ]; then
        echo "l $_e2e_p -> $(readlink "$_e2e_f")"
      elif [ -d "$_e2e_f" ]; then
        echo "d $_e2e_p"
      else
        case $_e2e_p in
          */enable | */udev_path | */vpd_unit_serial) echo "f $_e2e_p = $(cat "$_e2e_f" 2>/dev/null)" ;;
        esac
      fi
    done
    echo "## dmsetup table"
    dmsetup table 2>&1 | LC_ALL=C sort
    echo "## dmsetup ls"
    dmsetup ls 2>&1 | LC_ALL=C sort
  } > "$1"
}

# ---------------------------------------------------------------- initiator

# on_initiator 'COMMAND': run a shell command where the initiator is (see INITIATOR)
on_initiator() {
  case $INITIATOR in
    local) sh -c "$1" ;;
    ssh:*)
      # shellcheck disable=SC2086,SC2029 # a list of options; the command is built here
      ssh $E2E_SSH_OPTS "${INITIATOR#ssh:}" "$1" ;;
    *) fail "unknown INITIATOR=$INITIATOR"; return 2 ;;
  esac
}

# start_iscsid: start the initiator daemon (in its own session: on shutdown iscsid signals its
# whole process group, which would otherwise include this scenario)
start_iscsid() {
  case $INITIATOR in
    local)
      if ! pidof iscsid >/dev/null; then
        setsid iscsid -f > /tmp/iscsid.log 2>&1 < /dev/null &
      fi
      wait_for 10 'pidof iscsid >/dev/null' || { fail "iscsid did not start"; return 1; }
      sleep 0.5 ;;
    *)
      on_initiator 'systemctl start iscsid 2>/dev/null || pidof iscsid >/dev/null ||
        { setsid iscsid < /dev/null > /dev/null 2>&1 & }' ;;
  esac
}

# initiator_dev IQN: the /dev/sdX of the (first) LUN of the session to IQN; 1 if none yet
initiator_dev() {
  _e2e_sd=$(on_initiator 'iscsiadm -m session -P 3 2>/dev/null' |
    awk -v t="$1" '$1 == "Target:" {cur = $2} /Attached scsi disk/ && cur == t {print $4; exit}')
  [ -n "$_e2e_sd" ] && on_initiator "test -b /dev/$_e2e_sd" && echo "/dev/$_e2e_sd"
}

# initiator_login IQN: discover $PORTAL, log in to IQN, wait for its disk; prints /dev/sdX
initiator_login() {
  on_initiator "iscsiadm -m discovery -t sendtargets -p $PORTAL >/dev/null" ||
    { fail "iSCSI discovery on $PORTAL failed"; return 1; }
  on_initiator "iscsiadm -m node -T $1 -p $PORTAL --login >/dev/null" ||
    { fail "iSCSI login to $1 failed"; return 1; }
  _e2e_iqn=$1   # (wait_for evals its command with its own positional parameters)
  wait_for 30 'initiator_dev "$_e2e_iqn" >/dev/null' || { fail "no disk appeared for $1"; return 1; }
  initiator_dev "$1"
}

# initiator_logout IQN: log out of IQN and forget its node record
initiator_logout() {
  on_initiator "iscsiadm -m node -T $1 -p $PORTAL --logout >/dev/null" ||
    { fail "iSCSI logout from $1 failed"; return 1; }
  on_initiator "iscsiadm -m node -T $1 -p $PORTAL -o delete >/dev/null 2>&1"
  return 0
}

# ---------------------------------------------------------------- checksummed background I/O

# The writer runs where the initiator is. It fills IO_SLOTS slots of 1 MiB (from IO_OFFSET_MB)
# with per-slot random patterns, then rewrites slot after slot with O_DIRECT and reads each
# write back (O_DIRECT), comparing md5s; every failed write, failed read or mismatch is one line
# in $E2E_IO_DIR/errors.
_e2e_writer() {
  cat <<'EOF'
d=$1 dev=$2 slots=$3 off=$4
rm -rf "$d"; mkdir -p "$d"; : > "$d/errors"
k=0
while [ $k -lt "$slots" ]; do
  dd if=/dev/urandom of="$d/p$k" bs=1M count=1 2>/dev/null
  echo "$k $(md5sum < "$d/p$k" | cut -d' ' -f1)"
  k=$((k + 1))
done > "$d/md5s"
echo 0 > "$d/iter"
echo $$ > "$d/ready"
i=0
while [ ! -e "$d/stop" ]; do
  k=$((i % slots))
  want=$(sed -n "s/^$k //p" "$d/md5s")
  if ! dd if="$d/p$k" of="$dev" bs=1M seek=$((off + k)) count=1 oflag=direct conv=notrunc 2>"$d/err"; then
    echo "iteration $i: write of slot $k failed: $(tail -n 1 "$d/err")" >> "$d/errors"
  else
    got=$(dd if="$dev" bs=1M skip=$((off + k)) count=1 iflag=direct 2>"$d/err" | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] ||
      echo "iteration $i: slot $k reads back $got, wrote $want $(tail -n 1 "$d/err")" >> "$d/errors"
  fi
  i=$((i + 1))
  echo $i > "$d/iter"
done
echo $i > "$d/done"
EOF
}

# io_start DEV: start the background writer on DEV (a device of the initiator)
io_start() {
  [ -z "${_e2e_io_pid:-}" ] || { fail "io_start: a writer is already running"; return 1; }
  _e2e_writer > "$E2E_STATE/writer.sh"
  # the last writer's files go first: its `ready` must not pass for this one's (an io_stop
  # right after would touch `stop` in a directory the new writer is about to remove)
  on_initiator "rm -rf $E2E_IO_DIR"
  case $INITIATOR in
    local) sh "$E2E_STATE/writer.sh" "$E2E_IO_DIR" "$1" "${IO_SLOTS:-8}" "${IO_OFFSET_MB:-0}" & ;;
    *)
      # shellcheck disable=SC2086 # E2E_SSH_OPTS is a list of options
      ssh $E2E_SSH_OPTS "${INITIATOR#ssh:}" sh -s -- "$E2E_IO_DIR" "$1" "${IO_SLOTS:-8}" \
        "${IO_OFFSET_MB:-0}" < "$E2E_STATE/writer.sh" & ;;
  esac
  _e2e_io_pid=$!
  wait_for 60 'on_initiator "test -s $E2E_IO_DIR/ready"' || { fail "io_start: writer did not start"; return 1; }
  log "io: writer started on $1 ($INITIATOR)"
}

# io_iterations: writes done so far by the writer
io_iterations() { on_initiator "cat $E2E_IO_DIR/iter 2>/dev/null || echo 0"; }

# io_errors: number of write/read/verify errors the writer recorded
io_errors() { on_initiator "cat $E2E_IO_DIR/errors 2>/dev/null | wc -l" | tr -d ' '; }

# io_error_lines: what the writer recorded, a line per error
io_error_lines() { on_initiator "cat $E2E_IO_DIR/errors 2>/dev/null"; }

# io_stop: stop the writer and wait for it; logs its iteration and error counts
io_stop() {
  [ -n "${_e2e_io_pid:-}" ] || { fail "io_stop: no writer running"; return 1; }
  on_initiator "touch $E2E_IO_DIR/stop"
  wait "$_e2e_io_pid"
  _e2e_io_pid=
  log "io: writer stopped after $(io_iterations) writes, $(io_errors) error(s)"
  on_initiator "head -n 5 $E2E_IO_DIR/errors" | while IFS= read -r _e2e_l; do log "io: $_e2e_l"; done
}

# check_serving_on IT SERIAL: after a disk failure at writer iteration IT, the LUN keeps being
# served: the writer gets 16 more writes done, with no I/O error, and the LUN keeps SERIAL
check_serving_on() {
  _e2e_want=$(($1 + 16)) _e2e_it=$1 _e2e_serial=$2
  wait_for 60 '[ "$(io_iterations)" -ge "$_e2e_want" ]'
  check '[ "$(io_iterations)" -ge "$_e2e_want" ]' "the initiator keeps writing after the failure ($_e2e_it -> $(io_iterations) writes)"
  check '[ "$(io_errors)" -eq 0 ]' "no I/O error at the initiator"
  check '[ "$(vpd_serial "$SD")" = "$_e2e_serial" ]' "the LUN keeps its serial"
}

# io_verify DEV: 0 if every writer slot of DEV (a device of this machine, e.g. a replica leg)
# holds the writer's pattern; logs each mismatching slot
io_verify() {
  _e2e_bad=0
  on_initiator "cat $E2E_IO_DIR/md5s" > "$E2E_STATE/md5s" || { fail "io_verify: no writer patterns"; return 1; }
  while read -r _e2e_k _e2e_want; do
    _e2e_got=$(dd if="$1" bs=1M skip=$((${IO_OFFSET_MB:-0} + _e2e_k)) count=1 iflag=direct 2>/dev/null |
      md5sum | cut -d' ' -f1)
    if [ "$_e2e_got" != "$_e2e_want" ]; then
      log "io_verify $1: slot $_e2e_k has $_e2e_got, want $_e2e_want"
      _e2e_bad=$((_e2e_bad + 1))
    fi
  done < "$E2E_STATE/md5s"
  [ "$_e2e_bad" -eq 0 ]
}

# io_verify_lun DEV: io_verify for DEV, a device of the initiator (the LUN itself), read where
# the initiator is
io_verify_lun() {
  on_initiator "while read -r k want; do
      got=\$(dd if=$1 bs=1M skip=\$((${IO_OFFSET_MB:-0} + k)) count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
      [ \"\$got\" = \"\$want\" ] || echo \"slot \$k has \$got, want \$want\"
    done < $E2E_IO_DIR/md5s" > "$E2E_STATE/io-bad" || { fail "io_verify_lun: no writer patterns"; return 1; }
  while read -r _e2e_l; do log "io_verify_lun $1: $_e2e_l"; done < "$E2E_STATE/io-bad"
  [ ! -s "$E2E_STATE/io-bad" ]
}

# ---------------------------------------------------------------- the daemon

# daemon_pid: pid of the daemon started by daemon_start
daemon_pid() { cat "$E2E_STATE/daemon.pid" 2>/dev/null; }

_e2e_alive() { # PID: running (a zombie does not count)
  [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# daemon_start [ARG...]: start `lio-replica serve --socket $LR_SOCKET --dm kernel ARG...` in its
# own session, logging to $LR_LOG, and wait (30 s) for its socket
# shellcheck disable=SC2120 # the arguments are optional
daemon_start() {
  rm -f "$LR_SOCKET" "$E2E_STATE/daemon.pid"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid sh -c 'echo $$ > "$0"; exec lio-replica "$@"' "$E2E_STATE/daemon.pid" \
    serve --socket "$LR_SOCKET" --dm kernel "$@" >> "$LR_LOG" 2>&1 < /dev/null &
  # up when the socket is there; given up on when it exited (once its pid file exists)
  if ! wait_for 30 '[ -S "$LR_SOCKET" ] || { [ -n "$(daemon_pid)" ] && ! _e2e_alive "$(daemon_pid)"; }' ||
     [ ! -S "$LR_SOCKET" ]; then
    fail "daemon did not come up (log: $(tail -n 3 "$LR_LOG" | tr '\n' ' '))"
    return 1
  fi
  # The socket is bound before the restart's recovery runs; a request is answered only after
  # it. Checks that read configfs or dm directly must not look before then.
  wait_for 60 'lr jobs > /dev/null 2>&1 || ! _e2e_alive "$(daemon_pid)"'
  log "daemon: pid $(daemon_pid), socket $LR_SOCKET"
}

_e2e_reap() { # PID: collect the exit status if the daemon is our child (never blocks: it is dead)
  wait "$1" 2>/dev/null
  rm -f "$E2E_STATE/daemon.pid"
  return 0
}

# daemon_kill9: kill the daemon with SIGKILL (a crash) and wait until it is gone
daemon_kill9() {
  _e2e_pid=$(daemon_pid)
  _e2e_alive "$_e2e_pid" || { fail "daemon_kill9: daemon is not running"; return 1; }
  kill -9 "$_e2e_pid"
  wait_for 10 '! _e2e_alive "$_e2e_pid"' || { fail "daemon_kill9: pid $_e2e_pid survived"; return 1; }
  _e2e_reap "$_e2e_pid"
  log "daemon: killed (SIGKILL)"
}

# daemon_stop: SIGTERM, wait up to 15 s, then SIGKILL (which counts as a failure)
daemon_stop() {
  _e2e_pid=$(daemon_pid)
  _e2e_alive "$_e2e_pid" || { fail "daemon_stop: daemon is not running"; return 1; }
  kill "$_e2e_pid"
  if ! wait_for 15 '! _e2e_alive "$_e2e_pid"'; then
    kill -9 "$_e2e_pid"
    fail "daemon_stop: no exit within 15 s of SIGTERM"
  fi
  _e2e_reap "$_e2e_pid"
  log "daemon: stopped"
}

# ---------------------------------------------------------------- the lio-replica CLI

# lr ARG...: the CLI, talking to the daemon started by daemon_start
lr() { lio-replica --socket "$LR_SOCKET" "$@"; }

# jfield NAME: the first value of "NAME" in the pretty JSON on stdin (quotes and comma removed)
jfield() {
  sed -n "s/^ *\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" | head -n 1
}

# shim_table NAME: the live table of the daemon's device under storage object NAME
shim_table() { dmsetup table "lio-replica-v1-so-$1" 2>/dev/null; }

# real_table NAME: the live table of the device under source NAME's snapshot-origin, where its
# mirror, raid1 or clone lives
real_table() { dmsetup table "lio-replica-v1-real-$1" 2>/dev/null; }

# vpd_serial SDDEV: the identity the initiator's disk reports: its unit serial page (0x80)
# and device identification (wwid, from page 0x83), as far as the initiator's kernel shows them
vpd_serial() {
  _e2e_sys=/sys/block/$(basename "$1")/device
  on_initiator "cat $_e2e_sys/vpd_pg80 $_e2e_sys/wwid 2>/dev/null" | tr -cd '0-9A-Za-z.:-'
}

# dm_swap NAME TABLE: put TABLE into the scenario's own dm device NAME (a disk made to fail,
# or back again)
dm_swap() {
  log "$1 -> $2"
  { dmsetup suspend "$1" && dmsetup reload "$1" --table "$2" && dmsetup resume "$1"; } ||
    fail "cannot swap $1 to $2"
}

# dm_slow NAME DEV MS: a dm `delay` device over DEV whose writes take MS milliseconds (a slow
# replica disk, so a resync lasts long enough to act on it); prints its path
dm_slow() {
  dmsetup create "$1" --table "0 $(dev_sectors "$2") delay $2 0 0 $2 0 $3" ||
    { fail "dm_slow $1: dmsetup refused"; return 1; }
  echo "/dev/mapper/$1"
}

# dm_part NAME DEV MiB [OFFSET_MiB]: a dm `linear` device of MiB of DEV from OFFSET_MiB (0);
# prints its path
dm_part() {
  dmsetup create "$1" --table "0 $(($3 * 2048)) linear $2 $((${4:-0} * 2048))" ||
    { fail "dm_part $1: dmsetup refused"; return 1; }
  echo "/dev/mapper/$1"
}

# serve_pair SRC_DEV TGT_DEV IQN: the common start of a copy scenario: block backstores `src`
# on SRC_DEV and `tgt` on TGT_DEV, `src` exported as IQN and logged in to (its disk in $SD),
# the daemon started, and the background writer running on $SD for 2 s
serve_pair() {
  lio_iblock src "$1" > /dev/null || return 1
  lio_iblock tgt "$2" > /dev/null || return 1
  lio_export src "$3" || return 1
  start_iscsid
  SD=$(initiator_login "$3") || return 1
  daemon_start || return 1
  io_start "$SD"
  sleep 2
}

# ---------------------------------------------------------------- CIM-XML (WBEM)
# The daemon's CIM-XML server over plain HTTP on loopback, driven with busybox wget. Set
# CIM_PORT, CIM_USER and CIM_PW first; the classes' host keys use `hostname`.

CIM_NS=root/cimv2/storage/iscsitarget

_cim_ns() { echo "$1" | awk -F/ '{printf "<LOCALNAMESPACEPATH>"; for (i = 1; i <= NF; i++) printf "<NAMESPACE NAME=\"%s\"/>", $i; printf "</LOCALNAMESPACEPATH>"}'; }
_cim_key() { printf '<KEYBINDING NAME="%s"><KEYVALUE VALUETYPE="string">%s</KEYVALUE></KEYBINDING>' "$1" "$2"; }
_cim_msg() { printf '<?xml version="1.0" encoding="utf-8"?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ>%s</SIMPLEREQ></MESSAGE></CIM>' "$1"; }

# cim_volume NAME: the INSTANCENAME of the volume of block/NAME
cim_volume() {
  printf '<INSTANCENAME CLASSNAME="LIO_StorageVolume">%s%s%s%s</INSTANCENAME>' \
    "$(_cim_key SystemCreationClassName LIO_ComputerSystem)" "$(_cim_key SystemName "$(hostname)")" \
    "$(_cim_key CreationClassName LIO_StorageVolume)" "$(_cim_key DeviceID "block/$1")"
}

_cim_service_path() {
  printf '<LOCALINSTANCEPATH>%s<INSTANCENAME CLASSNAME="LIO_StorageConfigurationService">%s%s%s%s</INSTANCENAME></LOCALINSTANCEPATH>' \
    "$(_cim_ns "$CIM_NS")" "$(_cim_key SystemCreationClassName LIO_ComputerSystem)" \
    "$(_cim_key SystemName "$(hostname)")" "$(_cim_key CreationClassName LIO_StorageConfigurationService)" \
    "$(_cim_key Name lio-replica)"
}

# cim_post METHOD XML: POST the request, the response on stdout; non-zero if HTTP failed
cim_post() {
  _cim_msg "$2" > "$E2E_STATE/cim-req.xml"
  wget -q -O - --header "CIMOperation: MethodCall" --header "CIMMethod: $1" \
    --header "Content-Type: application/xml; charset=utf-8" --post-file "$E2E_STATE/cim-req.xml" \
    "http://$CIM_USER:$CIM_PW@127.0.0.1:$CIM_PORT/cimom"
}

# cim_enumerate CLASS: EnumerateInstances of CLASS, one instance per line
cim_enumerate() {
  cim_post EnumerateInstances "$(printf '<IMETHODCALL NAME="EnumerateInstances">%s<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="%s"/></IPARAMVALUE></IMETHODCALL>' "$(_cim_ns "$CIM_NS")" "$1")" |
    sed 's#</VALUE.NAMEDINSTANCE>#&\n#g'
}

# cim_attach SOURCE TARGET COPYTYPE: AttachReplica with volume references (names of block
# objects); the METHODRESPONSE on stdout
cim_attach() {
  cim_post AttachReplica "$(printf '<METHODCALL NAME="AttachReplica">%s<PARAMVALUE NAME="SourceElement" PARAMTYPE="reference"><VALUE.REFERENCE>%s</VALUE.REFERENCE></PARAMVALUE><PARAMVALUE NAME="TargetElement" PARAMTYPE="reference"><VALUE.REFERENCE>%s</VALUE.REFERENCE></PARAMVALUE><PARAMVALUE NAME="CopyType" PARAMTYPE="uint16"><VALUE>%s</VALUE></PARAMVALUE></METHODCALL>' \
    "$(_cim_service_path)" "$(cim_volume "$1")" "$(cim_volume "$2")" "$3")"
}

# cim_modify OPERATION SOURCE TARGET: ModifySynchronization of the relationship SOURCE -> TARGET
cim_modify() {
  cim_post ModifySynchronization "$(printf '<METHODCALL NAME="ModifySynchronization">%s<PARAMVALUE NAME="Operation" PARAMTYPE="uint16"><VALUE>%s</VALUE></PARAMVALUE><PARAMVALUE NAME="Synchronization" PARAMTYPE="reference"><VALUE.REFERENCE><INSTANCENAME CLASSNAME="LIO_StorageSynchronized"><KEYBINDING NAME="SystemElement"><VALUE.REFERENCE>%s</VALUE.REFERENCE></KEYBINDING><KEYBINDING NAME="SyncedElement"><VALUE.REFERENCE>%s</VALUE.REFERENCE></KEYBINDING></INSTANCENAME></VALUE.REFERENCE></PARAMVALUE></METHODCALL>' \
    "$(_cim_service_path)" "$1" "$(cim_volume "$2")" "$(cim_volume "$3")")"
}

# cim_job JOB: GetInstance of the ConcreteJob with InstanceID JOB
cim_job() {
  cim_post GetInstance "$(printf '<IMETHODCALL NAME="GetInstance">%s<IPARAMVALUE NAME="InstanceName"><INSTANCENAME CLASSNAME="LIO_ConcreteJob">%s</INSTANCENAME></IPARAMVALUE></IMETHODCALL>' \
    "$(_cim_ns "$CIM_NS")" "$(_cim_key InstanceID "$1")")"
}

# cim_rv: the RETURNVALUE of the METHODRESPONSE on stdin
cim_rv() { sed -n 's#.*<RETURNVALUE[^>]*><VALUE>\([0-9]*\)</VALUE>.*#\1#p'; }
# cim_job_ref: the InstanceID of the Job output parameter on stdin
cim_job_ref() { sed -n 's#.*<KEYBINDING NAME="InstanceID"><KEYVALUE VALUETYPE="string">\([^<]*\)</KEYVALUE>.*#\1#p'; }
# cim_prop NAME: the value of scalar property NAME of the (one) instance on stdin
cim_prop() { sed -n "s#.*<PROPERTY NAME=\"$1\" TYPE=\"[a-z0-9]*\"><VALUE>\([^<]*\)</VALUE>.*#\1#p" | head -n 1; }

# cim_wait_job JOB: follow the job by GetInstance until it ends; its last instance in
# $E2E_STATE/cim-job.xml, its JobState on stdout
cim_wait_job() {
  _cim_n=0
  while [ "$_cim_n" -lt 600 ]; do
    cim_job "$1" > "$E2E_STATE/cim-job.xml" || break
    _cim_s=$(cim_prop JobState < "$E2E_STATE/cim-job.xml")
    case $_cim_s in 2|3|4) ;; *) break ;; esac
    sleep 0.5
    _cim_n=$((_cim_n + 1))
  done
  cim_prop JobState < "$E2E_STATE/cim-job.xml"
}
