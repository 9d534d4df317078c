"""Every frame of a dataset is checked before anything trains: a file, not empty, with an image header and end.

``check_frames(paths, listed_in)`` opens each frame and reads its first and last bytes (no decoding): a JPEG starts
with FF D8 FF and ends with FF D9 (allowing up to TAIL_BYTES of padding after it), a PNG starts with its 8-byte
signature and ends with its IEND chunk. A zero-byte file, a truncated copy, a listed frame that is a folder, a
broken symlink or a symlink to something that is not an image (anywhere, inside the tree or not) is refused in one
DatasetError naming the first such file, why, and how many there are. Full decoding is ``python -m core.data.check
--decode`` (slow on real datasets); this check reads two small pieces of each file: its cost on a MARS-sized tree is
measured by ``python -m core.bench data`` (docs/reliability.md).
"""
from __future__ import annotations

import os
from typing import Iterable

from core.data.base import DatasetError

JPEG_HEAD, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_HEAD, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
TAIL_BYTES = 32          # bytes read at the end of a frame (a JPEG may carry a little padding after FF D9)


def frame_problem(path: str) -> str | None:
    """Why `path` is not a readable JPEG/PNG frame (header and end checked, nothing decoded), or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return f"cannot open ({e.strerror or e})"
    try:
        head = os.read(fd, len(PNG_HEAD))
        if not head:
            return "empty file (0 bytes)"
        size = os.lseek(fd, 0, os.SEEK_END)
        tail = os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES))
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    finally:
        os.close(fd)
    if head.startswith(JPEG_HEAD):
        return None if JPEG_END in tail else f"truncated JPEG ({size} bytes, no end-of-image marker FF D9)"
    if head == PNG_HEAD:
        return None if tail.endswith(PNG_END) else f"truncated PNG ({size} bytes, no IEND chunk)"
    return f"not a JPEG or PNG image ({size} bytes starting {head[:4].hex(' ')})"


def check_frames(paths: Iterable[str], listed_in: str) -> int:
    """Raise DatasetError naming the first bad frame of `paths` (and how many are bad) unless every one passes
    frame_problem; `listed_in` names where the frames come from (a name list, a split folder). Returns the count."""
    bad: list[tuple[str, str]] = []
    n = 0
    for n, path in enumerate(paths, 1):
        problem = frame_problem(path)
        if problem is not None:
            bad.append((path, problem))
    if bad:
        path, problem = bad[0]
        raise DatasetError(f"{path}: {problem}; expected a JPEG frame ({len(bad)} of {n} frames of {listed_in} "
                           f"are not readable images{', first shown' if len(bad) > 1 else ''})")
    return n
