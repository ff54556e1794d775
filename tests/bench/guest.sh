#!/bin/sh
# Data-path and control-plane benchmarks in the test VM (run by scripts/bench, not a test:
# the name keeps scripts/vm-test's default tests/e2e/[0-9]*.sh from picking it up).
#
# Every figure is printed as a line `BENCH KEY VALUE` (seconds, bytes, KiB or a count) on the
# console; scripts/bench reads them from the serial log and turns them into ratios against the
# baselines measured here, on the same devices, in the same run:
#   copy.*   Sync initial resync and UnSyncUnAssoc copy (attach -> job Completed) vs
#            `dd bs=1M iflag=direct oflag=direct` between the same two disks
#   io.*     initiator writes through iSCSI (1 MiB throughput, 4 KiB latency) on one LUN whose
#            backstore is linear (adopted), Sync (a synchronous raid1: the target has the
#            room), Async (raid1 write-mostly)
#   track.*  Resync after a Fracture with 1 % of the LUN rewritten, vs the full initial copy
#   lvm.*    the same with LVM on the same two disks (run before the product touches them): a
#            raid1 LV's initial sync, `--splitmirrors 1 --trackchanges` then `--mergemirrors`
#            with 1 % rewritten, and initiator writes to the LV exported the same way
#   lag.*    Async under a steady write load: the lag bound, convergence after the writes stop
#   cp.*     control plane: snapshot AttachReplica round trip vs EnumerateJobs round trip,
#            daemon VmRSS
#   snap.*   initiator writes to a LUN with 1, 4 and 16 UnSyncAssoc snapshots vs the same LUN
#            on linear, and the same for an LVM LV with thick snapshots (lvcreate -s) on the
#            same disk; Restore of a snapshot (10 % of the source rewritten) and LVM's
#            lvconvert --merge vs dd writing that much to the same disk (needs the seventh
#            disk, scripts/vm-test's EXTRA_DISK_MB; skipped without it)
# A check that goes wrong is a `fail` (the run's verdict), but the remaining parts still run.
# shellcheck source=../e2e/lib.sh
. "$(dirname "$0")/lib.sh"

BENCH_ROUNDS=2      # repetitions of each measurement (scripts/bench --rounds rewrites this line)
BENCH_PARTS="copy lvm io control snap"   # the parts to run (scripts/bench --parts rewrites this line)
IO_MB=128           # initiator throughput: MiB written with bs=1M per measurement (at most
                    # a quarter of the LUN)
LAT_N=1000          # initiator latency: 4 KiB writes per measurement
LOAD_S=10           # Async lag: seconds of steady writes
LOAD_MB=8           # Async lag: size of the rewritten region
CP_N=7              # control plane: round trips per median
SNAP_NS="1 4 16"    # snapshots: how many snapshots of the LUN per measurement (the last is the most)
SNAP_MB=64          # snapshots: the LUN (and the LV); every snapshot target is as large (the
                    # product wants targets at least as large as the source)
SNAP_IO_MB=48       # snapshots: MiB written with bs=1M per measurement; with the latency writes
                    # (LAT_N x 4 KiB) they must fit in a COW store of SNAP_MB with its
                    # metadata (1/256 of the data, and a header chunk)
SNAP_RS_MB=512      # restore: the source; 10 % of it is rewritten, then restored

# now: wall clock with microseconds (busybox date has no %N; adjtimex reads the kernel's time)
now() { adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "%d.%06d\n", s, u}'; }
# since T0: seconds from T0 to now, to the ms
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f\n", b - a}'; }
# bench KEY VALUE: one figure for scripts/bench
bench() { echo "BENCH $1 $2"; log "bench: $1 = $2"; }
# median of the numbers on stdin
median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$(daemon_pid)/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$(daemon_pid)/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$(daemon_pid)/status"; }

# fill_zero DEV: write the whole device (so that no later measurement pays for the host
# allocating its sparse image)
fill_zero() { dd if=/dev/zero of="$1" bs=1M oflag=direct 2>/dev/null; }

# timed_dd IF OF [DD-ARGS...]: run dd, print its wall time
timed_dd() {
  _b_if=$1 _b_of=$2
  shift 2
  _b_t0=$(now)
  dd if="$_b_if" of="$_b_of" "$@" 2>/tmp/b-dd.err || fail "dd $_b_if -> $_b_of: $(tail -n 1 /tmp/b-dd.err)"
  since "$_b_t0"
}

# attach_timed SRC TGT TYPE: AttachReplica, then `lr --json job` every 0.1 s until the job
# ends; sets T (seconds from the call to the final state seen), REL, JSTATE
attach_timed() {
  _b_t0=$(now)
  if ! lr --json attach "block/$1" "block/$2" --copy-type "$3" > /tmp/b-attach.json 2>&1; then
    fail "attach $1 $2 $3: $(tr '\n' ' ' < /tmp/b-attach.json)"
    T='' REL='' JSTATE=''
    return 1
  fi
  _b_job=$(jfield Job < /tmp/b-attach.json)
  REL=$(jfield Relationship < /tmp/b-attach.json)
  JSTATE=
  while [ -n "$_b_job" ] && [ "$_b_job" != null ]; do
    lr --json job "$_b_job" > /tmp/b-job.json 2>&1 || { fail "job $_b_job: $(cat /tmp/b-job.json)"; break; }
    JSTATE=$(jfield JobState < /tmp/b-job.json)
    case $JSTATE in 7 | 8 | 9 | 10) break ;; esac
    sleep 0.1
  done
  T=$(since "$_b_t0")
  [ -z "$JSTATE" ] || [ "$JSTATE" = 7 ] ||
    fail "attach $1 $2 $3: job ended in state $JSTATE: $(jfield ErrorDescription < /tmp/b-job.json)"
}

# daemon_log_from N: log the daemon's log lines after line N (to see where a call's time goes)
daemon_log_from() {
  sed -n "$(($1 + 1)),\$p" "$LR_LOG" | while IFS= read -r _b_l; do log "daemon: $_b_l"; done
}

# kmirror REGION: the kernel alone, no daemon: a dm mirror of the product's shape (core log,
# region REGION sectors, handle_errors) from C_SRC to C_TGT, polled every 0.1 s until every
# region is in sync; prints the seconds from before the create to in-sync seen
kmirror() {
  _b_t0=$(now)
  dmsetup create bench-km --table "0 $(dev_sectors "$C_SRC") mirror core 1 $1 2 $C_SRC 0 $C_TGT 0 1 handle_errors" ||
    { fail "kmirror: dmsetup create refused"; return 1; }
  while :; do
    _b_r=$(dmsetup status bench-km | awk '{print $7}')
    [ "${_b_r%/*}" != "${_b_r#*/}" ] || break
    [ "$(since "$_b_t0" | cut -d. -f1)" -lt 600 ] || { fail "kmirror: not in sync after 600 s"; break; }
    sleep 0.1
  done
  since "$_b_t0"
  dmsetup remove bench-km || fail "kmirror: dmsetup remove refused"
}

# same_head A B: the first 8 MiB of A and B are equal (a copy's sanity check)
same_head() { [ "$(md5dev "$1" 8)" = "$(md5dev "$2" 8)" ]; }

# ------------------------------------------------------------------------------------------
# copy.*: Sync initial resync and UnSyncUnAssoc copy vs dd, disk 0 -> disk 1

part_copy() {
  C_SRC=$(disk 0)
  C_TGT=$(disk 1)
  bench copy.bytes $(($(dev_sectors "$C_SRC") * 512))
  fill_zero "$C_SRC"
  fill_random "$C_SRC" 8            # a head that differs from the target's, for the checks
  lio_iblock csrc "$C_SRC" > /dev/null || return 1
  lio_iblock ctgt "$C_TGT" > /dev/null || return 1
  # adopt first: the one-off move onto the daemon's dm devices is not part of a copy
  run lr adopt block/csrc || fail "adopt csrc"
  run lr adopt block/ctgt || fail "adopt ctgt"
  timed_dd "$C_SRC" "$C_TGT" bs=1M iflag=direct oflag=direct > /dev/null   # warm-up, allocates
  r=1
  while [ $r -le $BENCH_ROUNDS ]; do
    bench "copy.dd.$r" "$(timed_dd "$C_SRC" "$C_TGT" bs=1M iflag=direct oflag=direct)"
    fill_random "$C_TGT" 8
    _b_lines=$(wc -l < "$LR_LOG")
    attach_timed csrc ctgt sync && bench "copy.sync.$r" "$T"
    [ $r -ne 1 ] || daemon_log_from "$_b_lines"
    check 'same_head "$C_SRC" "$C_TGT"' "sync round $r: target head == source head"
    [ -z "$REL" ] || run lr detach "$REL" || fail "detach $REL"
    fill_random "$C_TGT" 8
    attach_timed csrc ctgt unsyncunassoc && bench "copy.clone.$r" "$T"
    check 'same_head "$C_SRC" "$C_TGT"' "clone round $r: target head == source head"
    # the kernel's own mirror, same disks: with the product's region size, and with 8 MiB
    fill_random "$C_TGT" 8
    bench "copy.kmirror.$r" "$(kmirror 4096)"
    check 'same_head "$C_SRC" "$C_TGT"' "kernel mirror round $r: target head == source head"
    bench "copy.kmirror8m.$r" "$(kmirror 16384)"
    r=$((r + 1))
  done
  bench "copy.dd.$r" "$(timed_dd "$C_SRC" "$C_TGT" bs=1M iflag=direct oflag=direct)"
}

# ------------------------------------------------------------------------------------------
# io.*: the initiator writes to one LUN: linear (adopted), Sync, Async; lag.*: Async under load

IQN=iqn.2003-01.org.linux-iscsi.bench:io

io_measure() { # MODE ROUND: throughput and latency of initiator writes at IO_SEEK MiB into the LUN
  bench "io.$1.tput.$2" "$(timed_dd /dev/zero "$SD" bs=1M count="$IO_MB" seek="$IO_SEEK" oflag=direct conv=notrunc)"
  bench "io.$1.lat.$2" "$(timed_dd /dev/zero "$SD" bs=4k count=$LAT_N seek=$((IO_SEEK * 256)) oflag=direct conv=notrunc)"
}

part_lag() { # the Async relationship is up: steady writes, then convergence
  lr --json relationships > /tmp/b-rels.json
  bench lag.max_lag_writes "$(jfield MaxLagWrites < /tmp/b-rels.json)"
  dd if=/dev/urandom of=/tmp/b-pa bs=1M count=$LOAD_MB 2>/dev/null
  dd if=/dev/urandom of=/tmp/b-pb bs=1M count=$LOAD_MB 2>/dev/null
  H_B=$(md5sum < /tmp/b-pb | cut -d' ' -f1)
  # the load: pattern A then pattern B over the same region, again and again
  _b_t0=$(now)
  _b_n=0
  _b_status=
  while [ "$(since "$_b_t0" | cut -d. -f1)" -lt $LOAD_S ]; do
    dd if=/tmp/b-pa of="$SD" bs=1M seek="$LAG_SEEK" oflag=direct conv=notrunc 2>/dev/null || fail "load write A"
    dd if=/tmp/b-pb of="$SD" bs=1M seek="$LAG_SEEK" oflag=direct conv=notrunc 2>/dev/null || fail "load write B"
    _b_n=$((_b_n + 2))
    # the raid's view in the middle of the load
    [ -n "$_b_status" ] || _b_status=$(dmsetup status "lio-replica-v1-so-isrc")
  done
  _b_stop=$(now)
  bench lag.load_s "$(awk -v a="$_b_t0" -v b="$_b_stop" 'BEGIN {printf "%.3f", b - a}')"
  bench lag.load_bytes $((_b_n * LOAD_MB * 1048576))
  log "raid status during the load: $_b_status"
  # convergence: the target leg's region holds pattern B (read with O_DIRECT, checked in a loop)
  _b_checks=0
  while :; do
    _b_checks=$((_b_checks + 1))
    [ "$(md5dev_at "$I_TGT" "$LAG_SEEK" $LOAD_MB)" = "$H_B" ] && break
    [ "$(since "$_b_stop" | cut -d. -f1)" -lt 60 ] || { fail "Async target did not converge within 60 s"; break; }
  done
  bench lag.converge_s "$(since "$_b_stop")"
  bench lag.checks "$_b_checks"
  # the resolution: one check's duration
  _b_t0=$(now)
  md5dev_at "$I_TGT" "$LAG_SEEK" $LOAD_MB > /dev/null
  bench lag.check_s "$(since "$_b_t0")"
  check '[ "$(md5dev_at "$I_SRC" "$LAG_SEEK" $LOAD_MB)" = "$H_B" ]' "lag: the source leg holds the last pattern"
}

md5dev_at() { # DEV SKIP_MiB MiB
  dd if="$1" bs=1M skip="$2" count="$3" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
}

# track.*: the relationship $REL (a raid1) is up and in sync: Fracture, the initiator rewrites
# 1 % of the LUN, Resync until its job ends; against the same relationship's full initial copy
track_round() { # KEY: the bench key of the Resync's time
  run lr fracture "$REL" > /dev/null || { fail "fracture $REL"; return 1; }
  dd if=/dev/urandom of="$SD" bs=1M count="$TRACK_MB" seek="$TRACK_SEEK" oflag=direct conv=notrunc 2>/dev/null ||
    fail "rewrite of $TRACK_MB MiB through the initiator"
  _b_t0=$(now)
  lr --json resync "$REL" > /tmp/b-resync.json 2>&1 || { fail "resync $REL: $(cat /tmp/b-resync.json)"; return 1; }
  job_wait "$(jfield Job < /tmp/b-resync.json)"
  bench "$1" "$(since "$_b_t0")"
  [ "$JSTATE" = 7 ] || fail "resync job ended in state $JSTATE"
}

# lvm.*: LVM raid1 on the disks the io part uses next (2 and 3), the same sizes and the same
# writes; everything of LVM's is removed again before the product's rounds
LVM_RAID_CFG=''
LRIQN=iqn.2003-01.org.linux-iscsi.bench:lvmraid
RVG=benchrvg

lvmr() { # CMD ARG...: an lvm command on the raid VG, its output shown only when it fails
  _b_c=$1
  shift
  lvm "$_b_c" --config "$LVM_RAID_CFG" "$@" > /tmp/b-lvm.out 2>&1 ||
    { fail "lvm $_b_c $*: $(tail -n 3 /tmp/b-lvm.out | tr '\n' ' ')"; return 1; }
}

lv_synced() { # LV: its raid1 images are all in sync
  _b_p=$(lvm lvs --config "$LVM_RAID_CFG" --noheadings -o sync_percent "$RVG/$1" 2>/dev/null | tr -d ' ')
  [ "$_b_p" = 100.00 ]
}

lv_wait_synced() { # LV T0: until in sync, at most 600 s
  while ! lv_synced "$1"; do
    [ "$(since "$2" | cut -d. -f1)" -lt 600 ] || { fail "lvm: $1 not in sync after 600 s"; return 1; }
    sleep 0.1
  done
}

part_lvm() {
  _b_mb=$(($(dev_sectors "$(disk 2)") / 2048 - 16))   # the io part's LUN size
  _b_tr=$((_b_mb / 100 > 0 ? _b_mb / 100 : 1))
  L_A=$(disk 2) L_B=$(disk 3)
  LVM_RAID_CFG="devices { filter = [ \"a|^$L_A\$|\", \"a|^$L_B\$|\", \"r|.*|\" ] }"
  bench lvm.bytes $((_b_mb * 1048576))
  bench lvm.track_bytes $((_b_tr * 1048576))
  fill_zero "$L_A"
  fill_zero "$L_B"
  lvmr pvcreate -y "$L_A" "$L_B" || return 1
  lvmr vgcreate "$RVG" "$L_A" "$L_B" || return 1
  lvm version | head -n 1 | while read -r _b_l; do log "lvm: $_b_l"; done
  r=1
  while [ $r -le $BENCH_ROUNDS ]; do
    _b_t0=$(now)
    lvmr lvcreate -y --type raid1 -m 1 -L "${_b_mb}m" -n lr "$RVG" "$L_A" "$L_B" || return 1
    lv_wait_synced lr "$_b_t0" && bench "lvm.resync.$r" "$(since "$_b_t0")"
    if [ $r -eq 1 ]; then
      # the LV through LIO, as the product's LUN is exported
      lio_iblock lvr "/dev/mapper/$RVG-lr" > /dev/null || return 1
      lio_export lvr "$LRIQN" || return 1
      start_iscsid
      LRD=$(initiator_login "$LRIQN") || return 1
      _b_r=1 _b_at=$((_b_mb / 8))
      [ "$IO_MB" -le $((_b_mb / 4)) ] || IO_MB=$((_b_mb / 4))
      while [ $_b_r -le "$BENCH_ROUNDS" ]; do
        bench "io.lvm.tput.$_b_r" "$(timed_dd /dev/zero "$LRD" bs=1M count="$IO_MB" seek="$_b_at" oflag=direct conv=notrunc)"
        bench "io.lvm.lat.$_b_r" "$(timed_dd /dev/zero "$LRD" bs=4k count=$LAT_N seek=$((_b_at * 256)) oflag=direct conv=notrunc)"
        _b_r=$((_b_r + 1))
      done
      # LVM's change-tracked split and merge, 1 % rewritten through the initiator meanwhile
      lvmr lvconvert -y --splitmirrors 1 --trackchanges "$RVG/lr" || return 1
      dd if=/dev/urandom of="$LRD" bs=1M count="$_b_tr" seek=$((_b_mb / 2)) oflag=direct conv=notrunc 2>/dev/null ||
        fail "lvm: rewrite of $_b_tr MiB through the initiator"
      _b_t0=$(now)
      lvmr lvconvert -y --mergemirrors "$RVG/lr_rimage_1" || return 1
      lv_wait_synced lr "$_b_t0" && bench "lvm.track.1" "$(since "$_b_t0")"
      check 'lv_synced lr' "lvm: the merged image is in sync"
      initiator_logout "$LRIQN"
      lio_unexport "$LRIQN"
      lio_delete lvr
    fi
    lvmr lvremove -y "$RVG/lr" || return 1
    r=$((r + 1))
  done
  lvmr vgremove -y "$RVG" || return 1
  lvmr pvremove -y "$L_A" "$L_B" || return 1
  # (dd ends at the end of the device with an error)
  fill_zero "$L_A" || :
  fill_zero "$L_B" || :
}

part_io() {
  # Async needs 8 MiB beyond the source for dm-raid's metadata: the source is a dm linear
  # over the first DISK-16 MiB of disk 2 (the same LUN in every mode)
  _b_mb=$(($(dev_sectors "$(disk 2)") / 2048 - 16))
  I_SRC=$(dm_part bench-isrc "$(disk 2)" "$_b_mb") || return 1
  I_TGT=$(disk 3)
  [ "$IO_MB" -le $((_b_mb / 4)) ] || IO_MB=$((_b_mb / 4))
  IO_SEEK=$((_b_mb / 8))
  LAG_SEEK=$((_b_mb * 3 / 4))
  TRACK_MB=$((_b_mb / 100 > 0 ? _b_mb / 100 : 1))
  TRACK_SEEK=$((_b_mb / 2))
  bench track.bytes $((TRACK_MB * 1048576))
  bench io.src_bytes $((_b_mb * 1048576))
  bench io.tput_bytes $((IO_MB * 1048576))
  bench io.lat_n $LAT_N
  fill_zero "$I_SRC"
  fill_zero "$I_TGT"
  lio_iblock isrc "$I_SRC" > /dev/null || return 1
  lio_iblock itgt "$I_TGT" > /dev/null || return 1
  lio_export isrc "$IQN" || return 1
  start_iscsid
  SD=$(initiator_login "$IQN") || return 1
  run lr adopt block/isrc || fail "adopt isrc"
  run lr adopt block/itgt || fail "adopt itgt"
  # the initiator reconnects after the adoption's TPG swap: wait until the LUN answers again
  wait_for 60 'dd if="$SD" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null' || fail "LUN back after adoption"
  # a baseline for the Async initial copy on these devices
  bench io.dd "$(timed_dd "$I_SRC" "$I_TGT" bs=1M iflag=direct oflag=direct)"
  r=1
  while [ $r -le $BENCH_ROUNDS ]; do
    check 'shim_table isrc | grep -q " linear "' "round $r: LUN on linear"
    io_measure linear $r
    attach_timed isrc itgt sync && bench "io.sync.resync.$r" "$T"
    # (the target has the room of an Async copy: a raid1 without write_mostly)
    check 'real_table isrc | grep " raid raid1 " | grep -vq write_mostly' "round $r: LUN on a synchronous raid1"
    [ $r -ne 1 ] || track_round track.sync.1
    io_measure sync $r
    [ -z "$REL" ] || run lr detach "$REL" || fail "detach $REL"
    attach_timed isrc itgt async && bench "io.async.resync.$r" "$T"
    check 'real_table isrc | grep -q " raid raid1 .*write_mostly"' "round $r: LUN on raid1 write-mostly"
    io_measure async $r
    [ $r -ne 1 ] || part_lag
    track_round "track.resync.$r"
    [ -z "$REL" ] || run lr detach "$REL" || fail "detach $REL"
    r=$((r + 1))
  done
  # reference: md throttles a resync to dev.raid.speed_limit_max (KiB/s) unless the table
  # sets max_recovery_rate; one more Async initial copy with that limit lifted
  if [ -w /proc/sys/dev/raid/speed_limit_max ]; then
    _b_lim=$(cat /proc/sys/dev/raid/speed_limit_max)
    bench io.md_speed_limit_max_kb "$_b_lim"
    echo 100000000 > /proc/sys/dev/raid/speed_limit_max
    attach_timed isrc itgt async && bench io.async.resync_nolimit "$T"
    [ -z "$REL" ] || run lr detach "$REL" || fail "detach $REL"
    echo "$_b_lim" > /proc/sys/dev/raid/speed_limit_max
  fi
  check 'shim_table isrc | grep -q " linear "' "LUN back on linear"
  io_measure linear $r
}

# ------------------------------------------------------------------------------------------
# cp.*: AttachReplica answer time (snapshot, no job) and the daemon's memory

part_control() {
  lio_iblock snsrc "$(disk 4)" > /dev/null || return 1
  lio_iblock sntgt "$(disk 5)" > /dev/null || return 1
  # the first attach also adopts both objects: reported on its own
  _b_t0=$(now)
  lr --json attach block/snsrc block/sntgt --copy-type unsyncassoc > /tmp/b-snap.json
  bench cp.snap_attach_first "$(since "$_b_t0")"
  run lr detach "$(jfield Relationship < /tmp/b-snap.json)" || fail "detach snapshot"
  : > /tmp/b-attach.txt
  : > /tmp/b-jobs.txt
  : > /tmp/b-so.txt
  : > /tmp/b-timer.txt
  i=0
  while [ $i -lt $CP_N ]; do
    _b_t0=$(now)
    lr --json attach block/snsrc block/sntgt --copy-type unsyncassoc > /tmp/b-snap.json
    since "$_b_t0" >> /tmp/b-attach.txt
    [ "$(jfield ReturnValue < /tmp/b-snap.json)" = 0 ] || fail "snapshot attach: $(cat /tmp/b-snap.json)"
    run lr detach "$(jfield Relationship < /tmp/b-snap.json)" > /dev/null || fail "detach snapshot"
    _b_t0=$(now)
    lr --json jobs > /dev/null
    since "$_b_t0" >> /tmp/b-jobs.txt
    _b_t0=$(now)
    lr --json storage-objects > /dev/null
    since "$_b_t0" >> /tmp/b-so.txt
    _b_t0=$(now)
    since "$_b_t0" >> /tmp/b-timer.txt
    i=$((i + 1))
  done
  bench cp.n $CP_N
  # one more, with the daemon's log of it (where the time goes)
  _b_lines=$(wc -l < "$LR_LOG")
  lr --json attach block/snsrc block/sntgt --copy-type unsyncassoc > /tmp/b-snap.json
  daemon_log_from "$_b_lines"
  run lr detach "$(jfield Relationship < /tmp/b-snap.json)" > /dev/null || fail "detach snapshot"
  log "snapshot attach round trips: $(tr '\n' ' ' < /tmp/b-attach.txt)"
  log "EnumerateJobs round trips: $(tr '\n' ' ' < /tmp/b-jobs.txt)"
  bench cp.snap_attach "$(median < /tmp/b-attach.txt)"
  bench cp.enum_jobs "$(median < /tmp/b-jobs.txt)"
  bench cp.enum_so "$(median < /tmp/b-so.txt)"
  bench cp.timer "$(median < /tmp/b-timer.txt)"
}

# ------------------------------------------------------------------------------------------
# snap.*: initiator writes with 1, 4, 16 snapshots (the product's and LVM's) vs linear;
# Restore and LVM's merge vs dd. Everything on the seventh disk, cut into dm linear slices:
#   the product: LUN psrc (SNAP_MB), targets pc1..pcN (SNAP_MB each), restore rsrc and rtgt
#   (SNAP_RS_MB each); LVM: one PV holding the LV lvsrc (SNAP_MB, exported the same way), N
#   snapshots of SNAP_MB, the restore LV rlv (SNAP_RS_MB) and its snapshot; a scratch slice for
#   the dd baseline of the restore

SIQN=iqn.2003-01.org.linux-iscsi.bench:snap
LIQN=iqn.2003-01.org.linux-iscsi.bench:lvm
VG=benchvg
export LVM_SUPPRESS_FD_WARNINGS=1
# lvm looks at the PV slice only (not at the product's devices, which it would read at every
# command, nor at the initiator's disks)
LVM_CFG='devices { filter = [ "a|^/dev/mapper/bench-pv$|", "r|.*|" ] }'

# lvm_do CMD ARG...: an lvm command, its output shown only when it fails
lvm_do() {
  _b_c=$1
  shift
  lvm "$_b_c" --config "$LVM_CFG" "$@" > /tmp/b-lvm.out 2>&1 ||
    { fail "lvm $_b_c $*: $(tail -n 3 /tmp/b-lvm.out | tr '\n' ' ')"; return 1; }
}

snap_measure() { # KEY ROUND DEV: 1 MiB throughput at S_IO, 4 KiB latency at S_LAT (apart, so
  # that the latency writes land on chunks every snapshot still shares)
  bench "snap.$1.tput.$2" "$(timed_dd /dev/zero "$3" bs=1M count="$SNAP_IO_MB" seek="$S_IO" oflag=direct conv=notrunc)"
  bench "snap.$1.lat.$2" "$(timed_dd /dev/zero "$3" bs=4k count=$LAT_N seek=$((S_LAT * 256)) oflag=direct conv=notrunc)"
}

snap_valid() { # DM-NAME...: none of these snapshots is Invalid or Overflow (a full COW store)
  for _b_d in "$@"; do
    if dmsetup status "$_b_d" | grep -q -E 'Invalid|Overflow'; then return 1; fi
  done
}

snap_product() { # N ROUND: N fresh snapshots of psrc, the writes, the snapshots detached
  _b_k=1 _b_names='' _b_want=$1
  while [ $_b_k -le "$1" ]; do
    lr --json attach block/psrc "block/pc$_b_k" --copy-type unsyncassoc > /tmp/b-snap.json 2>&1
    [ "$(jfield ReturnValue < /tmp/b-snap.json)" = 0 ] || fail "snapshot pc$_b_k: $(tr '\n' ' ' < /tmp/b-snap.json)"
    _b_names="$_b_names lio-replica-v1-so-pc$_b_k"
    _b_k=$((_b_k + 1))
  done
  [ "$2" -ne 1 ] || check '[ "$(lr --json relationships | grep -c "\"InstanceID\": \"psrc/")" -eq "$_b_want" ]' \
    "$1 snapshot relationships on psrc"
  snap_measure "p$1" "$2" "$SSD"
  # shellcheck disable=SC2086 # a list of names
  check 'snap_valid $_b_names' "round $2: the $1 snapshot(s) of psrc are valid after the writes"
  _b_k=1
  while [ $_b_k -le "$1" ]; do
    lr detach "psrc/pc$_b_k" > /dev/null || fail "detach psrc/pc$_b_k"
    _b_k=$((_b_k + 1))
  done
}

snap_lvm() { # N ROUND: N fresh thick snapshots of lvsrc, the writes, the snapshots removed
  _b_k=1 _b_names='' _b_lvs=''
  while [ $_b_k -le "$1" ]; do
    lvm_do lvcreate -s -n "s$_b_k" -L "${SNAP_MB}m" "$VG/lvsrc"
    _b_names="$_b_names $VG-s$_b_k"
    _b_lvs="$_b_lvs $VG/s$_b_k"
    _b_k=$((_b_k + 1))
  done
  snap_measure "lv$1" "$2" "$LSD"
  # shellcheck disable=SC2086 # lists of names
  check 'snap_valid $_b_names' "round $2: the $1 LVM snapshot(s) of lvsrc are valid after the writes"
  # shellcheck disable=SC2086
  lvm_do lvremove -f $_b_lvs
}

job_wait() { # JOB: `lr --json job` every 0.1 s until the job ends; sets JSTATE
  JSTATE=
  while :; do
    lr --json job "$1" > /tmp/b-job.json 2>&1 || { fail "job $1: $(cat /tmp/b-job.json)"; break; }
    JSTATE=$(jfield JobState < /tmp/b-job.json)
    case $JSTATE in 7 | 8 | 9 | 10) break ;; esac
    sleep 0.1
  done
}

snap_restore() { # ROUND: a snapshot of rsrc, 10 % rewritten, restore -> job Completed
  lr --json attach block/rsrc block/rtgt --copy-type unsyncassoc > /tmp/b-snap.json 2>&1
  [ "$(jfield ReturnValue < /tmp/b-snap.json)" = 0 ] || { fail "snapshot rsrc: $(tr '\n' ' ' < /tmp/b-snap.json)"; return 1; }
  dmsetup mknodes lio-replica-v1-so-rsrc
  _b_h=$(md5dev_at /dev/mapper/lio-replica-v1-so-rsrc 0 "$R_MB")
  dd if=/tmp/b-rw of=/dev/mapper/lio-replica-v1-so-rsrc bs=1M oflag=direct conv=notrunc 2>/dev/null || fail "rewrite rsrc"
  _b_lines=$(wc -l < "$LR_LOG")
  _b_t0=$(now)
  lr --json restore rsrc/rtgt > /tmp/b-restore.json 2>&1
  _b_job=$(jfield Job < /tmp/b-restore.json)
  if [ "$(jfield ReturnValue < /tmp/b-restore.json)" != 4096 ] || [ -z "$_b_job" ]; then
    fail "restore rsrc/rtgt: $(tr '\n' ' ' < /tmp/b-restore.json)"
    return 1
  fi
  job_wait "$_b_job"
  bench "snap.restore.$1" "$(since "$_b_t0")"
  [ "$1" -ne 1 ] || daemon_log_from "$_b_lines"
  [ "$JSTATE" = 7 ] || fail "restore job ended in state $JSTATE: $(jfield ErrorDescription < /tmp/b-job.json)"
  check '[ "$(md5dev_at "$R_SRC" 0 "$R_MB")" = "$_b_h" ]' "round $1: restore brought back the snapshot's image"
  check 'shim_table rsrc | grep -q " linear "' "round $1: rsrc is on linear after the restore"
}

merge_done() { # the kernel's merge into rlv is over: snapshot-merge's allocated = metadata
  # sectors, or no snapshot-merge table any more (lvconvert has finished already)
  dmsetup status "$VG-rlv" | awk '$3 != "snapshot-merge" {exit 0} {split($4, a, "/"); exit !(a[1] == $5)}'
}

lvm_merge() { # ROUND: a snapshot of rlv, 10 % rewritten, lvconvert --merge -> merged
  lvm_do lvcreate -s -n rsnap -L "$((R_MB * 257 / 256 + 8))m" "$VG/rlv" || return 1
  _b_h=$(md5dev_at "/dev/mapper/$VG-rlv" 0 "$R_MB")
  dd if=/tmp/b-rw of="/dev/mapper/$VG-rlv" bs=1M oflag=direct conv=notrunc 2>/dev/null || fail "rewrite rlv"
  # rlv is not open, so the merge starts at once; lvconvert polls it every second in the
  # background, the kernel's status is read here every 0.1 s
  _b_t0=$(now)
  lvm_do lvconvert --merge -b -i 1 "$VG/rsnap" || return 1
  while ! merge_done; do
    [ "$(since "$_b_t0" | cut -d. -f1)" -lt 600 ] || { fail "lvm merge not done after 600 s"; break; }
    sleep 0.1
  done
  bench "snap.lvmerge.$1" "$(since "$_b_t0")"
  while lvm lvs --config "$LVM_CFG" "$VG/rsnap" > /dev/null 2>&1; do
    [ "$(since "$_b_t0" | cut -d. -f1)" -lt 600 ] || { fail "lvconvert --merge not finished after 600 s"; break; }
    sleep 0.1
  done
  bench "snap.lvmerge_end.$1" "$(since "$_b_t0")"
  check '[ "$(md5dev_at "/dev/mapper/$VG-rlv" 0 "$R_MB")" = "$_b_h" ]' "round $1: lvconvert --merge brought back the snapshot's image"
}

part_snap() {
  X=$(by_serial lr-disk6) || { log "snap: no seventh disk (scripts/vm-test EXTRA_DISK_MB): part skipped"; return 0; }
  for _b_n in $SNAP_NS; do :; done        # the most snapshots at once
  _b_lat_mb=$(((LAT_N * 4 + 1023) / 1024))
  [ $(((SNAP_IO_MB + _b_lat_mb) * 257 / 256 + 1)) -lt "$SNAP_MB" ] ||
    { fail "snap: $SNAP_IO_MB + $_b_lat_mb MiB of writes do not fit in a COW store of $SNAP_MB MiB"; return 1; }
  R_MB=$((SNAP_RS_MB / 10))
  _b_pv=$(((_b_n + 1) * SNAP_MB + SNAP_RS_MB + R_MB * 257 / 256 + 8 + 16))
  _b_need=$(((_b_n + 1) * SNAP_MB + 2 * SNAP_RS_MB + _b_pv + R_MB))
  _b_have=$(($(dev_sectors "$X") / 2048))
  [ "$_b_have" -ge "$_b_need" ] || { fail "snap: disk $X has $_b_have MiB, the part needs $_b_need"; return 1; }
  bench snap.max "$_b_n"
  bench snap.src_bytes $((SNAP_MB * 1048576))
  bench snap.tput_bytes $((SNAP_IO_MB * 1048576))
  bench snap.lat_n $LAT_N
  bench snap.rs_bytes $((SNAP_RS_MB * 1048576))
  bench snap.restore_bytes $((R_MB * 1048576))
  bench meta.extra_disk_mb "$_b_have"
  S_IO=$((SNAP_MB / 8))
  S_LAT=$((S_IO + SNAP_IO_MB))
  fill_zero "$X"
  dd if=/dev/urandom of=/tmp/b-rw bs=1M count="$R_MB" 2>/dev/null
  # the slices
  _b_off=0
  P_SRC=$(dm_part bench-psrc "$X" "$SNAP_MB" $_b_off) || return 1
  lio_iblock psrc "$P_SRC" > /dev/null || return 1
  _b_k=1
  while [ $_b_k -le "$_b_n" ]; do
    _b_off=$((_b_off + SNAP_MB))
    _b_d=$(dm_part "bench-pc$_b_k" "$X" "$SNAP_MB" $_b_off) || return 1
    lio_iblock "pc$_b_k" "$_b_d" > /dev/null || return 1
    _b_k=$((_b_k + 1))
  done
  _b_off=$((_b_off + SNAP_MB))
  R_SRC=$(dm_part bench-rsrc "$X" "$SNAP_RS_MB" $_b_off) || return 1
  lio_iblock rsrc "$R_SRC" > /dev/null || return 1
  _b_off=$((_b_off + SNAP_RS_MB))
  _b_d=$(dm_part bench-rtgt "$X" "$SNAP_RS_MB" $_b_off) || return 1
  lio_iblock rtgt "$_b_d" > /dev/null || return 1
  _b_off=$((_b_off + SNAP_RS_MB))
  _b_pvdev=$(dm_part bench-pv "$X" "$_b_pv" $_b_off) || return 1
  _b_off=$((_b_off + _b_pv))
  DD_R=$(dm_part bench-ddr "$X" "$R_MB" $_b_off) || return 1
  # LVM on the same disk
  lvm_do pvcreate -y "$_b_pvdev" || return 1
  lvm_do vgcreate "$VG" "$_b_pvdev" || return 1
  lvm_do lvcreate -y -n lvsrc -L "${SNAP_MB}m" "$VG" || return 1
  lvm_do lvcreate -y -n rlv -L "${SNAP_RS_MB}m" "$VG" || return 1
  lvm version | head -n 1 | while read -r _b_l; do log "snap: $_b_l"; done
  lio_iblock lvsrc "/dev/mapper/$VG-lvsrc" > /dev/null || return 1
  # both LUNs exported the same way
  lio_export psrc "$SIQN" || return 1
  lio_export lvsrc "$LIQN" || return 1
  start_iscsid
  SSD=$(initiator_login "$SIQN") || return 1
  LSD=$(initiator_login "$LIQN") || return 1
  run lr adopt block/psrc || fail "adopt psrc"
  wait_for 60 'dd if="$SSD" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null' || fail "LUN back after adoption"
  r=1
  while [ $r -le $BENCH_ROUNDS ]; do
    check 'shim_table psrc | grep -q " linear "' "round $r: psrc on linear"
    # the product and LVM take turns, N by N; who goes first alternates from round to round
    if [ $((r % 2)) -eq 1 ]; then
      snap_measure lin $r "$SSD"
      snap_measure lvlin $r "$LSD"
    else
      snap_measure lvlin $r "$LSD"
      snap_measure lin $r "$SSD"
    fi
    for _b_m in $SNAP_NS; do
      if [ $((r % 2)) -eq 1 ]; then
        snap_product "$_b_m" $r
        snap_lvm "$_b_m" $r
      else
        snap_lvm "$_b_m" $r
        snap_product "$_b_m" $r
      fi
    done
    bench "snap.dd.$r" "$(timed_dd /dev/zero "$DD_R" bs=1M count="$R_MB" oflag=direct conv=notrunc)"
    snap_restore $r
    lvm_merge $r
    r=$((r + 1))
  done
  bench "snap.dd.$r" "$(timed_dd /dev/zero "$DD_R" bs=1M count="$R_MB" oflag=direct conv=notrunc)"
  initiator_logout "$LIQN"
  initiator_logout "$SIQN"
}

# ------------------------------------------------------------------------------------------

# want PART: PART is in BENCH_PARTS
want() { case " $BENCH_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

daemon_start || exit 1
sleep 2
bench cp.rss_start_kb "$(rss_kb)"
bench meta.rounds "$BENCH_ROUNDS"
bench meta.disk_mb $(($(dev_sectors "$(disk 0)") / 2048))
bench meta.cpus "$(nproc)"
bench meta.mem_mb $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
if want copy; then
  _p_t0=$(now)
  part_copy || fail "copy part did not run to its end"
  bench part.copy_s "$(since "$_p_t0")"
fi
bench cp.rss_copy_kb "$(rss_kb)"
if want lvm; then
  _p_t0=$(now)
  part_lvm || fail "LVM part did not run to its end"
  bench part.lvm_s "$(since "$_p_t0")"
fi
if want io; then
  _p_t0=$(now)
  part_io || fail "initiator part did not run to its end"
  bench part.io_s "$(since "$_p_t0")"
fi
bench cp.rss_io_kb "$(rss_kb)"
if want control; then
  _p_t0=$(now)
  part_control || fail "control-plane part did not run to its end"
  bench part.control_s "$(since "$_p_t0")"
fi
if want snap; then
  _p_t0=$(now)
  part_snap || fail "snapshot part did not run to its end"
  bench part.snap_s "$(since "$_p_t0")"
fi
sleep 2
bench cp.rss_end_kb "$(rss_kb)"
bench cp.hwm_kb "$(hwm_kb)"
bench cp.threads "$(threads)"
lr --json jobs | grep -c '"InstanceID"' | while read -r _b_n; do bench cp.jobs_listed "$_b_n"; done
lr jobs >&9
! want io || initiator_logout "$IQN"
