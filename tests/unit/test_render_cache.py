"""The render cache (render.py): same template, stamps and context give the text rendered
before; any change of them renders again."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from libvirt_portfwd import render
from tests.conftest import PYTHON, REPO


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    monkeypatch.setattr(render, "template_dir", lambda: str(templates))
    render.environment.cache_clear()
    render._stamps.cache_clear()
    render.use_cache(str(tmp_path / "run"))
    yield templates
    monkeypatch.setattr(render, "_cache_dir", None)
    render.environment.cache_clear()
    render._stamps.cache_clear()


def test_a_hit_returns_the_text_rendered_before_and_a_change_renders_again(cache: Path) -> None:
    first = render.render("config.yaml", unused=("a", 1))
    entries = list((cache.parent / "run" / "render").iterdir())
    assert len(entries) == 1 and entries[0].read_text().endswith(first)
    assert render.render("config.yaml", unused=("a", 1)) == first
    assert list((cache.parent / "run" / "jinja2").glob("__jinja2_*.cache"))  # compiled: beside it, not in /tmp
    render.render("config.yaml", unused=("a", 2))  # another context: another entry
    assert len(list((cache.parent / "run" / "render").iterdir())) == 2

    (cache / "config.yaml").write_text("edited {{ unused[1] }}\n")  # the template changed
    render.environment.cache_clear()
    render._stamps.cache_clear()
    assert render.render("config.yaml", unused=("a", 1)) == "edited 1\n"


def test_an_entry_for_another_key_is_a_miss(cache: Path) -> None:
    render.render("config.yaml", unused=1)
    [entry] = (cache.parent / "run" / "render").iterdir()
    entry.write_text("someone else's key\0forged rules\n")
    assert "forged" not in render.render("config.yaml", unused=1)


def test_the_cache_is_pruned_when_full(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "CACHE_LIMIT", 4)
    for i in range(9):
        render.render("config.yaml", unused=i)
    assert len(list((cache.parent / "run" / "render").iterdir())) <= 4


def test_a_second_process_renders_from_the_cache_without_importing_jinja2(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from libvirt_portfwd import render\n"
        f"render.use_cache({str(tmp_path)!r})\n"
        "text = render.render('config.yaml', unused=7)\n"
        "print('jinja2' in sys.modules, len(text))\n"
    )
    runs = [subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, cwd=REPO, check=True) for _ in "ab"]
    (imported_first, length_first), (imported_second, length_second) = (run.stdout.split() for run in runs)
    assert imported_first == "True" and imported_second == "False"
    assert length_first == length_second != "0"


def test_large_renders_and_uncached_calls_are_not_kept(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    render.render("config.yaml", cached=False, unused=1)
    monkeypatch.setattr(render, "CACHE_ENTRY_MAX", 10)
    render.render("config.yaml", unused=2)
    assert not (cache.parent / "run" / "render").exists()
