#!/bin/sh
# Install what netemu needs on Debian 12 (run as root): kernel tools, servers the built-in
# workloads can use, and a virtualenv with netemu in it. Safe to run again.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${NETEMU_VENV:-$REPO/.venv}

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (sudo $0)" >&2; exit 1; }

APT_PACKAGES="iproute2 iptables nftables ipvsadm ipset conntrack arping tcpdump libpcap0.8
  bind9-dnsutils curl procps util-linux kmod python3 python3-venv python3-pip
  redis-server nginx-light openssl libcap2-bin frr ${NETEMU_EXTRA_PACKAGES:-}"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq -o DPkg::Lock::Timeout=600 || true
  # policy-rc.d keeps Debian from starting redis/nginx system services: netemu runs them inside pods only
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; fi
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $missing >/dev/null
fi
# FRR: netemu runs its own instances in the lab's routers and nodes (MetalLB's BGP mode), never the system's
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now frr >/dev/null 2>&1 || true
elif [ -x /etc/init.d/frr ]; then
  /etc/init.d/frr stop >/dev/null 2>&1 || true
  update-rc.d frr disable >/dev/null 2>&1 || true
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[test]"

# sudo's secure_path has /usr/local/bin: `sudo netemu` works from anywhere
ln -sf "$VENV/bin/netemu" /usr/local/bin/netemu
echo "setup: done ($("$VENV/bin/netemu" --version))"
