#!/usr/bin/env bash
# The CIM-XML server against real clients, on this host: `serve --dm sim` with HTTPS on a
# loopback port and a self-signed certificate, then pywbem (tests/cim/smis_client.py, in a
# virtual environment made here) and wbemcli (Debian's sblim-wbemcli).
# Closes with "N passed, N failed"; exits non-zero if anything failed.
# env: LIO_VM_DIR (where the virtual environment is kept; default /var/tmp/lio-replica-vm),
#      LIO_REPLICA_BIN (default: target/release/lio-replica, built if missing)
# shellcheck disable=SC2016 # check takes code in single quotes
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${LIO_VM_DIR:-/var/tmp/lio-replica-vm}
VENV=$W/cim-venv
PYWBEM='pywbem>=1.9,<1.10'

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() { # CODE WHAT
  if eval "$1"; then pass "$2"; else fail "$2 [failed: $1]"; fi
}

if ! "$VENV/bin/python" -c 'import pywbem' 2> /dev/null; then
  echo "cim: installing $PYWBEM into $VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "$PYWBEM"; }; then
    echo "cim: pip failed"
    exit 1
  fi
fi
BIN=${LIO_REPLICA_BIN:-$ROOT/target/release/lio-replica}
if [ -z "${LIO_REPLICA_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q) || { echo "cim: build failed"; exit 1; }
fi

T=$(mktemp -d)
DAEMON=
cleanup() {
  [ -z "$DAEMON" ] || kill "$DAEMON" 2> /dev/null
  wait 2> /dev/null
  rm -rf "$T"
}
trap cleanup EXIT

# a self-signed certificate for 127.0.0.1, as an administrator makes one
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$T/key.pem" -out "$T/cert.pem" 2> /dev/null ||
  { echo "cim: openssl failed"; exit 1; }
PASSWORD='s3cret pass:word'
printf '%s\n' "$PASSWORD" | "$BIN" cim-user add smis --file "$T/users" > /dev/null
# wbemcli takes the password in its URL and does not decode it: a plain one for it
printf 'wbemcli-pw\n' | "$BIN" cim-user add wbem --file "$T/users" > /dev/null
check '[ "$("$BIN" cim-user list --file "$T/users" | paste -sd,)" = smis,wbem ]' "cim-user add, list"
check '[ "$(stat -c %a "$T/users")" = 600 ]' "the accounts file is mode 600"

# a free loopback port
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --dm sim --configfs-root "$T/cfs" --lock-file "$T/lock" --socket "$T/sock" \
  --cim-tls-listen "127.0.0.1:$PORT" --tls-cert "$T/cert.pem" --tls-key "$T/key.pem" \
  --cim-users "$T/users" > "$T/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do
  [ -S "$T/sock" ] && "$BIN" --socket "$T/sock" jobs > /dev/null 2>&1 && break
  sleep 0.1
done
check '"$BIN" --socket "$T/sock" jobs > /dev/null' "the daemon serves"

# plain HTTP is for loopback only
check '! "$BIN" serve --dm sim --configfs-root "$T/cfs2" --lock-file "$T/lock2" --socket "$T/sock2" --cim-listen 0.0.0.0:1 --cim-users "$T/users" 2> "$T/err"' \
  "serve refuses plain HTTP on a non-loopback address"
check 'grep -q "loopback addresses only" "$T/err"' "and says why: $(head -c 200 "$T/err" | tr '\n' ' ')"

# pywbem (its own certificate checks apply only without these variables)
echo "--- pywbem"
(unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE
 "$VENV/bin/python" "$ROOT/tests/cim/smis_client.py" "https://127.0.0.1:$PORT" smis "$PASSWORD" \
   "$T/cert.pem" "$T/sock" "$BIN") > "$T/pywbem.out" 2>&1
cat "$T/pywbem.out"
read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$T/pywbem.out" | tail -n 1)
PASSED=$((PASSED + ${p:-0}))
FAILED=$((FAILED + ${f:-0}))
[ -n "${p:-}" ] || fail "pywbem: the script did not finish"

# wbemcli
echo "--- wbemcli"
if command -v wbemcli > /dev/null; then
  NS=root/cimv2/storage/iscsitarget
  U="https://wbem:wbemcli-pw@127.0.0.1:$PORT"
  WB=(wbemcli -cacert "$T/cert.pem")
  "${WB[@]}" ein "$U/$NS:CIM_StorageVolume" > "$T/ein" 2> "$T/wb.err"
  check '[ "$(grep -c LIO_StorageVolume "$T/ein")" -eq 4 ]' "wbemcli ein: four volumes ($(head -c 300 "$T/wb.err"))"
  "${WB[@]}" ei "$U/$NS:LIO_StorageVolume" > "$T/ei" 2> "$T/wb.err"
  check 'grep -q "NumberOfBlocks=131072" "$T/ei"' "wbemcli ei: disk0's NumberOfBlocks"
  VOL0=$(grep 'DeviceID="block/disk0"' "$T/ein" | head -n 1)
  VOL0=${VOL0#*/"$NS":}
  "${WB[@]}" gi "$U/$NS:$VOL0" > "$T/gi" 2> "$T/wb.err"
  check 'grep -q "ElementName=\"disk0\"" "$T/gi"' "wbemcli gi: disk0 ($(head -c 300 "$T/wb.err"))"
  SVC=$("${WB[@]}" ein "$U/$NS:CIM_StorageConfigurationService" 2> "$T/wb.err" | head -n 1)
  SVC=${SVC#*/"$NS":}
  check '[ -n "$SVC" ]' "wbemcli ein: the service ($(head -c 300 "$T/wb.err"))"
  "${WB[@]}" ain -ac CIM_HostedService "$U/$NS:$SVC" > "$T/ain" 2> "$T/wb.err"
  check 'grep -q LIO_ComputerSystem "$T/ain"' "wbemcli ain: the service's system ($(head -c 300 "$T/wb.err"))"
  VOL1=${VOL0/disk0/disk1}
  # (wbemcli takes a reference up to the next name of a parameter, but the last reference
  # swallows what follows it: CopyType goes first)
  "${WB[@]}" cm "$U/$NS:$SVC" AttachReplica.CopyType=3,SourceElement="$VOL0",TargetElement="$VOL1" \
    > "$T/cm" 2> "$T/wb.err"
  check 'grep -q "4096" "$T/cm"' "wbemcli cm AttachReplica: a job ($(head -c 300 "$T/cm" "$T/wb.err" | tr '\n' ' '))"
  for _ in $(seq 100); do
    "$BIN" --socket "$T/sock" --json relationships | grep -q '"SyncState": 6' && break
    sleep 0.1
  done
  check '"$BIN" --socket "$T/sock" --json relationships | grep -q "\"SyncState\": 6"' \
    "the relationship wbemcli made is Synchronized"
  "${WB[@]}" ei "$U/$NS:CIM_ConcreteJob" > "$T/jobs" 2> "$T/wb.err"
  check 'grep -q "JobState=7" "$T/jobs"' "wbemcli ei: the job Completed"
else
  fail "wbemcli is not installed (sblim-wbemcli)"
fi

check 'kill -0 "$DAEMON"' "the daemon is still running"
check '! grep -q panicked "$T/daemon.log"' "no panic in the daemon's log"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
