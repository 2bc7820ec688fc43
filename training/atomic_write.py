"""`atomic_write`: a file appears whole or not at all, even under kill -9."""

import os
from pathlib import Path


def atomic_write(path, write, suffix=""):
    """Writes via a temporary file in the same folder, then renames over `path`.

    `write` takes an open binary file, or (with `suffix`) a path, for savers
    such as `keras.Model.save` or `savefig` that pick the format from the
    file extension. A process killed meanwhile leaves the old `path` (or
    none) and a `.NAME.tmp*` file that the next write replaces.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda f: f.write(b"whole"))
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('whole', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        if suffix:
            write(str(tmp))
        else:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    """`atomic_write` of a UTF-8 string."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
