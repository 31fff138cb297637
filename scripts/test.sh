#!/bin/sh
# Set up everything on a fresh Debian 12 machine (as root) and run the whole test suite:
# fast unit tests, then privileged end-to-end tests that build real labs.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
# the tests also check the Vagrantfile and draw graphs: tools a lab itself does not need
NETEMU_EXTRA_PACKAGES="vagrant graphviz qemu-system-x86 busybox-static cpio" "$REPO/scripts/setup.sh"
cd "$REPO"
exec "$REPO/.venv/bin/python" -m pytest -q -p no:cacheprovider --timeout=300 tests/unit tests/e2e "$@"
