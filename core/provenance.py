"""What a run needs to be reproduced from its logs: git commit, package versions, hardware."""
from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow", "mlflow", "optuna", "pandas")
REPO = Path(__file__).resolve().parent.parent
GENERATED = ("reports",)  # folders the suite writes itself: a changed report does not make the code "dirty"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """{'git_commit': ..., 'git_dirty': 'true'|'false', 'python': ..., 'torch': ..., 'device': ...}.

    git_dirty: tracked files differ from the commit, the suite's own outputs (GENERATED: a table run rewrites the
    committed reports, which must not mark the next table's runs as run from uncommitted code) left out."""
    info = {"git_commit": _git("rev-parse", "HEAD") or "unknown",
            "git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                       *(f":(exclude){g}" for g in GENERATED)))).lower(),
            "python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in PACKAGES:
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    import torch
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return info
