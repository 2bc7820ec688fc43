"""The EM export's figures in results/README.md, written from the files that hold them.

`results/em/export_manifest.json` (what `python -m export.run` verified: parity
with Keras, int8 against float32, sizes) and `results/em/score_latency.json`
(what `benchmarks/score_latency.py --json` timed) become markdown tables, so
the README cannot drift from them. The section also says whether the export
holds the trainings that EM's member rows publish: a member retrained and
republished after the export makes its figures those of other weights.

    from experiments.export_figures import export_section
    print(export_section("results"))
"""

import json
import re
from pathlib import Path

from experiments.tables import format_score
from kerasbert_lite.tasks import benchmark_task
from training import run_folder as rf
from training.run_folder import training_version

MIB = 2 ** 20
_PARITY_FORMATS = (("saved_model", "SavedModel"), ("tflite_float32", "TFLite float32, text in"),
                   ("tflite_ids_float32", "TFLite float32, ids in"))
_SIGNATURES = ("sentiment", "paraphrase", "similarity", "embed")
# (manifest key, label, digits) of each output's int8 metric; a Pearson r gets 4 digits.
_INT8_METRICS = tuple((t.export_metric, t.column, 4 if t.label == "score" else 3)
                      for t in map(benchmark_task, ("sentiment", "paraphrase", "similarity")))
_SIZES = (("saved_model", "SavedModel"), ("float32", "float32 TFLite"), ("int8", "int8 TFLite"),
          ("ids_float32", "ids-in float32"), ("ids_int8", "ids-in int8"))


def _num(value, digits=3, sign=False):
    """The results table's score format (`.486`), signed and with a typographic minus."""
    return ("+" if sign and value >= 0 else "") + format_score(value, digits).replace("-", "−")


def _trainings(manifest, names, results_dir):
    """One line: does the export hold the trainings its member rows (`names`) publish?"""
    em = json.loads((Path(results_dir) / "em" / rf.SUMMARY).read_text())
    if set(names) != set(em["members"]):
        return (f"**Not the current EM:** the export's members are {', '.join(names)}; "
                f"EM's are {', '.join(em['members'])}.")
    unknown = [n for n, m in zip(names, manifest["members"]) if not m.get("training")]
    if unknown:
        return ("**Which trainings these are is not recorded** (the manifest predates the "
                f"`training` field) for {', '.join(f'`{n}`' for n in unknown)}.")
    other = [n for n, m in zip(names, manifest["members"])
             if m["training"] != training_version(Path(results_dir) / n)]
    if other:
        return ("**Not the trainings the rows publish:** retrained since this export: "
                f"{', '.join(f'`{n}`' for n in other)}.")
    return "The members hold the very trainings their rows publish (`training` in the manifest)."


def _parity(parity):
    lines = ["| max abs diff vs Keras | " + " | ".join(_SIGNATURES) + " |",
             "|---|" + "---|" * len(_SIGNATURES)]
    for key, label in _PARITY_FORMATS:
        diffs = parity["max_abs_diff"].get(key)
        if diffs:
            lines.append(f"| {label} | " + " | ".join(f"{diffs[s]:.1e}" for s in _SIGNATURES)
                         + " |")
    examples = sorted(set(parity["examples"].values()))
    lines.append("")
    tolerance = f"{parity['tolerance']:.0e}".replace("e-0", "e-")
    lines.append(f"{'/'.join(map(str, examples))} examples per signature; tolerance {tolerance}: "
                 f"{'passed' if parity['passed'] else 'FAILED'}.")
    return lines


def _int8(int8):
    lines = ["| task | float32 | int8 | change | examples |", "|---|---|---|---|---|"]
    for key, label, digits in _INT8_METRICS:
        if key not in int8["metrics"]:  # exported without --data-dir: no labelled samples
            continue
        m = int8["metrics"][key]
        lines.append(f"| {label} | {_num(m['float32'], digits)} | {_num(m['int8'], digits)} | "
                     f"{_num(m['change'], digits, sign=True)} | {m['examples']} |")
    agree = int8["prediction_agreement"]
    cosine = int8["embedding_cosine"]
    same = max(int8["ids_int8_vs_text_int8"].values())
    # "DATA (dev files, seed 0)" -> "dev files, seed 0": the exporting machine's path says nothing.
    source = re.sub(r"^.*\((.*)\)$", r"\1", int8["source"])
    lines += ["", f"Against `{int8['float_reference']}` ({source}): decisions agree on "
              + ", ".join(f"{100 * v:.1f}% ({k})" for k, v in agree.items())
              + f"; embedding cosine mean {_num(cosine['mean'], 4)}, min "
              f"{_num(cosine['min'], 4)}; ids-in int8 "
              + ("equals text-in int8 exactly." if same == 0
                 else f"differs from text-in int8 by up to {same:.1e}.")]
    return lines


def _sizes(files):
    return ["| " + " | ".join(label for _, label in _SIZES) + " |",
            "|" + "---|" * len(_SIZES),
            "| " + " | ".join(f"{files[key]['bytes'] / MIB:.1f}" for key, _ in _SIZES) + " |"]


def _latency(latency, members):
    lines = ["| runtime | threads | p50 ms | p95 ms | min ms | runs | score |",
             "|---|---|---|---|---|---|---|"]
    for r in latency["rows"]:
        threads = "default" if r["threads"] == "tf default" else r["threads"]
        lines.append(f"| {r['runtime']} | {threads} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['min_ms']:.2f} | {r['iterations']} | {r['score']:.3f} |")
    p50 = {(r["runtime"], r["threads"]): r["p50_ms"] for r in latency["rows"]}
    int8 = p50.get(("TFLite int8", 1))
    lines += ["", f"One pair of {'+'.join(map(str, latency['token_lengths']))} tokens, strings in, "
              f"tokenisation included; load average {latency['load_before'][0]:.1f} before, "
              f"{latency['load_after'][0]:.1f} after."]
    if int8:
        vs = [f"{p50[key] / int8:.1f}x faster than {what}" for key, what in
              ((("TFLite float32", 1), "float32 on one thread"),
               (("Keras (eager)", "tf default"), "eager Keras")) if key in p50]
        lines[-1] += (f" int8 on one thread: {int8:.2f} ms p50 ({int8 / members:.2f} ms per "
                      f"member)" + (", " + " and ".join(vs) if vs else "") + ".")
    return lines


def export_section(results_dir):
    """The markdown of the EM export's verified figures and latency (see module doc)."""
    em = Path(results_dir) / "em"
    manifest = json.loads((em / "export_manifest.json").read_text())
    verification = manifest["verification"]
    members = [Path(m["path"]).name for m in manifest["members"]]
    lines = [f"Exported members: {' + '.join(f'`{n}`' for n in members)} (TF "
             f"{manifest['tensorflow_version']}, Keras {manifest['keras_version']}; "
             f"{manifest['export_seconds']:.0f} s" + (
                 f" and {manifest['peak_rss_mib'] / 1024:.1f} GiB peak RSS"
                 if "peak_rss_mib" in manifest else "")
             + " to export and verify). " + _trainings(
                 manifest, members, results_dir), "", "**Float parity with Keras:**", ""]
    lines += _parity(verification["parity"])
    lines += ["", "**int8 against float32 TFLite:**", ""] + _int8(verification["int8"])
    lines += ["", "**Sizes (MiB):**", ""] + _sizes(manifest["files"])
    latency = em / "score_latency.json"
    if latency.is_file():
        lines += ["", "**Scoring latency** (`benchmarks/score_latency.py`, "
                  "`em/score_latency.json`):", ""]
        lines += _latency(json.loads(latency.read_text()), len(members))
    return "\n".join(lines)
