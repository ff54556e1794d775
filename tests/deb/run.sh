#!/usr/bin/env bash
# The Debian package: built by scripts/build-deb, lintian-clean of errors, then installed on
# this machine, upgraded to a newer build (the administrator's /etc/default/lio-replica kept),
# removed and purged, checking what an administrator would see at each step. Where systemd
# does not run (CI machines, containers) the maintainer scripts only enable the units; the
# daemon under systemd is the Vagrant suite's part.
# Closes with "N passed, N failed"; exits non-zero if anything failed.
# shellcheck disable=SC2016 # check takes code in single quotes
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
export DEBIAN_FRONTEND=noninteractive

PASSED=0
FAILED=0
check() { # CODE WHAT
  if eval "$1"; then PASSED=$((PASSED + 1)); echo "PASS: $2"; else FAILED=$((FAILED + 1)); echo "FAIL: $2 [failed: $1]"; fi
}

if dpkg-query -W -f='${Status}' lio-replica 2> /dev/null | grep -q installed; then
  echo "deb: lio-replica is already installed on this machine; not touching it"
  echo "0 passed, 1 failed"
  exit 1
fi

DEB=$(scripts/build-deb | tail -n 1)
check '[ -f "$DEB" ]' "scripts/build-deb made $DEB"
lintian --fail-on error --tag-display-limit 0 "$DEB" > /tmp/lintian.out 2>&1
check '[ $? -eq 0 ]' "lintian finds no error ($(grep -c '^E:' /tmp/lintian.out) E:, $(grep -c '^W:' /tmp/lintian.out) W:)"
dpkg-deb -c "$DEB" | awk '{print $6}' > /tmp/deb.list
for f in ./usr/sbin/lio-replica ./lib/systemd/system/lio-replica.service \
  ./lib/systemd/system/lio-replica-restore.service ./etc/default/lio-replica \
  ./usr/share/man/man8/lio-replica.8.gz ./usr/share/man/man8/lio-replica-attach.8.gz \
  ./usr/share/bash-completion/completions/lio-replica ./usr/share/zsh/vendor-completions/_lio-replica \
  ./usr/share/doc/lio-replica/copyright; do
  check 'grep -qx "$f" /tmp/deb.list' "the package holds $f"
done

"${SUDO[@]}" dpkg -i "$DEB" > /tmp/dpkg.out 2>&1
check '[ $? -eq 0 ]' "dpkg -i installs it ($(tail -n 1 /tmp/dpkg.out))"
check '/usr/sbin/lio-replica --version | grep -q "^lio-replica "' "/usr/sbin/lio-replica runs"
check 'grep -q "^ExecStart=/usr/sbin/lio-replica serve \$LIO_REPLICA_OPTS$" /lib/systemd/system/lio-replica.service' \
  "the unit runs /usr/sbin/lio-replica with the options of /etc/default/lio-replica"
check '[ -L /etc/systemd/system/multi-user.target.wants/lio-replica.service ]' "lio-replica.service is enabled"
check '[ -L /etc/systemd/system/multi-user.target.wants/lio-replica-restore.service ]' "lio-replica-restore.service is enabled"
check '[ "$(stat -c %a /var/lib/lio-replica)" = 700 ]' "the state directory exists, mode 700"
check 'zcat /usr/share/man/man8/lio-replica-attach.8.gz | grep -q "copy\\\\-type"' "the attach man page documents --copy-type"
check 'grep -q -- "--cim-tls-listen" /usr/share/bash-completion/completions/lio-replica' "bash completes serve's options"

# an upgrade keeps the administrator's options
echo 'LIO_REPLICA_OPTS="--cim-listen 127.0.0.1:5988"' | "${SUDO[@]}" tee /etc/default/lio-replica > /dev/null
DEB2=$(scripts/build-deb --version 0.1.0+upgrade1 | tail -n 1)
"${SUDO[@]}" dpkg -i --force-confold "$DEB2" > /tmp/dpkg.out 2>&1
check '[ $? -eq 0 ]' "dpkg -i upgrades it"
check '[ "$(dpkg-query -W -f="\${Version}" lio-replica)" = 0.1.0+upgrade1-1 ]' "the newer version is installed"
check 'grep -q "5988" /etc/default/lio-replica' "the changed /etc/default/lio-replica is kept"

"${SUDO[@]}" touch /var/lib/lio-replica/state.json
"${SUDO[@]}" dpkg -r lio-replica > /tmp/dpkg.out 2>&1
check '[ $? -eq 0 ] && [ ! -e /usr/sbin/lio-replica ]' "dpkg -r removes the program"
check '[ -f /etc/default/lio-replica ]' "the configuration stays until a purge"
"${SUDO[@]}" dpkg -P lio-replica > /tmp/dpkg.out 2>&1
check '[ $? -eq 0 ] && [ ! -e /etc/default/lio-replica ]' "dpkg -P purges the configuration"
check '[ -f /var/lib/lio-replica/state.json ]' "a purge keeps the saved device state (it may still describe serving LUNs)"
check 'grep -q "kept" /tmp/dpkg.out' "and says so"
"${SUDO[@]}" rm -rf /var/lib/lio-replica
check '[ ! -e /etc/systemd/system/multi-user.target.wants/lio-replica.service ]' "no unit is left enabled"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
