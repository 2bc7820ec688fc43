"""Checks web/index.html in headless Chromium against the Python scorer.

Serves web/ and an export's device files on 127.0.0.1, opens the page in
Debian's `chromium --headless=new` with `?check=`, and compares what
MediaPipe Tasks computed in the browser (its own tokenizer and runtime) with
`kerasbert_lite.SimilarityScorer` on the same files: similarity within 0.1
for int8 and 1e-3 for float32, sentiment probabilities within 0.05 / 1e-3.

Usage:
    python web/check.py EXPORT_DIR [--kinds int8 float32] [--screenshot shot.png]
        [--data-dir DIR] [--json report.json]

Needs `npm install` in web/ (the @mediapipe/tasks-text package) and
chromium. Exit status 0 when every kind agrees, 1 on a disagreement, 2 when
something to run it with is missing.
"""

import argparse
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WEB = Path(__file__).resolve().parent
TOLERANCE = {"int8": (0.1, 0.05), "float32": (1e-3, 1e-3)}  # (score, probability)
SENTENCES = [
    "A man is playing a guitar.", "The movie was an absolute delight from start to finish!",
    "I didn't like it at all.", "Two dogs run across the grassy field.",
    "How do I learn to cook Italian food at home?", "What is the best way to learn cooking?",
    "Un café, s'il vous plaît.", "naïve résumé", "这部电影很好看。", "Great 👍 🎸",
    "مرحبا بالعالم", "שלום עולם", "Привет, мир!", "İstanbul straße ＡＢＣ x² ﬁne", "zero\u200bwidth",
    " ".join(["a remarkably long sentence that keeps going"] * 40), "a" * 10_000,
]
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def cases(data_dir=None, sts_pairs=40):
    pairs = [[a, b] for a, b in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1])]
    pairs += [[s, s] for s in SENTENCES[:3]]
    if data_dir is not None:
        import csv
        with open(Path(data_dir) / "sts-dev.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))[:sts_pairs]
        pairs += [[r["sentence1"], r["sentence2"]] for r in rows]
    return {"pairs": pairs, "sentences": SENTENCES}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(root):
    """An HTTP server on 127.0.0.1 for `root`; POST /results lands in server.results."""
    results, arrived = {}, threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".mjs": "text/javascript", ".js": "text/javascript",
                          ".wasm": "application/wasm"}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            results.update(json.loads(body or b"{}"))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.results, server.arrived = results, arrived
    return server


def stage(export_dir, root, data_dir):
    """Lays out the site: the page, the npm package, the models, the cases."""
    package = WEB / "node_modules" / "@mediapipe" / "tasks-text"
    if not package.is_dir():
        raise SystemExit(f"error: {package} missing: run `npm install` in {WEB}")
    for name in ("index.html", "app.js"):
        shutil.copy(WEB / name, root / name)
    (root / "node_modules" / "@mediapipe").mkdir(parents=True)
    (root / "node_modules" / "@mediapipe" / "tasks-text").symlink_to(package)
    (root / "models").mkdir()
    for f in Path(export_dir).glob("*_*.tflite"):
        if f.name.startswith(("embedder_", "sentiment_")):
            (root / "models" / f.name).symlink_to(f.resolve())
    c = cases(data_dir)
    (root / "cases.json").write_text(json.dumps(c, ensure_ascii=False), encoding="utf-8")
    return c


def run_chromium(chromium, url, profile, extra=(), timeout=180):
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def check_kind(server, chromium, kind, c, export_dir, profile, timeout):
    from kerasbert_lite import SimilarityScorer
    server.results.clear()
    server.arrived.clear()
    url = f"http://127.0.0.1:{server.server_port}/index.html?kind={kind}&check=cases.json"
    browser = run_chromium(chromium, url, profile)
    try:
        if not server.arrived.wait(timeout):
            raise SystemExit(f"error: no results from the page within {timeout}s ({url})")
    finally:
        browser.kill()
        browser.wait()
    page = dict(server.results)
    if "error" in page:
        raise SystemExit(f"error: the page failed: {page['error']}")
    a, b = zip(*c["pairs"])
    want = SimilarityScorer(Path(export_dir) / f"embedder_{kind}.tflite").score_batch(a, b)
    _, probs = SimilarityScorer(Path(export_dir) / f"sentiment_{kind}.tflite").sentiment(
        c["sentences"])
    score_diff = np.abs(np.array(page["scores"]) - want)
    over = [list(c["pairs"][i]) for i in np.flatnonzero(score_diff > TOLERANCE[kind][0])]
    prob_diff = np.abs(np.array(page["sentiments"]) - probs).max(-1)
    score_tol, prob_tol = TOLERANCE[kind]
    return {"kind": kind, "pairs": len(want), "sentences": len(probs),
            "score_max_abs_diff": float(score_diff.max()),
            "score_worst_pair": list(c["pairs"][int(score_diff.argmax())]),
            "pairs_over_tolerance": over,
            "probability_max_abs_diff": float(prob_diff.max()),
            "browser_ms_per_pair": round(page["pair_ms"], 2), "user_agent": page["user_agent"],
            "passed": bool(score_diff.max() <= score_tol and prob_diff.max() <= prob_tol),
            "tolerance": {"score": score_tol, "probability": prob_tol}}


def screenshot(chromium, server, path, profile):
    url = f"http://127.0.0.1:{server.server_port}/index.html?kind=int8"
    browser = run_chromium(chromium, url, profile, extra=[
        f"--screenshot={Path(path).resolve()}", "--window-size=900,1000",
        "--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw"])
    browser.wait(timeout=180)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python web/check.py", description=__doc__.split("\n")[0])
    parser.add_argument("export_dir", help="an export folder with embedder_*/sentiment_* files")
    parser.add_argument("--kinds", nargs="+", default=["int8", "float32"],
                        choices=["int8", "float32"])
    parser.add_argument("--data-dir", help="also check the first 40 sts-dev pairs")
    parser.add_argument("--screenshot", help="write a PNG of the page (int8)")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    export_dir = Path(args.export_dir)
    missing = [f"{export_dir}/{m}_{k}.tflite" for k in args.kinds for m in ("embedder", "sentiment")
               if not (export_dir / f"{m}_{k}.tflite").is_file()]
    if missing:
        print(f"error: missing {', '.join(missing)} (export with `python -m export.run`)",
              file=sys.stderr)
        return 2
    if not Path(args.chromium).is_file():
        print(f"error: no chromium at {args.chromium} (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kerasbert_web_") as tmp:
        root = Path(tmp) / "site"
        root.mkdir()
        c = stage(export_dir, root, args.data_dir)
        server = serve(root)
        try:
            reports = []
            for kind in args.kinds:
                started = time.perf_counter()
                report = check_kind(server, args.chromium, kind, c, export_dir,
                                    Path(tmp) / f"profile_{kind}", args.timeout)
                report["seconds"] = round(time.perf_counter() - started, 1)
                reports.append(report)
                print(f"{kind}: {'PASS' if report['passed'] else 'FAIL'}  score max |diff| "
                      f"{report['score_max_abs_diff']:.2e} over {report['pairs']} pairs, "
                      f"sentiment max |diff| {report['probability_max_abs_diff']:.2e} over "
                      f"{report['sentences']} sentences (tolerance {report['tolerance']}); "
                      f"browser {report['browser_ms_per_pair']} ms/pair")
            if args.screenshot:
                screenshot(args.chromium, server, args.screenshot, Path(tmp) / "profile_shot")
                print(f"wrote {args.screenshot}")
        finally:
            server.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(r["passed"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
