"""The state files (state.py): root's only, since intents and waiting records hold domain XML."""

import os
import stat
from pathlib import Path

from libvirt_portfwd import state
from libvirt_portfwd.paths import Paths

UUID = "6f1d0c9a-6a3b-4c55-9a3e-2f0b6f6a1c01"


def test_intents_records_and_the_index_are_readable_by_root_only(tmp_path: Path) -> None:
    paths = Paths(root=str(tmp_path))
    state.write_intent(paths, UUID, state.APPLY, "web1", b"<domain><graphics passwd='secret'/></domain>")
    state.write(paths, UUID, {"name": "web1", "status": state.WAITING, "backend": "", "claims": []})
    for path in (paths.intent(UUID), paths.record(UUID), paths.index):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    for directory in (paths.intent_dir, paths.state_dir):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert paths.has_intent(UUID) and list(state.pending_intents(paths)) == [UUID]
    assert state.read_index(paths)[UUID]["status"] == state.WAITING
