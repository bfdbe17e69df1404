"""The namespace host of conftest.Lab with the project installed by install.sh, as an admin
installs it, inside a sandbox of the host namespace (tests/sandbox.py): the hooks and the CLI
are the installed ones, and libvirt's files (network status, leases) are the sandbox's."""

import subprocess
from pathlib import Path

from tests.installed import CLI, HOOK, HOOK_ENV, INSTALL_SH, NETWORK_HOOK
from tests.netns.conftest import Lab
from tests.netns.fakehost import GUEST_ADDRESS, GUEST_MAC
from tests.sandbox import Sandbox


class InstalledLab(Lab):
    def create(self) -> None:
        super().create()
        self.scratch = self.root
        self.sandbox = Sandbox(self.scratch.parent / "sandbox", self.host)
        self.root = self.sandbox.path("/")  # Lab writes libvirt's files and reads records here
        self.install()
        self.write_network()
        self.write_leases({GUEST_MAC: GUEST_ADDRESS})
        self.write_config("lease_wait: 20\n")

    def destroy(self) -> None:
        if hasattr(self, "sandbox"):
            self.sandbox.close()
            self.root = self.scratch
        super().destroy()

    def install(self) -> subprocess.CompletedProcess[str]:
        proc = self.sandbox.run(str(INSTALL_SH), timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def inside(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.sandbox.run(*argv)
        assert not check or proc.returncode == 0, f"{argv}: {proc.stderr}"
        return proc

    def hook_argv(self, name: str, operation: str, sub: str = "begin", extra: str = "-") -> list[str]:
        return self.sandbox.argv(*HOOK_ENV, str(HOOK), name, operation, sub, extra)

    def network_hook(self, network: str, operation: str) -> subprocess.CompletedProcess[str]:
        return self.sandbox.run(*HOOK_ENV, str(NETWORK_HOOK), network, operation, "begin", "-", input="<network/>")

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = self.sandbox.run(str(CLI), *args, timeout=60)
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    def installed(self, path: Path) -> Path:
        return self.sandbox.path(path)
