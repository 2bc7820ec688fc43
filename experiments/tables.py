"""The markdown tables of results/README.md, from the committed row folders.

    table()          every row beside the paper's numbers and the targets
    em_size_table()  EM's dev scores by ensemble size

`experiments.results table` writes them between their markers.
"""

import json
from pathlib import Path

from kerasbert_lite.tasks import MULTITASK, TASKS
from training import run_folder as rf

from experiments.rows import RESULTS_DIR, rows

# The benchmark's columns, one per output: `sst_acc`, `quora_acc`, `sts_pearson`.
METRICS = tuple(TASKS[t].metric for t in MULTITASK)

# The paper's dev scores (SST acc, Quora acc, STS r) for the rows it reports;
# `None` where the paper has no such row or column.
PAPER = {
    "bm": ("BM", (.502, .735, .250)),
    "dps": ("DPS", (.490, .498, .196)),
    "infonce": ("InfoNCE", (.347, .521, .062)),
    "mse": ("MSE", (.462, .743, .224)),
    "dps_mse": ("DPS-MSE", (.496, .775, .633)),
    "em": ("EM", (.508, .783, .657)),
    "sst_only": ("SST-only multitask", (.529, .395, .067)),
    "clf_sst_frozen": ("classifier, SST, frozen", (.391, None, None)),
    "clf_sst_finetune": ("classifier, SST, fine-tuned", (.535, None, None)),
    "clf_cfimdb_frozen": ("classifier, CFIMDB, frozen", (.718, None, None)),
    "clf_cfimdb_finetune": ("classifier, CFIMDB, fine-tuned", (.963, None, None)),
    # The same rows on mean pooling (beyond the paper), beside the paper's.
    "clf_sst_frozen_mean": ("classifier, SST, frozen", (.391, None, None)),
    "clf_cfimdb_frozen_mean": ("classifier, CFIMDB, frozen", (.718, None, None)),
}
TARGETS = (.53, .88, .88)


def format_score(value, digits=3):
    """A score as the tables print it: `.486`, `-.006`, empty for None.

    >>> format_score(0.4861), format_score(-0.0062), format_score(0.85791, 4), format_score(None)
    ('.486', '-.006', '.8579', '')
    """
    return "" if value is None else f"{value:.{digits}f}".lstrip("0").replace("-0.", "-.")


def column_score(best, task):
    """The row's score in benchmark task `task`'s column, or None.

    A row trained on another dataset of the same output (a classifier on
    CFIMDB) shows its score there: the column is the output's.

    >>> column_score({"cfimdb_acc": .963}, "sst"), column_score({"cfimdb_acc": .963}, "sts")
    (0.963, None)
    """
    output = TASKS[task].output
    candidates = [task] + [t for t, row in TASKS.items() if row.output == output and t != task]
    return next((best[TASKS[t].metric] for t in candidates if TASKS[t].metric in best), None)


def table(results_dir=RESULTS_DIR):
    """The markdown table of every row: ours beside the paper's, with the targets."""
    benchmark = [TASKS[t] for t in MULTITASK]
    lines = ["| row | paper row | epochs | " + " | ".join(t.column for t in benchmark)
             + " | overall mean | CS224N overall | paper "
             + " / ".join(t.display_name for t in benchmark) + " | min/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows(results_dir):
        summary = json.loads((row / rf.SUMMARY).read_text())
        best = summary["best"]
        ours = [column_score(best, t) for t in MULTITASK]
        paper_name, paper = PAPER.get(row.name, ("", (None, None, None)))
        cells = []
        for value, reference in zip(ours, paper):
            cell = format_score(value)
            if value is not None and reference is not None:
                cell += " ✓" if value > reference else " ✗"
            cells.append(cell)
        label = f"`{row.name}`"
        if summary.get("members"):
            label += " = " + " + ".join(f"`{m}`" for m in summary["members"])
        lines.append(
            f"| {label} | {paper_name} | {summary.get('epochs') or ''} | " + " | ".join(cells)
            + f" | {format_score(best.get('overall_mean'))}"
            + f" | {format_score(best.get('overall_cs224n'))} | "
            + " / ".join(format_score(p) if p is not None else "–" for p in paper)
            + f" | {summary.get('minutes_per_epoch') or ''} |")
    lines.append("| target (issue 5, for EM) | | | " + " | ".join(format_score(t) for t in TARGETS)
                 + " | | | | |")
    return "\n".join(lines)


def em_size_table(results_dir=RESULTS_DIR):
    """The markdown table of EM's dev scores by ensemble size, the chosen size in bold."""
    em = Path(results_dir) / "em"
    curve = json.loads((em / "ensemble_size.json").read_text())
    chosen = json.loads((em / "run.json").read_text())["chosen_size"]
    # A score keeps its unit ("STS r"); accuracies go by the dataset's name alone.
    heads = [t.column if t.label == "score" else t.display_name for t in map(TASKS.get, MULTITASK)]
    lines = ["| size | members added | " + " | ".join(heads) + " | CS224N overall |",
             "|---|---|---|---|---|---|"]
    for point in curve:
        added = ("" if point["size"] == 1 else "+ ") + f"`{point['members'][-1]}`"
        cells = [format_score(point["dev"][m]) for m in (*METRICS, "overall_cs224n")]
        size = str(point["size"])
        if point["size"] == chosen:
            size, cells = f"**{size} (EM)**", [f"**{c}**" for c in cells]
        lines.append(f"| {size} | {added} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
