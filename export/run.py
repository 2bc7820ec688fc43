"""Export trained runs as one ensemble: SavedModel + TFLite, verified.

Usage:
    python -m export.run --runs runs/a runs/b --out exports/em \
        [--max-length N] [--no-verify] [--data-dir DIR] [--float16]

Writes `--out` (see `export.exporter` for the layout) and prints the
verification report. Exit status: 0 on success, 1 when float parity with
Keras exceeds the tolerance, 2 on bad arguments or unusable run folders.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m export.run",
        description="Export an ensemble of kerasbert runs (mean of members) as a text-in "
                    "SavedModel and TFLite files (float32, int8, ids-in), and verify them.")
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                        help="run folders (config.json, best.keras, vocab.txt); "
                             "one folder is a one-member ensemble")
    parser.add_argument("--out", required=True, help="export folder, e.g. exports/em")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per input incl. specials (default: largest of the runs')")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the parity / int8 checks")
    parser.add_argument("--data-dir", default=None,
                        help="CS224N data folder: verify on dev samples and report the int8 "
                             "metric change (default: built-in sentences, no metrics)")
    parser.add_argument("--float16", action="store_true",
                        help="also write model_float16.tflite (float16 weights)")
    parser.add_argument("--parity-examples", type=int, default=64,
                        help="examples per task for the float parity check (default 64)")
    parser.add_argument("--metric-examples", type=int, default=500,
                        help="dev examples per task for the int8 metric change (default 500)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max |float export - Keras| allowed (default 1e-4)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's, the converter's and LiteRT's own log lines")
    args = parser.parse_args(argv)
    if args.max_length is not None and args.max_length < 3:
        parser.error(f"--max-length must be at least 3, got {args.max_length}")
    return args


def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir
    if data_dir is not None and args.verify:
        # Checked now, not after minutes of conversion.
        from kerasbert_lite.tasks import MULTITASK
        from training.readers import split_path
        missing = [str(split_path(task, "dev", data_dir)) for task in MULTITASK
                   if not split_path(task, "dev", data_dir).is_file()]
        if missing:
            print(f"error: --data-dir {data_dir}: missing {', '.join(missing)}", file=sys.stderr)
            return 2
    from export.exporter import export_ensemble
    try:
        manifest = export_ensemble(
            args.runs, args.out, max_length=args.max_length, verify=args.verify,
            data_dir=data_dir, float16=args.float16,
            log=lambda line: print(line, flush=True),
            verify_kwargs={"num_parity": args.parity_examples,
                           "num_metric": args.metric_examples,
                           "tolerance": args.tolerance})
    except (OSError, ValueError) as e:
        # Unusable run folders, vocabularies or output paths: the message names the file.
        from kerasbert_lite.error_line import error_line
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    verification = manifest.get("verification")
    if verification is not None and not verification["passed"]:
        worst = max(verification["parity"]["worst"],
                    verification.get("device", {}).get("worst", 0.0))
        print(f"error: float parity FAILED: max |diff| {worst:.3g} > "
              f"{args.tolerance:g} (details in {args.out}/manifest.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from kerasbert_lite.native_logs import quiet_native_logs
    quiet_native_logs()  # before TensorFlow loads; --verbose keeps its lines
    sys.exit(main())
