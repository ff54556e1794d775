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
#            backstore is linear (adopted), Sync-mirrored, Async (raid1 write-mostly)
#   lag.*    Async under a steady write load: the lag bound, convergence after the writes stop
#   cp.*     control plane: snapshot AttachReplica round trip vs EnumerateJobs round trip,
#            daemon VmRSS
# A check that goes wrong is a `fail` (the run's verdict), but the remaining parts still run.
# shellcheck source=../e2e/lib.sh
. "$(dirname "$0")/lib.sh"

BENCH_ROUNDS=2      # repetitions of each measurement (scripts/bench --rounds rewrites this line)
IO_MB=128           # initiator throughput: MiB written with bs=1M per measurement (at most
                    # a quarter of the LUN)
LAT_N=1000          # initiator latency: 4 KiB writes per measurement
LOAD_S=10           # Async lag: seconds of steady writes
LOAD_MB=8           # Async lag: size of the rewritten region
CP_N=7              # control plane: round trips per median

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

part_io() {
  # Async needs 8 MiB beyond the source for dm-raid's metadata: the source is a dm linear
  # over the first DISK-16 MiB of disk 2 (the same LUN in every mode)
  _b_mb=$(($(dev_sectors "$(disk 2)") / 2048 - 16))
  I_SRC=$(dm_part bench-isrc "$(disk 2)" "$_b_mb") || return 1
  I_TGT=$(disk 3)
  [ "$IO_MB" -le $((_b_mb / 4)) ] || IO_MB=$((_b_mb / 4))
  IO_SEEK=$((_b_mb / 8))
  LAG_SEEK=$((_b_mb * 3 / 4))
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
    check 'shim_table isrc | grep -q " mirror "' "round $r: LUN on mirror"
    io_measure sync $r
    [ -z "$REL" ] || run lr detach "$REL" || fail "detach $REL"
    attach_timed isrc itgt async && bench "io.async.resync.$r" "$T"
    check 'shim_table isrc | grep -q " raid raid1 .*write_mostly"' "round $r: LUN on raid1 write-mostly"
    io_measure async $r
    [ $r -ne 1 ] || part_lag
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

daemon_start || exit 1
sleep 2
bench cp.rss_start_kb "$(rss_kb)"
bench meta.rounds "$BENCH_ROUNDS"
bench meta.disk_mb $(($(dev_sectors "$(disk 0)") / 2048))
bench meta.cpus "$(nproc)"
bench meta.mem_mb $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
_p_t0=$(now)
part_copy || fail "copy part did not run to its end"
bench part.copy_s "$(since "$_p_t0")"
bench cp.rss_copy_kb "$(rss_kb)"
_p_t0=$(now)
part_io || fail "initiator part did not run to its end"
bench part.io_s "$(since "$_p_t0")"
bench cp.rss_io_kb "$(rss_kb)"
_p_t0=$(now)
part_control || fail "control-plane part did not run to its end"
bench part.control_s "$(since "$_p_t0")"
sleep 2
bench cp.rss_end_kb "$(rss_kb)"
bench cp.hwm_kb "$(hwm_kb)"
bench cp.threads "$(threads)"
lr --json jobs | grep -c '"InstanceID"' | while read -r _b_n; do bench cp.jobs_listed "$_b_n"; done
lr jobs >&9
initiator_logout "$IQN"
