"""`progress`: one progress bar for every long phase, or none where no one watches.

The trainer's epochs show tqdm bars; evaluation, test prediction, export
conversion, verification, `--pairs` scoring and `SentenceModel` calls use
this helper so they look the same. tqdm draws the bar when it is installed
(kerasbert installs it; kerasbert-lite does not require it), else
`keras.utils.Progbar` when Keras is already imported (importing it here
would cost TensorFlow's start-up), else nothing. A bar is drawn only on a
terminal: in a log file or a CI run its redraws would be noise.
"""

import os
import sys

# KERASBERT_PROGRESS=1 forces bars (e.g. through a pager), 0 turns them off.
ENV_VAR = "KERASBERT_PROGRESS"


class Progress:
    """A bar over `total` steps: `update(n)`, `write(line)`, `close()`; a context manager.

    Disabled, every method does nothing (but `write` still prints), so
    callers need no branches.

    Args:
        total: steps in all (examples, batches, files).
        desc: the label before the bar, e.g. "scoring pairs".
        unit: what a step is ("pair", "file").
        enabled: draw the bar; None: when stderr is a terminal (or as
            `$KERASBERT_PROGRESS` says) and `total >= min_total`.
        min_total: below this many steps no bar (a short list is done
            before a bar would help).
        file: where the bar goes (default: sys.stderr).

    Example:
    >>> with Progress(3, "steps", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> bar.count, bar.shown
    (3, False)
    """

    def __init__(self, total, desc, unit="it", enabled=None, min_total=1, file=None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.file = file or sys.stderr
        self.count = 0
        if enabled is None:
            enabled = _wanted(self.file) and self.total >= min_total
        self._bar = _make_bar(self.total, desc, unit, self.file) if enabled else None
        self.shown = self._bar is not None

    def update(self, n=1):
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def write(self, line, file=None):
        """Prints `line` (stdout by default) above the bar without breaking it."""
        file = file or sys.stdout
        if self._bar is not None and hasattr(self._bar, "write"):
            self._bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total, desc, unit="it", enabled=None, min_total=1):
    """`Progress(total, desc, ...)`: see there."""
    return Progress(total, desc, unit=unit, enabled=enabled, min_total=min_total)


def bar_log(bar, log):
    """`log`, or, while `bar` is drawn, a print above the bar (so lines do not break it)."""
    return lambda line: bar.write(line) if bar.shown else log(line)


def _wanted(file):
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class _TqdmBar:
    def __init__(self, total, desc, unit, file):
        from tqdm import tqdm
        self._tqdm = tqdm
        # Left on screen when done: the last state says how long the phase took.
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=file, dynamic_ncols=True)

    def update(self, n):
        self._bar.update(n)

    def write(self, line, file):
        self._tqdm.write(line, file=file)

    def close(self):
        self._bar.close()


class _KerasBar:
    def __init__(self, total, desc, unit, file):
        import keras
        print(desc, file=file, flush=True)
        self._bar = keras.utils.Progbar(total, unit_name=unit)

    def update(self, n):
        self._bar.add(n)

    def close(self):
        pass


def _make_bar(total, desc, unit, file):
    try:
        return _TqdmBar(total, desc, unit, file)
    except ImportError:
        pass
    if "keras" in sys.modules:
        return _KerasBar(total, desc, unit, file)
    return None
