"""No password is ever printed (issue 22, case 5): every form a URL can carry one in is masked by
core.endpoints.shown, and every error line of the commands goes through it."""
from __future__ import annotations

import pytest

from core import endpoints
from core.cli import main, tune_main
from tests.helpers import error_line

SECRET = "s3cr3t"


@pytest.mark.parametrize("uri, expect", [
    ("postgresql://user:s3cr3t@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:p@ss@host/db", "postgresql://user:***@host/db"),              # '@' inside the password
    ("postgresql+psycopg://user:p@s:s@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
    ("mysql://root:s3cr3t@10.0.0.1:3306/optuna?charset=utf8", "mysql://root:***@10.0.0.1:3306/optuna?charset=utf8"),
    ("postgresql://host/db?user=u&password=s3cr3t", "postgresql://host/db?user=u&password=***"),
    ("postgresql://host/db?sslmode=require&PASSWORD=s3cr3t&x=1", "postgresql://host/db?sslmode=require&PASSWORD=***&x=1"),
    ("http://host:5000/?token=s3cr3t", "http://host:5000/?token=***"),
    ("mysql://h/db?pwd=s3cr3t;x=1", "mysql://h/db?pwd=***;x=1"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),                                  # nothing to hide: unchanged
    ("postgresql://user@host/db", "postgresql://user@host/db"),
])
def test_every_password_form_is_masked(uri, expect):
    assert endpoints.shown(uri) == expect


def test_passwords_inside_a_message_are_masked():
    text = "cannot connect to 'postgresql://u:p@ss@h/db' nor 'mysql://h/d?password=x@y' (OperationalError)"
    out = endpoints.shown(text)
    assert "p@ss" not in out and "ss@h" not in out and "x@y" not in out
    assert out == "cannot connect to 'postgresql://u:***@h/db' nor 'mysql://h/d?password=***' (OperationalError)"


def test_refused_storage_and_tracking_uris_never_print_the_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # an unknown scheme: refused by the project's own check, the URI in the message
    assert tune_main(["--storage", f"foo://u:{SECRET}@h/db?password={SECRET}", "--n-trials", "1"]) == 2
    line = error_line(capsys.readouterr().err)
    assert SECRET not in line and "u:***@h" in line
    assert main("table1", ["--rows", "1", "--tracking-uri", f"foo://u:p@{SECRET}@h/x?password={SECRET}"]) == 2
    line = error_line(capsys.readouterr().err)
    assert SECRET not in line and "foo://u:***@h/x?password=***" in line
    # a server that does not answer (nothing listens on port 9 of 127.0.0.1): the reachability check's message
    assert main("table1", ["--rows", "1", "--tracking-uri", f"http://u:p@{SECRET}@127.0.0.1:9/?token={SECRET}"]) == 2
    line = error_line(capsys.readouterr().err)
    assert SECRET not in line and "127.0.0.1:9" in line

