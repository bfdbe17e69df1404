"""Row 7: ``virsh start`` / ``virsh destroy`` wall time with and without the hook, in the real lab.

``/usr/bin/python3 bench/virsh.py SNAPSHOT OUT.json [--quick]``, started by run.py as root.

One lab (tests/lab: a real libvirtd and a TCG guest in network namespaces), one guest whose
forward is set with ``virsh metadata`` as the README says, the same libvirtd and the same guest
throughout, in three phases: no hook (nothing installed), the hook installed by the snapshot's
``install.sh`` inside the lab host's root (tests/lab/rootfs.py; offline, from Debian's packages;
libvirtd restarted to find the hooks, as if installed before it started), and no hook again after
``install.sh --uninstall`` (and another restart): drift over the run shows as a difference
between the first and the third phase. Each phase: one unrecorded warm-up cycle, then
``cycles`` x (``virsh start``, 1 s, ``virsh destroy``, 0.5 s). The guest's lease stays valid
all along (it was taken once, before the first phase), so with the hook ``started`` applies the
forward at once; every cycle with the hook checks that the forward went live and went away.
Whatever happens, the installation is removed and the lab closed; other labs (the e2e tests)
may run meanwhile in namespaces and roots of their own. When the snapshot's lab does not load
or lacks what this needs, the row is reported as skipped, with the reason.
"""

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HOST_PORT, GUEST_PORT = 20080, 80
NAME = "pfbench1"


def ms(samples: list[float]) -> dict[str, Any]:
    values = sorted(s * 1000 for s in samples)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"n": len(values), "median": statistics.median(values), "min": values[0], "max": values[-1],
            "q1": q1, "q3": q3, "samples": [round(s * 1000, 2) for s in samples]}  # fmt: skip


def main(argv: list[str]) -> int:
    source, out = Path(argv[0]), Path(argv[1])
    cycles = 2 if "--quick" in argv else 5
    sys.path.insert(0, str(source))  # the snapshot's tests/lab and install.sh
    try:
        from tests.e2e import portfwd_lab
        from tests.lab import guest as guest_module
        from tests.lab.host import Lab, missing_prerequisites
        from tests.lab.proc import LabError

        missing = missing_prerequisites()
    except (ImportError, AttributeError) as exc:  # the lab's interface changed under us
        why = f"the snapshot's e2e lab (tests/lab, tests/e2e/portfwd_lab.py) does not load: {type(exc).__name__}: {exc}"
        out.write_text(json.dumps({"skipped": why}))
        return 0
    if missing:
        out.write_text(json.dumps({"skipped": f"missing {', '.join(missing)}"}))
        return 0
    lab = Lab()
    installed = False
    result: dict[str, Any] = {"cycles": cycles, "phases": {}, "timings": {}}

    def log(message: str) -> None:
        print(f"bench: 7. {message}", file=sys.stderr, flush=True)

    def forward_rules() -> int:
        save = lab.run_in_host(["iptables-save", "-t", "nat"]).stdout
        return sum(1 for line in save.splitlines() if f"--dport {HOST_PORT} " in line and "DNAT" in line)

    def cycle(hook: bool) -> tuple[float, float]:
        begin = time.monotonic()
        lab.virsh("start", NAME)
        started = time.monotonic() - begin
        if hook and forward_rules() != 1:
            raise LabError(f"hook installed, but no DNAT for port {HOST_PORT} after virsh start returned")
        time.sleep(1.0)
        begin = time.monotonic()
        lab.virsh("destroy", NAME)
        destroyed = time.monotonic() - begin
        if lab.domain_state(NAME) != "shut off":
            raise LabError(f"{NAME} is not shut off after virsh destroy returned")
        if hook and forward_rules() != 0:
            raise LabError(f"the DNAT for port {HOST_PORT} is still there after virsh destroy returned")
        time.sleep(0.5)
        return started, destroyed

    def phase(key: str, hook: bool) -> None:
        log(f"{key}: {cycles} x virsh start / virsh destroy (after one warm-up cycle)")
        cycle(hook)
        starts, destroys = [], []
        for _ in range(cycles):
            started, destroyed = cycle(hook)
            starts.append(started)
            destroys.append(destroyed)
        result["phases"][key] = {"start": ms(starts), "destroy": ms(destroys)}

    def restart_libvirtd(why: str) -> None:
        result["timings"][f"libvirtd restart ({why})"] = round(lab.restart_libvirtd(), 2)

    try:
        log("starting the lab (tests/lab: libvirtd, network default) and the guest")
        lab.start()
        spec = lab.guest_spec(NAME)
        lab.define(guest_module.domain_xml(spec, lab.image))
        metadata = portfwd_lab.portfwd_metadata(
            portfwd_lab.port_forward("tcp", [(HOST_PORT, GUEST_PORT)], address=lab.host_addr)
        )
        lab.virsh("metadata", NAME, "--uri", portfwd_lab.METADATA_URI, "--key", "portfwd", "--config",
                  "--set", metadata)  # fmt: skip
        begin = time.monotonic()
        lab.start_domain(NAME)
        lab.wait_for_lease(spec.resolved_macs()[0], timeout=90, domain=NAME)  # the lease every later start uses
        result["timings"]["first start until lease"] = round(time.monotonic() - begin, 2)
        lab.virsh("destroy", NAME)
        phase("without", hook=False)
        log("install.sh inside the lab host's root (offline), then a libvirtd restart")
        begin = time.monotonic()
        installed = True
        portfwd_lab.install(lab)  # the snapshot's checkout (its tests/installed.py names it)
        result["timings"]["install.sh"] = round(time.monotonic() - begin, 2)
        restart_libvirtd("hooks installed")
        phase("with", hook=True)
        log("install.sh --uninstall, then a libvirtd restart")
        with contextlib.redirect_stdout(sys.stderr):
            errors = portfwd_lab.uninstall(lab)
        installed = False
        if errors:
            raise LabError("; ".join(errors))
        restart_libvirtd("hooks removed")
        phase("without_again", hook=False)
    except (LabError, OSError) as exc:
        result["error"] = str(exc)
        log(f"error: {exc}")
    finally:
        errors = []
        if installed:
            with contextlib.suppress(LabError):
                lab.virsh("destroy", NAME, check=False)
            with contextlib.redirect_stdout(sys.stderr):
                errors = portfwd_lab.uninstall(lab)
        try:
            lab.close()
        except LabError as exc:
            errors.append(str(exc))
        if errors:
            result["cleanup_errors"] = errors
            log(f"cleanup: {'; '.join(errors)}")
        out.write_text(json.dumps(result, indent=1))
    return 1 if "cleanup_errors" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
