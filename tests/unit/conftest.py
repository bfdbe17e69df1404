"""Fixtures for the pure unit tests: the libvirt XML corpus, parametrised by file.

The corpus is part of the repository (``tests/corpus/libvirt-xml``: libvirt's own test data,
LGPL-2.1-or-later; its README says where it comes from). A missing corpus fails the corpus
tests; it never skips them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "libvirt-xml"

# fixture name -> (corpus subdirectory, file pattern)
CORPUS_FILES = {
    "domain_file": ("domains", "*.xml"),
    "network_file": ("networks", "*.xml"),
    "status_file": ("extras/nssdata", "*.status"),
}


def corpus_files(subdir: str, pattern: str) -> list[Path]:
    """The corpus files, sorted; a placeholder that fails the test when there are none."""
    files = sorted((CORPUS / subdir).glob(pattern))
    return files or [CORPUS / subdir / f"(no {pattern} in {CORPUS / subdir})"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, (subdir, pattern) in CORPUS_FILES.items():
        if name in metafunc.fixturenames:
            files = corpus_files(subdir, pattern)
            metafunc.parametrize(name, files, ids=[f.name for f in files])


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus directory; fails (does not skip) when it is missing."""
    if not CORPUS.is_dir():
        pytest.fail(f"libvirt XML corpus not found at {CORPUS}", pytrace=False)
    return CORPUS
