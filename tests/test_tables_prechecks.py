"""What can be known before training is checked before training, once per table (issue 22): a batch of more
identities than the training split has, a one-identity training split, a split whose queries cannot be matched.
They were found per row after data loading, each as a traceback; now one `error:` line, exit 2, nothing written
(no store, no checkpoint, no report)."""
from __future__ import annotations

import pytest

from core.cli import main
from tests.helpers import TINY_TABLE, error_line, set_args, write_mars


@pytest.fixture
def table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def run(root, *flags, rows=("1",)) -> str:
        base = ["--rows", *rows, "--epochs", "1", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                *set_args({**TINY_TABLE, "data.ids_per_batch": 2})]
        assert main("table1", base + ["--data-root", str(root), *flags]) == 2
        line = error_line(capsys.readouterr().err)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "MARS") == []   # no store, runs, reports
        return line
    return run


def test_more_identities_per_batch_than_the_training_split_has(table, tiny_synthetic_root):
    line = table(tiny_synthetic_root, "--set", "data.ids_per_batch=400")
    assert "key 'data.ids_per_batch' is 400 but the training split of synthetic (MARS layout) has only" in line
    assert "--set data.ids_per_batch=" in line


def test_a_one_identity_training_split_stops_every_row_once(table, tmp_path):
    root = write_mars(tmp_path / "MARS", train=[(5, 1, 3), (5, 2, 2)])
    line = table(root, "--dataset", "mars", "--set", "model.pretrained=false", rows=("1", "2"))
    assert "the training split has 1 identity; expected at least 2" in line


def test_queries_without_a_match_from_another_camera(table, tmp_path):
    root = write_mars(tmp_path / "MARS", test=[(3, 1, 2), (3, 1, 1), (9, 2, 2)], query=[1])
    line = table(root, "--dataset", "mars", "--set", "model.pretrained=false")
    assert "none of its 1 queries has a gallery tracklet of its identity from another camera" in line
