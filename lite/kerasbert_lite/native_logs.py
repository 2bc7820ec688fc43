"""`quiet_native_logs`: the command lines without TensorFlow's and LiteRT's C++ log lines.

Importing TensorFlow prints oneDNN notices, CUDA stub lines and CPU-feature
advice, and LiteRT an XNNPACK line per interpreter, straight to file
descriptor 2 from C++. `TF_CPP_MIN_LOG_LEVEL` no longer stops them: TF 2.21
logs through absl, which writes everything logged before
`absl::InitializeLog()` to stderr whatever the level (checked: level 3 still
prints them). So the CLIs point descriptor 2 at /dev/null and give Python a
`sys.stderr` on a copy of the real one: the program's own messages, warnings,
progress bars and tracebacks still show; native lines do not. `--verbose`
skips all of it.
"""

import logging
import os
import sys

VERBOSE_FLAG = "--verbose"


def quiet_native_logs(verbose=None):
    """Silences native log lines for the rest of the process (call before importing TF).

    For the `__main__` of a command line only: it rewires the process's
    stderr, which a library or a test runner must not do. A native crash
    message (an abort in C++) is lost too: rerun with `--verbose` to see it.

    Args:
        verbose: keep everything (and TF's own level 0); None reads
            `--verbose` from sys.argv.

    Returns:
        Whether the lines were silenced.
    """
    if verbose is None:
        verbose = VERBOSE_FLAG in sys.argv[1:]
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # absl's and TensorFlow's Python loggers: errors only.
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        real = os.dup(2)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8",
                               errors="backslashreplace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (embedded, closed): leave it
        return False
    return True
