"""fsutil: whole-file atomic replacement, exact modes, private keys 0600 from birth, no leftovers."""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from certfleet.errors import InputError
from certfleet.fsutil import atomic_write, ensure_private_dir, write_private

# An audit hook sees the temp file at the moments that matter: when its mode is first set (right
# after it was created) and when it is renamed over the target. Hooks cannot be removed, so this
# one only acts while a test has put a callback here.
_WATCH: list[Callable[[str, tuple[Any, ...]], None]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _WATCH and event in {"os.chmod", "os.rename"}:
        _WATCH[0](event, args)


sys.addaudithook(_hook)


@pytest.fixture
def watch() -> Iterator[list[Callable[[str, tuple[Any, ...]], None]]]:
    yield _WATCH
    _WATCH.clear()


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_private_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "privkey.pem"
    write_private(path, b"key")
    assert mode_of(path) == 0o600
    assert path.read_bytes() == b"key"
    # replacing a wider file does not inherit its mode
    public = tmp_path / "was-public.pem"
    public.write_bytes(b"old")
    public.chmod(0o644)
    write_private(public, b"key")
    assert mode_of(public) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_atomic_write_sets_exactly_the_mode(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "cert.pem"
    atomic_write(path, b"cert", mode=mode)
    assert mode_of(path) == mode


def test_a_private_file_is_0600_from_birth(tmp_path: Path, watch: list[Any]) -> None:
    seen: dict[str, int] = {}

    def on_event(event: str, args: tuple[Any, ...]) -> None:
        if event == "os.chmod" and isinstance(args[0], int):
            # fchmod on the new temp file: what it was created with, before we set it
            seen["birth"] = stat.S_IMODE(os.fstat(args[0]).st_mode)
        elif event == "os.rename":
            src = Path(os.fsdecode(args[0]))
            seen["before_rename"] = mode_of(src)
            seen["size_before_rename"] = src.stat().st_size
            assert src.parent == tmp_path  # same folder, so the rename is atomic

    watch.append(on_event)
    old = os.umask(0)  # the most permissive umask: only the creation mode stands between the key and others
    try:
        write_private(tmp_path / "privkey.pem", b"k" * 1000)
    finally:
        os.umask(old)
    assert seen == {"birth": 0o600, "before_rename": 0o600, "size_before_rename": 1000}


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    for i in range(50):
        atomic_write(tmp_path / "a.pem", f"{i}".encode())
        write_private(tmp_path / "b.pem", f"{i}".encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem", "b.pem"]
    assert (tmp_path / "a.pem").read_bytes() == b"49"


def test_a_failure_before_the_switch_leaves_the_old_file_and_no_temp(tmp_path: Path, watch: list[Any]) -> None:
    path = tmp_path / "cert.pem"
    atomic_write(path, b"old content")

    class Crash(Exception):
        pass

    def crash(event: str, args: tuple[Any, ...]) -> None:
        if event == "os.rename":
            raise Crash("power cut")

    watch.append(crash)
    with pytest.raises(Crash):
        atomic_write(path, b"new content")
    watch.clear()
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_writing_over_a_folder_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "cert.pem"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(InputError) as info:
        atomic_write(target, b"data")
    assert str(target) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem"]
    assert (target / "inside").read_bytes() == b"x"


def test_a_missing_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write: No such file or directory") as info:
        atomic_write(tmp_path / "nowhere" / "cert.pem", b"data")
    assert info.value.source == str(tmp_path / "nowhere" / "cert.pem")
    assert info.value.exit_code == 2


def test_replace_is_atomic_for_readers(tmp_path: Path) -> None:
    path = tmp_path / "fullchain.pem"
    a, b = b"A" * 400_000, b"B" * 600_000
    atomic_write(path, a)
    stop = threading.Event()
    bad: list[int] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()  # a reader that opens by name, as a server reloading does
            reads[0] += 1
            if data not in (a, b):
                bad.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            atomic_write(path, b if i % 2 == 0 else a)
    finally:
        stop.set()
        thread.join()
    assert reads[0] > 0
    assert bad == []


def test_an_open_reader_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    atomic_write(path, b"old")
    before = path.stat().st_ino
    with path.open("rb") as held:
        atomic_write(path, b"new")
        assert held.read() == b"old"  # the old file was replaced, not rewritten in place
    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != before


def test_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.pem"
    elsewhere.write_bytes(b"untouched")
    link = tmp_path / "current.pem"
    link.symlink_to(elsewhere)
    atomic_write(link, b"new")
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert elsewhere.read_bytes() == b"untouched"


@pytest.mark.parametrize(
    ("data", "mode", "error"),
    [("text", 0o644, TypeError), (b"x", 0o100644, ValueError)],
)
def test_misuse_is_a_programming_error(tmp_path: Path, data: Any, mode: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        atomic_write(tmp_path / "f", data, mode=mode)
    assert list(tmp_path.iterdir()) == []


def test_ensure_private_dir(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        nested = ensure_private_dir(tmp_path / "a" / "b")
        assert nested == tmp_path / "a" / "b"
        assert mode_of(nested) == 0o700
        # an existing, wider folder is tightened
        wide = tmp_path / "wide"
        wide.mkdir(mode=0o755)
        ensure_private_dir(str(wide))
        assert mode_of(wide) == 0o700
    finally:
        os.umask(old)
    file = tmp_path / "file"
    file.write_bytes(b"")
    with pytest.raises(InputError, match="not a folder"):
        ensure_private_dir(file)
