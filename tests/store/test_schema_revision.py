"""The store's cheap schema check: the head revisions read from the migration files without running
them are Alembic's own, and a file whose revisions are not plain literals is left to Alembic."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from certfleet.store import _engine
from certfleet.store._engine import MIGRATIONS, _alembic_config, _revision_of, migration_heads


def test_the_heads_read_from_the_files_are_alembics() -> None:
    alembic = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
    assert set(migration_heads()) == alembic
    assert len(alembic) == 1


def test_every_shipped_migration_says_its_revisions_plainly() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        said = _revision_of(path)
        assert said is not None, path.name
        revision = script.get_revision(said[0])
        assert revision is not None
        assert said[1] == revision._normalized_down_revisions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('revision = "0001_a"\ndown_revision = None\n', ("0001_a", ())),
        ('revision: str = "0002_b"\ndown_revision: str | None = "0001_a"\n', ("0002_b", ("0001_a",))),
        ('revision = "0003_m"\ndown_revision = ("0002_b", "0002_c")\n', ("0003_m", ("0002_b", "0002_c"))),
        (
            '"""doc"""\nimport os\nrevision = "0004_d"\nbranch_labels = None\ndown_revision = "0003_m"\n',
            ("0004_d", ("0003_m",)),
        ),
        ('revision = "0005_e"\n', None),  # no down_revision: not said plainly
        ("revision = NAME\ndown_revision = None\n", None),
        ('revision = "0006_f"\ndown_revision = f"{x}"\n', None),
        ('revision = "0007_g"\ndown_revision = 7\n', None),
        ("revision = (\n", None),
    ],
)
def test_revision_of_a_file(tmp_path: Path, source: str, expected: tuple[str, tuple[str, ...]] | None) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _revision_of(path) == expected


def test_heads_of_a_branching_history_and_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = "a"\n')
    (versions / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    monkeypatch.setattr(_engine, "MIGRATIONS", tmp_path)
    monkeypatch.setattr(_engine, "_alembic_heads", lambda: frozenset({"asked alembic"}))
    migration_heads.cache_clear()
    try:
        assert migration_heads() == {"b", "c"}
        (versions / "d.py").write_text('revision = "d"\ndown_revision = ("b", "c")\n')
        migration_heads.cache_clear()
        assert migration_heads() == {"d"}
        (versions / "e.py").write_text('revision = "e"\ndown_revision = compute()\n')
        migration_heads.cache_clear()
        assert migration_heads() == {"asked alembic"}
    finally:
        migration_heads.cache_clear()
