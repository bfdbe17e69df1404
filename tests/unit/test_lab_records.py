"""The lab's crash records (tests/lab/host.py): a starting lab removes what a crashed lab left
and never touches a running one's."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import host


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(host, "STATE_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def scratch() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in made:
        if path.exists():
            os.rmdir(path)


def record(state_dir: Path, suffix: str, scratch: list[Path]) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"libvirt-portfwd-lab-{suffix}-root-", dir="/var/tmp"))
    scratch.append(directory)
    data = {"suffix": suffix, "host_ns": f"pfhost-{suffix}", "client_ns": f"pfclient-{suffix}"}
    (state_dir / f"{suffix}.json").write_text(json.dumps({**data, "scratch": str(directory), "domains": []}))
    return directory


def test_stale_record_is_cleaned_running_one_kept(state_dir: Path, scratch: list[Path]) -> None:
    stale_dir = record(state_dir, "stale1", scratch)
    running_dir = record(state_dir, "alive1", scratch)
    fd = os.open(state_dir / "alive1.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        host.clean_stale_labs()
    finally:
        os.close(fd)
    assert not stale_dir.exists()
    assert sorted(path.name for path in state_dir.iterdir()) == ["alive1.json", "alive1.lock"]
    assert running_dir.is_dir()


def test_record_pointing_elsewhere_removes_nothing_there(state_dir: Path, tmp_path: Path) -> None:
    """Only the lab's own directories (/var/tmp/libvirt-portfwd-lab-*) are ever removed."""
    elsewhere = tmp_path / "not-a-lab"
    elsewhere.mkdir()
    (state_dir / "odd1.json").write_text(json.dumps({"host_ns": "eth0", "scratch": str(elsewhere)}))
    host.clean_stale_labs()
    assert elsewhere.is_dir()
    assert not (state_dir / "odd1.json").exists()
