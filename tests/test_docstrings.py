"""The `>>>` examples in the package docstrings run and print what they say.

Docstrings promise a runnable example on every public class; this runs each
module's examples with `doctest`, so an example that drifts from the code
(a changed default, a renamed argument) fails here instead of in a reader's
session.
"""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runs_examples(path):
    """Whether a module has an example that runs here: those needing a trained run folder or
    an export (`export.run_folder`, `export.similarity_scorer`, ...) are marked +SKIP."""
    return any(">>> " in line and "doctest: +SKIP" not in line
               for line in path.read_text(encoding="utf-8").splitlines())


# lite/ is the kerasbert-lite distribution: its package sits one folder down. experiments/
# is not installed, but its examples run too.
PACKAGES = {"kerasbert": ROOT, "training": ROOT, "export": ROOT, "experiments": ROOT,
            "kerasbert_lite": ROOT / "lite"}
MODULES = sorted(".".join(path.relative_to(base).with_suffix("").parts)
                 for package, base in PACKAGES.items()
                 for path in (base / package).glob("*.py") if _runs_examples(path))


def test_the_examples_are_found():
    # Guards the glob above: a layout change must not silently leave nothing to run.
    assert {"kerasbert.bert_config", "kerasbert.multi_head_self_attention",
            "training.metrics", "experiments.rows", "experiments.tables",
            "kerasbert_lite.model_file_error",
            "kerasbert_lite.wordpiece"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
