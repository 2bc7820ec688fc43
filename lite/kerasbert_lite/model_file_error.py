"""`ModelFileError`: a model file that cannot be used, with the file named."""


class ModelFileError(ValueError):
    """A missing, unreadable, corrupted or unsuitable model file.

    The message always starts with the file's path, so a command-line tool
    can print it as is instead of a TensorFlow stack trace.

    Args:
        path: the offending file.
        reason: what is wrong with it.

    Example:
    >>> str(ModelFileError("m.tflite", "no such file"))
    'm.tflite: no such file'
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
