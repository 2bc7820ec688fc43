"""`error_line`: one line for a command-line tool's `error: ...` from an exception."""


def error_line(exc):
    """`<path>: <what>` for an `OSError` that names a file, else the exception's text.

    The library's own errors already start with the file they are about;
    Python's `OSError`s read "[Errno 20] Not a directory: 'a/b'", which this
    turns into the same form.

    Example:
    >>> error_line(NotADirectoryError(20, "Not a directory", "a-file/sub"))
    'a-file/sub: Not a directory'
    >>> error_line(ValueError("sts-dev.csv:4: similarity 'x' is not a number"))
    "sts-dev.csv:4: similarity 'x' is not a number"
    """
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        return ": ".join(names + [exc.strerror]) if names else exc.strerror
    text = str(exc)
    return text if text else type(exc).__name__
