"""The one exception type of the data package, and cheap existence checks that raise it."""
import os


class DatasetError(ValueError):
    """A missing or malformed data set; the message is one line naming the offending path."""


def require_dir(path, what):
    """Return ``path`` if it is a folder, else raise DatasetError naming it as ``what``."""
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path} (is the data root right?)")
    return path


def require_file(path, what):
    """Return ``path`` if it is a file, else raise DatasetError naming it as ``what``."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path} (is the data root right?)")
    return path


def require_data_root(name, data_root):
    """Return ``data_root`` if one was given, else raise DatasetError saying that ``name`` needs it."""
    if data_root is None:
        raise DatasetError(f"data set '{name}' needs a data root: pass the folder that holds it")
    return os.path.expanduser(data_root)
