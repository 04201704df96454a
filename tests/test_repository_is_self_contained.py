"""A clone of this repository alone must work: no text file points outside it, and every
``docs/<NAME>.md`` that the code cites (with the numbered step it cites, if any) exists."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", "output", "__pycache__", ".pytest_cache"}

# Built from parts so that this file does not contain the strings it forbids.
_OUTSIDE = "shared"
FORBIDDEN = (".." + "/" + _OUTSIDE, _OUTSIDE + "/" + "flavr", _OUTSIDE + "/" + "docs")

DOC_CITATION = re.compile(r"\bdocs/([A-Za-z0-9_-]+)\.md\b")
STEP_CITATION = re.compile(r"\bdocs/([A-Za-z0-9_-]+)\.md,? step (\d+)")
CODE_SUFFIXES = (".py", ".cpp", ".h", ".sh", ".ini", ".txt", ".md")


def _skipped(relpath):
    return any(part in SKIP_DIRS for part in relpath.split("/")[:-1])


def _git_files():
    """Tracked and untracked (not ignored) files, or None when this is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def _walked_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            yield os.path.relpath(os.path.join(dirpath, name), ROOT).replace(os.sep, "/")


def repository_text_files():
    """``{relative path: text}`` of every text file of the repository (binary files skipped)."""
    paths = _git_files()
    if paths is None:
        paths = list(_walked_files())
    texts = {}
    for relpath in paths:
        path = os.path.join(ROOT, relpath)
        if _skipped(relpath) or not os.path.isfile(path):  # deleted but still in the index
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:
            continue
        try:
            texts[relpath] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


@pytest.fixture(scope="module")
def texts():
    found = repository_text_files()
    assert "README.md" in found and "util.py" in found, "the walk did not find the repository's files"
    return found


def test_no_file_refers_outside_the_repository(texts):
    offenders = [f"{path}:{number}: {line.strip()}"
                 for path, text in sorted(texts.items())
                 for number, line in enumerate(text.splitlines(), start=1)
                 if any(s in line for s in FORBIDDEN)]
    assert not offenders, "references to files outside the repository:\n" + "\n".join(offenders)


def test_every_cited_doc_exists(texts):
    cited = {}
    for path, text in texts.items():
        if path.endswith(CODE_SUFFIXES):
            for name in DOC_CITATION.findall(text):
                cited.setdefault(f"docs/{name}.md", set()).add(path)
    assert cited, "no docs/<NAME>.md citation found: the pattern is out of date"
    missing = {doc: sorted(paths) for doc, paths in cited.items() if not os.path.isfile(os.path.join(ROOT, doc))}
    assert not missing, f"cited but missing: {missing}"


def test_every_cited_step_exists(texts):
    citations = [(path, name, step) for path, text in texts.items() for name, step in STEP_CITATION.findall(text)]
    assert ("util.py", "BINARY", "6") in citations, "util.py's citation was not found: the pattern is out of date"
    for path, name, step in citations:
        with open(os.path.join(ROOT, "docs", f"{name}.md"), encoding="utf-8") as f:
            doc = f.read()
        assert re.search(rf"^{step}\. ", doc, re.MULTILINE), \
            f"{path} cites docs/{name}.md step {step}, which has no numbered step {step}"


def test_flavr_reference_shapes_are_in_the_repository():
    folder = os.path.join(ROOT, "tests", "data", "flavr")
    expected = {f"{block}_n_outputs{n}.state_dict.tsv" for block in ("unet_18", "unet_34") for n in (1, 7)}
    assert expected <= set(os.listdir(folder))
