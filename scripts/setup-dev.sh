#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for the tests, benchmarks and demo:
#   - the Debian prosody package (the XMPP server the tests start privately on loopback ports),
#   - a virtualenv in .venv with this package (editable), its test extras and the ROS 2 wheels.
# Idempotent: a second run only checks. Needs root or sudo for apt, only when prosody is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup-dev: need root (or sudo) to run: $*" >&2; return 1; fi
}

# apt_install PKG...: Debian packages, non-interactively, without starting their services: a
# policy-rc.d that refuses every start exists for the time of the install (unless one was
# there already, which is left alone). `apt-get update` runs once per setup run. Returns
# apt-get's status, so that each caller decides whether a failure is fatal.
apt_updated=0
apt_install() {
  local created_policy=0 rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d' ||
      return 1
    created_policy=1
  fi
  if [ "$apt_updated" = 0 ]; then
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then apt_updated=1; else rc=$?; fi
  fi
  if [ "$rc" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "$@" >/dev/null || rc=$?
  fi
  if [ "$created_policy" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}

# --- ice (issue 11): Debian's coturn, the TURN server the ICE tests run on loopback ports they
# pick (test/coturn_server.py). Its system service is kept from starting (policy-rc.d while
# installing): a TURN relay on 3478 is nobody's business.
if ! command -v turnserver >/dev/null 2>&1; then
  echo "setup-dev: installing coturn (Debian package)"
  apt_install coturn || echo "setup-dev: coturn not installed; the TURN tests will skip" >&2
fi

# --- lan (issue 15): Debian's avahi-daemon and avahi-utils, the standard DNS-SD stack the
# link-local interop test runs inside its own namespace (private D-Bus, eth0 of the namespace
# only). Their services are kept from starting: nothing here should announce on this machine's
# real network. Root only: without root the namespace tests skip anyway.
if [ "$(id -u)" = 0 ] && { ! command -v avahi-browse >/dev/null || [ ! -x /usr/sbin/avahi-daemon ]; }; then
  echo "setup-dev: installing avahi-daemon, avahi-utils (link-local interop test)"
  apt_install avahi-daemon avahi-utils dbus util-linux
fi

if ! command -v prosody >/dev/null 2>&1 && [ ! -x /usr/bin/prosody ]; then
  echo "setup-dev: installing prosody (Debian package)"
  # Keep the package's system service from starting: the tests run their own instance on
  # loopback ports, and a stray server on 5222/5269 is nobody's business.
  apt_install prosody lua-sec lua-unbound || apt_install prosody
fi

# --- netlab (issue 11): the simulated internet of the NAT-matrix tests, `jitsi-teleop bench
# --nat` and `demo --network`. iproute2 for namespaces and veth, iptables (NAT, the NFQUEUE
# delay, statistic loss), conntrack (NAT reboots), coturn (the TURN relay; its service is kept
# from starting: the harness runs its own inside a namespace), libnetfilter-queue-dev and a
# compiler to build `netfilterqueue` from PyPI. Root only: without root the tests skip.
if [ "$(id -u)" = 0 ] && { ! command -v iptables >/dev/null || ! command -v conntrack >/dev/null ||
    ! command -v turnserver >/dev/null || ! command -v ip >/dev/null || ! command -v ss >/dev/null ||
    [ ! -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || ! command -v gcc >/dev/null; }; then
  echo "setup-dev: installing netlab packages (iptables, conntrack, coturn, libnetfilter-queue-dev)"
  apt_install iproute2 iptables conntrack coturn libnetfilter-queue-dev gcc libc6-dev
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-dev: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat setup.py requirements-ros-wheels.txt | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  echo "setup-dev: installing Python packages into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q -e ".[test,bench]" -r requirements-ros-wheels.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import jitsi_teleop, dexter_driver, rclpy, aiortc, slixmpp" 
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# netlab: the NFQUEUE delay program's binding, where its C library is installed
if [ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] &&
    ! "$VENV/bin/python" -c "import netfilterqueue" 2>/dev/null; then
  echo "setup-dev: installing netfilterqueue (netlab delay/jitter)"
  "$VENV/bin/python" -m pip install -q "netfilterqueue==1.1.0" 2>&1 | grep -v "^WARNING: Location" || true
fi

# --- distros (issue 12): a second venv with the ROS 2 Kilted wheels, so that `make test` runs the
# ROS-marked tests on Kilted as well as on Jazzy (rclpy and the message packages differ between
# distros). Same package, editable; no bench extras. KILTED_VENV= (empty) skips it.
KILTED_VENV=${KILTED_VENV-.venv-kilted}
if [ -n "$KILTED_VENV" ]; then
  if [ ! -x "$KILTED_VENV/bin/python" ]; then
    echo "setup-dev: creating $KILTED_VENV (ROS 2 Kilted wheels)"
    "$PYTHON" -m venv "$KILTED_VENV"
  fi
  kstamp="$KILTED_VENV/.installed-$(cat setup.py requirements-ros-kilted.txt | sha1sum | cut -c1-12)"
  if [ ! -e "$kstamp" ]; then
    echo "setup-dev: installing Python packages into $KILTED_VENV"
    "$KILTED_VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 \
      | grep -v "^WARNING: Location" || true
    "$KILTED_VENV/bin/python" -m pip install -q -e ".[test]" -r requirements-ros-kilted.txt 2>&1 \
      | grep -v "^WARNING: Location" || true
    "$KILTED_VENV/bin/python" -c "import jitsi_teleop, dexter_driver, rclpy, aiortc, slixmpp"
    rm -f "$KILTED_VENV"/.installed-*
    touch "$kstamp"
  fi
fi
echo "setup-dev: ready ($VENV${KILTED_VENV:+, $KILTED_VENV})"
