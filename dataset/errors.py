"""The one exception type of the data package, and cheap existence checks that raise it."""
import os


class DatasetError(ValueError):
    """A missing or malformed data set; the message is one line naming the offending path."""


def one_line(error):
    """``error``'s message as one line: a DataLoader worker re-raises it with the worker's traceback
    above it ("Caught DatasetError in DataLoader worker process 0. ... DatasetError: <message>")."""
    lines = str(error).strip().splitlines()
    if len(lines) <= 1:
        return str(error).strip()
    last = lines[-1]
    kind = f"{type(error).__module__}.{type(error).__name__}: "
    for prefix in (kind, f"{type(error).__name__}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


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
