"""Files written whole or not at all: readers (a watching page, a resumed run, the next start) never
see half of one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """write(f) into a temporary file beside `path`, then rename it to `path`. If write or the rename
    raises, `path` is as it was and the temporary file is gone."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
