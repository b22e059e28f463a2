"""The file source's glob expansion (shipper/sidecar/globs.py): the files :mod:`glob` finds, but
never going round a symlink loop, and bounded."""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.sidecar.globs import GlobWalk

_NAMES = st.sampled_from(["a", "b", "a.log", "b.log", ".h", ".h.log", "x.log.1", "d.log"])
_TREES = st.lists(st.lists(_NAMES, min_size=1, max_size=4), min_size=1, max_size=25)
_SEGMENTS = st.sampled_from(["*", "**", "*.log", "a*", "?", ".*", "a", "d.log", "[ab]*",
                             "*.log*", "**"])
_PATTERNS = st.lists(_SEGMENTS, min_size=1, max_size=4).map("/".join)


def build(root: Path, tree: list[list[str]]) -> None:
    """Each list is a path: its last name a file, the names before it directories (a name
    that is a file already stays one: that path is dropped)."""
    for parts in tree:
        path = root
        try:
            for name in parts[:-1]:
                path = path / name
                path.mkdir(exist_ok=True)
            file = path / parts[-1]
            if not file.exists():
                file.write_text("x")
        except (FileExistsError, NotADirectoryError):
            continue


def walk(pattern: str, **limits: float) -> GlobWalk:
    found = GlobWalk([pattern], max_entries=int(limits.get("max_entries", 10**6)),
                     timeout=limits.get("timeout", 60.0))
    assert found.advance(float("inf"))
    return found


def regular_files(paths: list[str]) -> dict[tuple[int, int], set[str]]:
    out: dict[tuple[int, int], set[str]] = {}
    for path in paths:
        st_ = os.stat(path)
        if stat.S_ISREG(st_.st_mode):
            out.setdefault((st_.st_dev, st_.st_ino), set()).add(path)
    return out


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_TREES, pattern=_PATTERNS)
def test_a_walk_finds_the_regular_files_glob_finds(
        tmp_path_factory: pytest.TempPathFactory, tree: list[list[str]], pattern: str) -> None:
    root = tmp_path_factory.mktemp("tree")
    build(root, tree)
    full = str(root / pattern)
    expected = regular_files(glob.glob(full, recursive=True))
    found = walk(full)
    assert found.found.keys() == expected.keys(), (pattern, sorted(found.found))
    for key, (path, _) in found.found.items():
        assert path in expected[key]
    assert found.cuts == {}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_TREES, links=st.lists(st.tuples(_NAMES, st.integers(0, 24), st.integers(0, 24),
                                             st.booleans()), max_size=6))
def test_links_to_any_directory_never_make_a_walk_go_round(
        tmp_path_factory: pytest.TempPathFactory, tree: list[list[str]],
        links: list[tuple[str, int, int, bool]]) -> None:
    """Links (relative or absolute) to '.', to a parent, to the root of the tree, to a
    sibling: every file under the root is found once, and the walk lists each directory once
    (its entries counted once)."""
    root = tmp_path_factory.mktemp("loops")
    build(root, tree)
    real = regular_files(glob.glob(str(root / "**" / "*"), recursive=True))
    entries = sum(len(os.listdir(d)) for d, _, _ in os.walk(root))
    directories = [Path(d) for d, _, _ in os.walk(root)]
    for name, at, to, relative in links:
        where = directories[at % len(directories)]
        target = directories[to % len(directories)]
        link = where / f"link-{name}"
        if not link.exists() and not link.is_symlink():
            os.symlink(os.path.relpath(target, where) if relative else target, link)
    found = walk(str(root / "**" / "*"))
    assert real.keys() <= found.found.keys()
    assert found.entries <= entries + len(links)
    for path, _ in found.found.values():
        assert Path(path).resolve().is_relative_to(root.resolve())


def test_two_links_to_dot_and_a_loop_of_links(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.log").write_text("b")
    os.symlink(".", tmp_path / "l1")
    os.symlink(".", tmp_path / "l2")
    os.symlink("one", tmp_path / "two.log")
    os.symlink("two.log", tmp_path / "one")
    found = walk(str(tmp_path / "**" / "*.log"))
    assert sorted(path for path, _ in found.found.values()) == [
        str(tmp_path / "a.log"), str(tmp_path / "sub" / "b.log")]
    assert found.cuts == {}


def test_a_tree_deeper_than_python_recursion_is_walked(tmp_path: Path) -> None:
    deep = tmp_path
    levels = []
    for _ in range(1_200):
        deep = deep / "d"
        os.mkdir(deep)
        levels.append(deep)
    (deep / "z.log").write_text("z")
    try:
        found = walk(str(tmp_path / "**" / "*.log"))
        assert [path for path, _ in found.found.values()] == [str(deep / "z.log")]
    finally:  # (shutil.rmtree, pytest's clean-up, recurses: too deep for it)
        (deep / "z.log").unlink()
        for level in reversed(levels):
            level.rmdir()


def test_each_pattern_has_its_own_budget_and_a_cut_names_its_pattern(tmp_path: Path) -> None:
    (tmp_path / "many").mkdir()
    for i in range(100):
        (tmp_path / "many" / f"f{i:03}.log").write_text("x")
    (tmp_path / "few").mkdir()
    (tmp_path / "few" / "one.log").write_text("x")
    many, few = str(tmp_path / "many" / "*.log"), str(tmp_path / "few" / "*.log")
    found = GlobWalk([many, few], max_entries=40, timeout=60)
    assert found.advance(float("inf"))
    assert found.cuts == {many: "after 40 files and directories"}
    paths = [path for path, _ in found.found.values()]
    # what the cut listing held is matched (in the directory's order, not by name)
    assert len(paths) == 41 and str(tmp_path / "few" / "one.log") in paths


def test_a_walk_advances_in_slices_and_stops_at_its_time_bound(tmp_path: Path) -> None:
    for i in range(1_000):
        (tmp_path / f"f{i:04}.log").write_text("x")
    clock = [0.0]

    def tick() -> float:
        clock[0] += 1.0
        return clock[0]

    sliced = GlobWalk([str(tmp_path / "*.log")], max_entries=10**6, timeout=10**6,
                      clock=tick)
    slices = 1
    while not sliced.advance(clock[0] + 3):
        slices += 1
    assert slices > 1 and len(sliced.found) == 1_000 and sliced.cuts == {}
    clock[0] = 0.0
    bounded = GlobWalk([str(tmp_path / "*.log")], max_entries=10**6, timeout=5, clock=tick)
    assert bounded.advance(float("inf"))
    assert bounded.cuts == {str(tmp_path / "*.log"): "after 5s"}
    assert len(bounded.found) < 1_000


def test_fifos_and_devices_are_told_apart_from_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.log")
    os.symlink("/dev/null", tmp_path / "null.log")
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "a.log").write_text("a")
    found = walk(str(tmp_path / "*.log"))
    assert [path for path, _ in found.found.values()] == [str(tmp_path / "a.log")]
    assert sorted(found.others) == [str(tmp_path / "fifo.log"), str(tmp_path / "null.log")]
