"""web/index.html in headless Chromium (MediaPipe Tasks for Web) against the Python scorer.

Runs web/check.py on the shared tiny export: the page's similarity and
sentiment numbers, computed by @mediapipe/tasks-text's own wasm runtime
and tokenizer, must match kerasbert_lite's within 0.1 (int8) and 1e-3
(float32). `.ci/run` installs chromium and the npm package; outside CI a
machine without them skips, in CI it fails.
"""

import os
import shutil
from pathlib import Path

import pytest

from test_export_fixtures import exported

WEB = Path(__file__).resolve().parents[1] / "web"


def _missing():
    if not shutil.which("chromium"):
        return "chromium is not installed (apt-get install chromium)"
    if not (WEB / "node_modules" / "@mediapipe" / "tasks-text").is_dir():
        return "@mediapipe/tasks-text is not installed (npm install in web/)"
    return None


def test_page_in_chromium_matches_python_scorer(tmp_path):
    why = _missing()
    if why and os.environ.get("CI") != "true":
        pytest.skip(why)
    assert why is None, why
    _, _, export_dir, code = exported()
    assert code == 0
    import importlib.util
    spec = importlib.util.spec_from_file_location("web_check", WEB / "check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    report = tmp_path / "report.json"
    assert check.main([str(export_dir), "--json", str(report),
                       "--screenshot", str(tmp_path / "page.png")]) == 0
    import json
    results = {r["kind"]: r for r in json.loads(report.read_text())}
    assert set(results) == {"int8", "float32"}
    assert results["float32"]["score_max_abs_diff"] <= 1e-3
    assert results["int8"]["score_max_abs_diff"] <= 0.1
    assert "Chrome" in results["int8"]["user_agent"]
    assert (tmp_path / "page.png").stat().st_size > 10_000
