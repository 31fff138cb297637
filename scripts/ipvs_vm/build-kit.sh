#!/bin/bash
# Build the throwaway-VM kit for IPVS tests (see netemu/vmtest): Debian's kernel, which has ip_vs as
# modules, booted under QEMU/TCG with a tiny busybox initramfs; the guest uses the host's / (read-only,
# over 9p) as its root, so every tool of the host runs inside it.
#
# Usage: build-kit.sh KITDIR            (as root; needs qemu-system-x86 busybox-static cpio kmod python3)
#
# KITDIR gets: vmlinux (uncompressed ELF: QEMU boots it through the PVH entry, skipping the XZ
# decompression that is slow under TCG), initrd.gz (busybox + the 9p/virtio modules), kroot/ (the
# kernel package, extracted and depmod'ed: the guest bind-mounts its module tree so the kernel autoloads
# ip_vs, veth, ip_set, ... on demand), kernel.version, and kit.ok once complete. Safe to run again:
# a complete kit is left as it is.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: build-kit.sh KITDIR}")
case "$OUT" in /tmp/*|/run/*|/dev/*|/proc/*|/sys/*)
  echo "build-kit.sh: $OUT is hidden inside the guest (fresh tmpfs there): choose another directory" >&2; exit 2;;
esac
for tool in busybox cpio depmod modprobe dpkg-deb apt-get python3 flock; do
  command -v "$tool" >/dev/null || { echo "build-kit.sh: $tool is missing (apt-get install qemu-system-x86 busybox-static cpio kmod)" >&2; exit 2; }
done
mkdir -p "$OUT"; cd "$OUT"
exec 9>"$OUT/.lock"; flock 9   # one builder at a time (parallel test runs share the kit)
# KIT_FORMAT: bump when the initramfs changes, so that cached kits are rebuilt (kit.ok holds it)
KIT_FORMAT=3
[ "$(cat kit.ok 2>/dev/null)" = "$KIT_FORMAT" ] && [ -f vmlinux ] && [ -f initrd.gz ] && { echo "kit ready: $OUT (kernel $(cat kernel.version))"; exit 0; }

PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
if [ -z "$PKG" ]; then
  apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 || true
  PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}' || true)
fi
[ -n "$PKG" ] || { echo "build-kit.sh: apt does not know linux-image-amd64 (no Debian package lists?)" >&2; exit 3; }
KV=${PKG#linux-image-}

if [ ! -f kernel.ok ] || [ "$(cat kernel.version 2>/dev/null)" != "$KV" ]; then
  rm -rf kroot ./*.deb kernel.ok
  # apt-get download drops privileges to _apt when it can write here; a root-only dir is fine too
  if ! apt-get download "$PKG" >/dev/null 2>dl.err; then   # stale package lists: refresh once
    apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 || true
    apt-get download "$PKG" >/dev/null 2>dl.err || { cat dl.err >&2; exit 3; }
  fi
  rm -f dl.err
  dpkg-deb -x "${PKG}"_*.deb kroot
  rm -f "${PKG}"_*.deb
  depmod -b kroot "$KV"
  echo "$KV" > kernel.version
  touch kernel.ok
fi

python3 - "kroot/boot/vmlinuz-$KV" vmlinux <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
start = data.find(b'\xfd7zXZ\x00')
if start < 0:
    sys.exit("no XZ payload in " + sys.argv[1])
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor().decompress(data[start:]))
PY

rm -rf initrd
mkdir -p initrd/bin initrd/sbin initrd/usr/bin initrd/usr/sbin initrd/proc initrd/sys initrd/dev initrd/host "initrd/lib/modules/$KV"
cp "$(command -v busybox)" initrd/bin/busybox
# crc32c_generic first: busybox modprobe ignores softdeps (libcrc32c needs a crc32c provider)
for m in crc32c_generic virtio_pci 9pnet_virtio 9p; do modprobe -d kroot -S "$KV" --show-depends "$m"; done |
  awk '$1=="insmod"{print $2}' | sort -u | while read -r f; do
    rel=${f#"$OUT"/kroot/}; mkdir -p "initrd/$(dirname "$rel")"; cp "$f" "initrd/$rel"; done
cp "kroot/lib/modules/$KV"/modules.builtin "kroot/lib/modules/$KV"/modules.builtin.modinfo \
   "kroot/lib/modules/$KV"/modules.order "initrd/lib/modules/$KV/"
depmod -b initrd "$KV"

cat > initrd/init <<'INIT'
#!/bin/busybox sh
# PID 1 of the throwaway VM: mount the host's / (read-only) and the work dir (read-write, same path as
# on the host), switch to the host root and run one script of the work dir; print its exit code.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
WORK= SCRIPT= MODDIR= MODS=
for a in $(cat /proc/cmdline); do
  case "$a" in
    vtwork=*) WORK=${a#vtwork=};; vtscript=*) SCRIPT=${a#vtscript=};;
    vtmoddir=*) MODDIR=${a#vtmoddir=};; vtmods=*) MODS=${a#vtmods=};;
  esac
done
KV=$(uname -r)
for m in crc32c_generic virtio_pci 9pnet_virtio 9p; do modprobe $m; done
fail() { echo "VM-INIT-FAILED: $*"; echo "VM-EXIT rc=125"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /host || fail "9p root mount"
# the module tree, for the modprobes below (the initramfs's own /sbin/modprobe)
if [ -n "$MODDIR" ] && [ -d "/host$MODDIR" ]; then MODSRC="/host$MODDIR"
elif [ -d /host/lib/modules/$KV ]; then MODSRC=/host/lib/modules/$KV
else fail "no module tree for $KV"; fi
mount --bind "$MODSRC" /lib/modules/$KV
for m in $(echo "$MODS" | tr , ' '); do modprobe $m || echo "modprobe $m failed"; done
for d in proc sys dev; do mount --bind /$d /host/$d; done
for d in tmp run; do mount -t tmpfs $d /host/$d; done
mkdir -p /host/run/netns /host/run/lock /host/dev/shm /host/dev/pts
mount -t tmpfs shm /host/dev/shm; mount -t devpts pts /host/dev/pts
[ -n "$WORK" ] || fail "no vtwork= on the command line"
mkdir -p "/host$WORK" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work "/host$WORK" || fail "9p work mount"
echo "VM-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
# The kernel's module autoload runs from PID 1's root, the host tree after switch_root, which has no
# modules for this kernel: point it at a helper that runs busybox's modprobe in a small tree on /run.
mkdir -p /host/run/vmroot/bin "/host/run/vmroot/lib/modules/$KV"
cp /bin/busybox /host/run/vmroot/bin/busybox
mount --bind "$MODSRC" "/host/run/vmroot/lib/modules/$KV" || fail "module tree for the new root"
printf '#!/run/vmroot/bin/busybox sh\nexec /run/vmroot/bin/busybox chroot /run/vmroot /bin/busybox modprobe "$@"\n' > /host/run/vm-modprobe
chmod +x /host/run/vm-modprobe
echo /run/vm-modprobe > /proc/sys/kernel/modprobe
# the host's tree becomes the real root (switch_root, not chroot): a process that enters a mount
# namespace with setns lands at that namespace's root, which must be the host tree, as on a host
export WORK SCRIPT
exec switch_root /host /bin/sh -c 'cd "$WORK" && /bin/sh "./$SCRIPT"; rc=$?; echo "$rc" > "$WORK/.vm-exit-code"; sync;
  echo "VM-EXIT rc=$rc uptime=$(cut -d" " -f1 /proc/uptime)"; exec /bin/busybox poweroff -f'
INIT
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc --quiet | gzip -1) > initrd.gz
rm -rf initrd
echo "$KIT_FORMAT" > kit.ok
echo "kit ready: $OUT (kernel $KV)"
