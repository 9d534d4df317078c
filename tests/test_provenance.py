"""core.provenance: what a run logs to be reproduced; git_dirty ignores the suite's own generated reports."""
import subprocess

from core import provenance


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_git_dirty_counts_code_changes_but_not_rewritten_reports(tmp_path, monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "table1.md").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "c")
    monkeypatch.setattr(provenance, "REPO", tmp_path)

    def dirty():
        provenance.provenance.cache_clear()
        return provenance.provenance()["git_dirty"]

    try:
        assert dirty() == "false"
        (tmp_path / "reports" / "table1.md").write_text("new\n")     # a table run rewrote its report
        assert dirty() == "false"
        (tmp_path / "code.py").write_text("x = 2\n")
        assert dirty() == "true"
    finally:
        provenance.provenance.cache_clear()
