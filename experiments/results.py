"""The command line of `results/`: publish, retrain and check rows, rewrite the README's tables.

    python -m experiments.results publish runs/cross          # run folder -> results/cross
    python -m experiments.results row cross --data-dir DATA   # retrain a row from its command
    python -m experiments.results table                       # rewrite results/README.md's tables
    python -m experiments.results check --data-dir DATA       # rescore every row from its files
    python -m experiments.results compare runs/cross          # does a retrain reproduce its row?

A row folder's files are listed in `experiments.rows`; the tables are made by
`experiments.tables` and `experiments.export_figures`.
"""

import argparse
import json
import sys
from pathlib import Path

from kerasbert_lite.tasks import MULTITASK
from training import run_folder as rf

from experiments.export_figures import export_section
from experiments.rows import RESULTS_DIR, compare, history, print_comparison, publish, rescore, rows
from experiments.tables import em_size_table, table

# The generated parts of results/README.md lie between these markers.
TABLE_START, TABLE_END = "<!-- table:start -->", "<!-- table:end -->"
EM_SIZES_START, EM_SIZES_END = "<!-- em-sizes -->", "<!-- /em-sizes -->"
EM_EXPORT_START, EM_EXPORT_END = "<!-- em-export -->", "<!-- /em-export -->"


def _generated_sections(results_dir):
    """(start marker, end marker, body) of each generated part of results/README.md."""
    sections = [(TABLE_START, TABLE_END, table(results_dir))]
    if (Path(results_dir) / "em" / "ensemble_size.json").is_file():
        sections.append((EM_SIZES_START, EM_SIZES_END, em_size_table(results_dir)))
    if (Path(results_dir) / "em" / "export_manifest.json").is_file():
        sections.append((EM_EXPORT_START, EM_EXPORT_END, export_section(results_dir)))
    return sections


def write_table(readme=None, results_dir=RESULTS_DIR):
    """Rewrites the generated parts of results/README.md: the table, EM's size table and
    the EM export's figures."""
    readme = Path(readme or Path(results_dir) / "README.md")
    text = readme.read_text()
    for start, end, body in _generated_sections(results_dir):
        if start not in text or end not in text:
            raise ValueError(f"{readme}: no {start} ... {end} markers to replace")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    readme.write_text(text)
    return readme


def plot_curves(path=None, results_dir=RESULTS_DIR, smooth=0.6):
    """One figure of every row: per-task training loss by step, dev CS224N overall by epoch.

    Losses are smoothed by an exponential moving average (`smooth`); they are
    comparable across rows only where the loss is the same (the STS panel
    mixes BCE, MSE and InfoNCE: see each row's variant).
    """
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path or Path(results_dir) / rf.LEARNING_CURVES)
    # One loss panel per benchmark task, then the dev score.
    fig, axes = plt.subplots(1, len(MULTITASK) + 1, figsize=(18, 4))
    for i, row in enumerate(r for r in rows(results_dir) if (r / "train_loss.csv").is_file()):
        colour = f"C{i % 10}"
        with open(row / "train_loss.csv") as f:
            records = list(csv.DictReader(f))
        for ax, task in zip(axes, MULTITASK):
            points = [(int(r["step"]), float(r["loss"])) for r in records if r["task"] == task]
            if not points:
                continue
            ema, smoothed = points[0][1], []
            for _, loss in points:
                ema = smooth * ema + (1 - smooth) * loss
                smoothed.append(ema)
            ax.plot([p[0] for p in points], smoothed, color=colour, label=row.name)
        epochs = history(row)
        scores = [h["dev"].get("overall_cs224n") for h in epochs]
        if all(s is not None for s in scores):
            axes[-1].plot([h["epoch"] for h in epochs], scores, "o-", color=colour,
                         label=row.name)
    for ax, task in zip(axes, MULTITASK):
        ax.set(title=f"{task} training loss (EMA {smooth})", xlabel="step")
    axes[-1].set(title="dev CS224N overall", xlabel="epoch")
    axes[-1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="copy a finished run folder into results/")
    p.add_argument("run_dir")
    p.add_argument("--name", help="row name (default: the run folder's name)")
    p.add_argument("--note", help="how the run was made, e.g. threads or load")
    p = sub.add_parser("row", help="retrain a row from its recorded command, then publish it")
    p.add_argument("name", help="a row folder in results/, or a variant name for a new row")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", default="runs", help="where the run folder goes (runs/)")
    sub.add_parser("table", help="rewrite the generated tables in results/README.md (rows, "
                                 "EM sizes, EM export figures) and results/learning_curves.png")
    p = sub.add_parser("check", help="rescore every row from its prediction files")
    p.add_argument("--data-dir", default=None)
    p = sub.add_parser("compare", help="how closely a retrained run reproduces its row "
                                       "(exit 1 if not, 2 on a missing file)")
    p.add_argument("run_dir")
    p.add_argument("--row", help="row name (default: the run folder's name)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest dev metric difference that counts as the same")
    args = parser.parse_args(argv)
    try:
        return _command(args)
    except (OSError, ValueError) as e:  # they name the file: no traceback needed
        from kerasbert_lite.error_line import error_line
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2


def _command(args):
    if args.command == "publish":
        print(publish(args.run_dir, args.name, note=args.note))
    elif args.command == "row":
        from training import run
        from training.readers import resolve_data_dir

        recorded = RESULTS_DIR / args.name / "run.json"
        train_args = (json.loads(recorded.read_text())["args"] if recorded.is_file()
                      else ["--variant", args.name])
        config = RESULTS_DIR / args.name / rf.CONFIG
        if (config.is_file() and "--precision" not in train_args
                and "precision_used" not in json.loads(config.read_text())):
            # Rows from before --precision trained in float32 (auto now picks
            # bf16 where the CPU has it): retrain them as they were.
            train_args = train_args + ["--precision", "float32"]
        out = Path(args.runs) / args.name
        code = run.main(train_args + ["--data-dir", str(resolve_data_dir(args.data_dir)),
                                      "--out", str(out)] + (["--resume"] if out.exists() else []))
        if code:
            return code
        if (RESULTS_DIR / args.name / rf.SUMMARY).is_file():
            print(f"{out} against the published {args.name}, which it replaces:")
            print_comparison(compare(out, RESULTS_DIR / args.name))
        publish(out, args.name)
        print(write_table())
        print(plot_curves())
    elif args.command == "compare":
        found = compare(args.run_dir, RESULTS_DIR / (args.row or Path(args.run_dir).name),
                        args.tolerance)
        print_comparison(found)
        return 0 if found["reproduced"] else 1
    elif args.command == "table":
        print(write_table())
        print(plot_curves())
    else:
        from training.readers import resolve_data_dir

        data_dir = resolve_data_dir(args.data_dir)
        for row in rows():
            for metric, (files, summary) in rescore(row, data_dir).items():
                flag = "ok" if abs(files - summary) < 1e-3 else "MISMATCH"
                print(f"{row.name:<22} {metric:<12} files {files:.4f} summary {summary:.4f} {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
