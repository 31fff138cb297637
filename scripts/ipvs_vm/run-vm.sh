#!/bin/bash
# Boot the throwaway VM of build-kit.sh and run one script of WORKDIR inside it (cwd = WORKDIR, which
# the guest sees read-write at the same path; the host's / is its read-only root). Exits with the
# script's exit code (125: the VM did not get as far as running it).
#
# Usage: run-vm.sh KITDIR WORKDIR SCRIPT      env: VM_TIMEOUT (s, default 300), VM_MEM (MiB, 1024),
#                                                  VM_CPUS (2), VM_MODULES (comma list to preload)
# Always TCG: /dev/kvm on this project's machines is kvm_pvm, which stock kernels hang under.
set -u
KIT=$(realpath "${1:?kit dir}"); WORK=$(realpath "${2:?work dir}"); SCRIPT=${3:?script in the work dir}
[ -f "$WORK/$SCRIPT" ] || { echo "run-vm.sh: no $WORK/$SCRIPT" >&2; exit 2; }
rm -f "$WORK/.vm-exit-code"
timeout --kill-after=5 "${VM_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max \
  -smp "${VM_CPUS:-2}" -m "${VM_MEM:-1024}" \
  -nodefaults -no-user-config -display none -serial stdio -net none -no-reboot \
  -kernel "$KIT/vmlinux" -initrd "$KIT/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 vtwork=$WORK vtscript=$SCRIPT vtmoddir=$KIT/kroot/lib/modules/$(cat "$KIT/kernel.version") vtmods=${VM_MODULES:-}" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$WORK",mount_tag=work,security_model=none,multidevs=remap < /dev/null
rc=$(cat "$WORK/.vm-exit-code" 2>/dev/null || echo 125)
exit "$rc"
