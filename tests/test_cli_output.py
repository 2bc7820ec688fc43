"""What the command lines print: no native log lines unless --verbose, progress bars on a terminal.

The log-line checks run a fresh interpreter: silencing rewires the process's
descriptor 2, which must not happen inside pytest.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerasbert_lite.progress import Progress

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
import sys, warnings
from kerasbert_lite.native_logs import quiet_native_logs
quiet_native_logs({verbose})
import tensorflow as tf
from ai_edge_litert import interpreter
tf.constant(1.0) + 1.0
warnings.warn("a python warning")
print("error: our own line", file=sys.stderr)
raise SystemExit(3)
"""


def _run(code, *args):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_native_log_lines_are_hidden_and_ours_are_not():
    quiet = _run(SNIPPET.format(verbose=False))
    assert quiet.returncode == 3
    lines = quiet.stderr.splitlines()
    # Only Python's own output is left: the warning and our line.
    assert "UserWarning: a python warning" in quiet.stderr
    assert [line for line in lines if "UserWarning" not in line] == ["error: our own line"], \
        quiet.stderr
    verbose = _run(SNIPPET.format(verbose=True))
    assert verbose.returncode == 3
    # TensorFlow's C++ start-up lines (oneDNN, CUDA stub, CPU features) are back.
    assert len(verbose.stderr.splitlines()) > len(lines) + 1, verbose.stderr
    assert verbose.stderr.splitlines()[-1] == "error: our own line"


def test_every_cli_takes_verbose(tmp_path):
    for module in ("training.run", "export.run", "export.score", "kerasbert_lite"):
        done = _run(f"import runpy, sys; sys.argv = ['x', '--help']; "
                    f"runpy.run_module({module!r}, run_name='__main__')")
        assert done.returncode == 0 and "--verbose" in done.stdout, (module, done.stderr)
    # A traceback-free error line still reaches the terminal with the lines silenced.
    not_a_model = tmp_path / "x.tflite"
    not_a_model.write_text("not a model")
    done = _run("import runpy, sys; sys.argv = ['x'] + sys.argv[1:]; "
                "runpy.run_module('export.score', run_name='__main__')",
                str(not_a_model), "a", "b")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {not_a_model}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_progress_draws_only_when_asked_or_on_a_terminal(monkeypatch):
    monkeypatch.delenv("KERASBERT_PROGRESS", raising=False)
    log = io.StringIO()  # not a terminal: no bar
    with Progress(10, "scoring", file=log) as bar:
        bar.update(10)
    assert (bar.shown, bar.count, log.getvalue()) == (False, 10, "")
    with Progress(10, "scoring", file=log, enabled=True) as bar:
        bar.update(4)
        bar.update(6)
    assert bar.shown and "scoring" in log.getvalue() and "10/10" in log.getvalue()
    monkeypatch.setenv("KERASBERT_PROGRESS", "1")
    assert Progress(5, "x", file=io.StringIO()).shown
    assert not Progress(5, "x", file=io.StringIO(), min_total=6).shown  # too short to bother
    monkeypatch.setenv("KERASBERT_PROGRESS", "0")
    assert not Progress(5, "x", file=io.StringIO()).shown


@pytest.mark.parametrize("model", ["model_int8.tflite", "embedder_int8.tflite"])
def test_pairs_scoring_shows_progress(export_dir, tmp_path, capsys, monkeypatch, model):
    # The text-in (TF) and the ids-in (kerasbert_lite) scorers both report each model call.
    from export.score import main
    from kerasbert_lite.__main__ import PAIRS_FOR_A_BAR

    pairs = tmp_path / "pairs.tsv"
    n = PAIRS_FOR_A_BAR + 10
    pairs.write_text("".join(f"the cat sat {i}\ta dog ran {i}\n" for i in range(n)))
    monkeypatch.setenv("KERASBERT_PROGRESS", "1")
    assert main([str(export_dir / model), "--pairs", str(pairs), "--out",
                 str(tmp_path / "scores.tsv"), "--batch-size", "64"]) == 0
    err = capsys.readouterr().err
    assert f"scoring {pairs}" in err and f"{2 * n}/{2 * n}" in err
    assert len((tmp_path / "scores.tsv").read_text().splitlines()) == n + 1
