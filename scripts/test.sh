#!/bin/sh
# Set up everything on a fresh Debian 12 machine (as root) and run the whole test suite:
# fast unit tests, then privileged end-to-end tests that build real labs.
#
# The IPVS tests boot a software-emulated VM that keeps one CPU busy for about 100 s while building
# nothing on the host; they run beside the unit tests (pure CPU on the other one) instead of after
# them, which keeps the whole suite within its 15 minutes. Their output follows the unit tests'.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
# the tests also check the Vagrantfile and draw graphs: tools a lab itself does not need
NETEMU_EXTRA_PACKAGES="vagrant graphviz qemu-system-x86 busybox-static cpio" "$REPO/scripts/setup.sh"
cd "$REPO"
PYTEST="$REPO/.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=300"
VM_TESTS="tests/e2e/test_ipvs_vm.py tests/e2e/test_ipvs_vm_lab.py"
VM_DIR=$(mktemp -d /tmp/netemu-vmtests.XXXXXX)

# shellcheck disable=SC2086
$PYTEST --basetemp="$VM_DIR/tmp" $VM_TESTS "$@" >"$VM_DIR/log" 2>&1 &
vm_pid=$!
trap 'kill "$vm_pid" 2>/dev/null || true; rm -rf "$VM_DIR"' EXIT
rc=0
keep() {  # a part's exit status; 5 is pytest's "no test selected" (a -k that picks from other parts)
    [ "$1" -eq 0 ] || [ "$1" -eq 5 ] || rc=$1
}
unit_rc=0
$PYTEST tests/unit "$@" || unit_rc=$?
keep "$unit_rc"
vm_rc=0
wait "$vm_pid" || vm_rc=$?
echo "--- the IPVS VM tests (run beside the unit tests)"
cat "$VM_DIR/log"
keep "$vm_rc"
ignore=""
for t in $VM_TESTS; do ignore="$ignore --ignore=$t"; done
e2e_rc=0
# shellcheck disable=SC2086
$PYTEST tests/e2e $ignore "$@" || e2e_rc=$?
keep "$e2e_rc"
exit "$rc"
