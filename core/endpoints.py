"""Reachability of the servers a run depends on: an MLflow tracking server (``http[s]://``) and a database
(``postgresql://``, ``mysql://``) holding an Optuna study or an MLflow store.

Checked up front with a short timeout, so that an unreachable server, a missing database driver or a wrong password
fails in seconds with one line naming the URI (password hidden), instead of after minutes of a client's retries.
Free of mlflow and optuna: ``core.tracking`` and ``core.tuning`` call ``check``.
"""
from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request

from core.config import ConfigError

TIMEOUT_S = 5.0
# a missing DB-API module -> what to install (postgresql:// uses psycopg 3 from SQLAlchemy 2.1 on)
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]' (pip install -e \".[postgres]\")", "psycopg2": "psycopg2-binary",
                   "pg8000": "pg8000", "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
                   "mysql": "mysql-connector-python"}
TIMEOUT_ARGS = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout", "mysqldb": "connect_timeout",
                "pymysql": "connect_timeout", "pg8000": "timeout"}
DATABASES = ("postgresql", "mysql", "mariadb", "mssql", "oracle")


# the password of a URL's user info: scheme://user:PASSWORD@host (the password may hold '@': the host part starts at
# the LAST '@' before the path), and a password passed as a query parameter (?password=..., &pwd=..., ...)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*:)[^\s/?#]*@")
_QUERY_SECRET = re.compile(r"([?&;](?:password|passwd|pwd|pass|secret|token|access_token|api_key|apikey)=)[^&#;\s'\"]*",
                           re.IGNORECASE)
MASK = "***"


def shown(text: str) -> str:
    """`text` (a URI, or any message holding URIs) with every password replaced by ***: the user info's
    (``postgresql://user:p@ss@host/db`` -> ``postgresql://user:***@host/db``) and query parameters named password,
    passwd, pwd, pass, secret, token, access_token, api_key or apikey (``?password=secret`` -> ``?password=***``)."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", str(text))
    return _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)


def one_line(error: BaseException) -> str:
    error = getattr(error, "orig", None) or error        # SQLAlchemy wraps the driver's error
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:400]


def check(uri: str, flag: str, timeout: float | None = None) -> None:
    """Raise a one-line ConfigError unless the server or database of `uri` answers within `timeout` seconds.

    http(s): any HTTP answer (even an error status or a TLS certificate complaint) counts as reachable.
    postgresql/mysql/...: the driver must be importable and a connection must open. Other schemes (sqlite, file
    paths, journal files) are local and not checked. `flag` names where the URI came from (e.g. '--storage').
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        check_http(uri, flag, timeout or TIMEOUT_S)
    elif scheme in DATABASES:
        check_database(uri, flag, timeout or TIMEOUT_S)


def check_http(uri: str, flag: str, timeout: float = TIMEOUT_S) -> None:
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return                                           # it answered
    except (OSError, ValueError) as e:                   # refused, timed out, unknown host (URLError is an OSError)
        if isinstance(getattr(e, "reason", e), ssl.SSLError):
            return                                       # it answered TLS; certificates are the client's business
        reason = getattr(e, "reason", e)
        raise ConfigError(f"{flag} {shown(uri)}: no answer ({one_line(reason)}; timeout {timeout:g} s); is the "
                          f"MLflow server running and reachable from this machine?") from None


def check_database(uri: str, flag: str, timeout: float = TIMEOUT_S) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool
    try:
        url = make_url(uri)
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except ModuleNotFoundError as e:
        module = (e.name or "?").split(".")[0]
        raise ConfigError(f"{flag} {shown(uri)}: its database driver '{module}' is not installed; install "
                          f"{DRIVER_PACKAGES.get(module, module)}") from None
    except Exception as e:  # noqa: BLE001 - bad URL or unknown '+driver' (ArgumentError, NoSuchModuleError)
        raise ConfigError(f"{flag} {shown(uri)}: not a database URL SQLAlchemy can open ({one_line(e)})") from None
    key, seconds = TIMEOUT_ARGS.get(dialect.driver), max(2, round(timeout))     # libpq: whole seconds, >= 2
    args = {key: seconds} if key else {}
    engine = create_engine(url, connect_args=args, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except Exception as e:  # noqa: BLE001 - every driver raises its own OperationalError
        raise ConfigError(f"{flag} {shown(uri)}: cannot connect ({one_line(e)}; timeout {seconds} s)") from None
    finally:
        engine.dispose()
