"""The Vagrantfile is checked with `vagrant validate --ignore-provider` (no box or provider is
downloaded: this only loads the Vagrantfile and checks its settings), and its provisioning script
is checked for what it must do."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILES = [p for p in (REPO / "Vagrantfile", REPO / "vagrant" / "multi" / "Vagrantfile") if p.exists()]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"), VAGRANT_NO_COLOR="1")
    env.pop("VAGRANT_DEFAULT_PROVIDER", None)
    return env


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (Debian package `vagrant`; scripts/setup.sh installs it)")
@pytest.mark.parametrize("vagrantfile", VAGRANTFILES, ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.parametrize("sync", ["rsync", "upload"])
def test_vagrant_validate(vagrantfile: Path, sync: str, tmp_path):
    env = _env(tmp_path)
    env["NETEMU_SYNC"] = sync
    res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=vagrantfile.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout


def test_vagrantfile_brings_up_the_lab_with_an_uplink():
    text = (REPO / "Vagrantfile").read_text()
    assert re.search(r'BOX\s*=\s*ENV\.fetch\("NETEMU_BOX", "debian/bookworm64"\)', text)
    assert 'vm.vm.network "private_network", ip: VM_IP' in text and 'VM_IP       = "192.168.1.2"' in text
    assert "./scripts/setup.sh" in text
    assert "topologies/lab.yaml" in text and '--uplink "$IFACE"' in text
    assert "--nicpromisc2" in text and "allow-all" in text          # VirtualBox: the NIC is a bridge port
    assert 'libvirt__forward_mode: "none"' in text                   # libvirt: isolated, no NAT
    assert "/etc/vbox/networks.conf" in text                         # VirtualBox's host-only ranges
    # the lab file the VM uses exists and says what the comments say
    lab = (REPO / "topologies" / "lab.yaml").read_text()
    assert "network: 192.168.1.0/24" in lab and re.search(r"^  gateway: 192\.168\.1\.1$", lab, re.M)


RENDER = """
module Vagrant; module Util; class Which; def self.which(x); nil; end; end; end
  def self.configure(v); end; end
def require(x); end
eval(File.read(ARGV[0]))
print(LAB)
"""


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (it comes with vagrant)")
def test_provisioning_script_sets_the_gateway_and_finds_the_nic(tmp_path):
    """Render the Vagrantfile's LAB script and run its sed on the real lab file: the VM's copy says
    gateway 192.168.1.2 (the laptop is .1), and the rest of the file is unchanged."""
    res = subprocess.run(["ruby", "-e", RENDER, str(REPO / "Vagrantfile")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    script = res.stdout
    assert "ip -o -4 addr show to 192.168.1.2/32" in script
    sed = next(line for line in script.splitlines() if line.startswith("sed "))
    sed = sed.split(" > ")[0].replace("/opt/netemu/", str(REPO) + "/")
    out = subprocess.run(["sh", "-c", sed], capture_output=True, text=True, check=True).stdout
    lab = (REPO / "topologies" / "lab.yaml").read_text()
    assert re.search(r"^  gateway: 192\.168\.1\.2$", out, re.M)
    assert [l for l in out.splitlines() if "gateway" not in l] == [l for l in lab.splitlines() if "gateway" not in l]
    subprocess.run(["sh", "-n", "-c", script], check=True)  # valid shell
