"""Score sentence pairs (0-5) with an exported text-in TFLite model.

Usage:
    python -m export.score MODEL "sentence a" "sentence b"
    python -m export.score MODEL --pairs pairs.tsv [--out scores.tsv]

`--pairs` reads two tab-separated columns (header optional) and writes
`text_a, text_b, score, truncated` (to stdout without `--out`). Pairs longer
than the model's max length are truncated, and the count is reported on
stderr. Exit status 0 on success, 2 on an unusable model or input file.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m export.score",
        description="Score sentence pairs with an exported text-in TFLite model "
                    "(e.g. exports/em/model_int8.tflite).")
    parser.add_argument("model", help="text-in .tflite file with a 'similarity' signature")
    parser.add_argument("text_a", nargs="?", help="first sentence")
    parser.add_argument("text_b", nargs="?", help="second sentence")
    parser.add_argument("--pairs", help="TSV file: sentence a<TAB>sentence b per line")
    parser.add_argument("--out", help="where to write the scored TSV (default: stdout)")
    header = parser.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_const", const=True,
                        default="auto", help="the first line of --pairs is a header")
    header.add_argument("--no-header", dest="header", action="store_const", const=False,
                        help="the first line of --pairs is a pair")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the runtime's)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per model call")
    args = parser.parse_args(argv)
    if args.pairs is None and (args.text_a is None or args.text_b is None):
        parser.error("give two sentences, or --pairs FILE")
    if args.pairs is not None and args.text_a is not None:
        parser.error("give either two sentences or --pairs, not both")
    if args.out is not None and args.pairs is None:
        parser.error("--out goes with --pairs")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    return args


def _truncation_note(count, total, max_length):
    limit = f"{max_length} tokens" if max_length else "the model's max length"
    return (f"note: {count} of {total} pair(s) exceeded {limit} and were truncated "
            "(scores use the truncated text)")


def main(argv=None):
    args = parse_args(argv)
    from export.model_file_error import ModelFileError
    from export.pair_file import read_pairs, write_scores, write_scores_to
    try:
        if args.pairs is not None:
            # Read (and validate) the input before the slow model load.
            texts_a, texts_b, info = read_pairs(args.pairs, header=args.header)
        from export.similarity_scorer import SimilarityScorer
        scorer = SimilarityScorer(args.model, num_threads=args.threads,
                                  batch_size=args.batch_size)
    except (ModelFileError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.pairs is None:
        scores, truncated = scorer.score_batch([args.text_a], [args.text_b],
                                               return_truncated=True)
        print(f"{scores[0]:.4f}")
        if truncated is not None and truncated[0]:
            print(_truncation_note(1, 1, scorer.max_length), file=sys.stderr)
        return 0

    scores, truncated = scorer.score_batch(texts_a, texts_b, return_truncated=True)
    try:
        if args.out is None:
            write_scores_to(sys.stdout, texts_a, texts_b, scores, truncated)
        else:
            write_scores(args.out, texts_a, texts_b, scores, truncated)
    except OSError as e:
        print(f"error: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    notes = [f"scored {len(scores)} pair(s) from {args.pairs}"
             + (f" -> {args.out}" if args.out else "")
             + (" (header skipped)" if info["header"] else "")
             + (f"; {info['blank_lines']} blank line(s) skipped" if info["blank_lines"] else "")]
    if truncated is not None and truncated.any():
        notes.append(_truncation_note(int(truncated.sum()), len(scores), scorer.max_length))
    for note in notes:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
