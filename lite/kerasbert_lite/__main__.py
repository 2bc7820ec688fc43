"""Score sentence pairs (0-5), or classify sentiment, with an exported ids-in TFLite file.

Usage:
    python -m kerasbert_lite MODEL "sentence a" "sentence b"     similarity
    python -m kerasbert_lite MODEL "a sentence"                  sentiment
    python -m kerasbert_lite MODEL --pairs pairs.tsv [--out scores.tsv]

MODEL is an `embedder_*.tflite`, `sentiment_*.tflite` or `model_ids_*.tflite`
file, or an export folder. `--pairs` reads two tab-separated columns (header
optional) and writes `text_a, text_b, score, truncated`; a pair with an empty
side scores `nan` and is counted on stderr. A text counts as truncated when it
was cut to the model's max length or held a word over 100 UTF-8 bytes (which
became one [UNK]). Exit status 0 on success, 2 on an unusable model, text or
input file.
"""

import argparse
import sys
import warnings


def parse_args(argv=None, prog="python -m kerasbert_lite", description=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or "Similarity (0-5) or sentiment with kerasbert's ids-in "
                                   "TFLite files on LiteRT, without TensorFlow.")
    parser.add_argument("model", help="embedder_*.tflite, sentiment_*.tflite, "
                                      "model_ids_*.tflite, or an export folder")
    parser.add_argument("texts", nargs="*", help="two sentences to score, or one to classify")
    parser.add_argument("--pairs", help="TSV file: sentence a<TAB>sentence b per line")
    parser.add_argument("--out", help="where to write the scored TSV (default: stdout)")
    header = parser.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_const", const=True,
                        default="auto", help="the first line of --pairs is a header")
    header.add_argument("--no-header", dest="header", action="store_const", const=False,
                        help="the first line of --pairs is a pair")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per model call")
    parser.add_argument("--verbose", action="store_true",
                        help="show the runtime's own log lines (hidden by default)")
    args = parser.parse_args(argv)
    if args.pairs is None and len(args.texts) not in (1, 2):
        parser.error("give two sentences (similarity), one (sentiment), or --pairs FILE")
    if args.pairs is not None and args.texts:
        parser.error("give either sentences or --pairs, not both")
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


# Fewer pairs score in about a second: no bar.
PAIRS_FOR_A_BAR = 256


def console_main():
    """The `kerasbert-lite` script: `main` without the runtime's own log lines."""
    from kerasbert_lite.native_logs import quiet_native_logs
    quiet_native_logs()
    return main()


def open_lite_scorer(path, num_threads=None, batch_size=32):
    from kerasbert_lite.similarity_scorer import SimilarityScorer
    return SimilarityScorer(path, num_threads=num_threads, batch_size=batch_size)


def main(argv=None, open_scorer=open_lite_scorer, **parser_kwargs):
    """The CLI; `open_scorer(path, num_threads, batch_size)` picks the scorer for MODEL
    (`python -m export.score` passes one that also takes text-in files)."""
    args = parse_args(argv, **parser_kwargs)
    from kerasbert_lite.error_line import error_line
    from kerasbert_lite.model_file_error import ModelFileError
    from kerasbert_lite.pair_file import read_pairs, write_scores, write_scores_to
    try:
        if args.pairs is not None:
            # Read (and validate) the input before the slow model load.
            texts_a, texts_b, info = read_pairs(args.pairs, header=args.header)
        scorer = open_scorer(args.model, num_threads=args.threads, batch_size=args.batch_size)
        if len(args.texts) == 1:
            if not hasattr(scorer, "sentiment"):
                raise ValueError(f"{args.model}: scores pairs only; give two sentences, or "
                                 "use sentiment_int8.tflite for one")
            (labels,), (probs,) = [x for x in scorer.sentiment(args.texts)]
            if labels is None:
                raise ValueError("the text has no tokens (empty or whitespace): no sentiment")
            print(labels + "\t" + " ".join(f"{p:.4f}" for p in probs))
            return 0
        if args.pairs is None:
            score = scorer.score(*args.texts)
            _, truncated = scorer.score_batch([args.texts[0]], [args.texts[1]],
                                              return_truncated=True)
            print(f"{score:.4f}")
            if truncated is not None and truncated[0]:
                print(_truncation_note(1, 1, scorer.max_length), file=sys.stderr)
            return 0
        from kerasbert_lite.progress import Progress
        with warnings.catch_warnings(), Progress(2 * len(texts_a), f"scoring {args.pairs}",
                                                 unit="text", min_total=2 * PAIRS_FOR_A_BAR) as bar:
            warnings.simplefilter("ignore")  # counted below instead
            scores, truncated = scorer.score_batch(texts_a, texts_b, return_truncated=True,
                                                   progress=bar.update)
    except (ModelFileError, OSError, ValueError, TypeError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    try:
        if args.out is None:
            write_scores_to(sys.stdout, texts_a, texts_b, scores, truncated)
        else:
            write_scores(args.out, texts_a, texts_b, scores, truncated)
    except OSError as e:
        print(f"error: {args.out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    empty = int(sum(s != s for s in scores))
    notes = [f"scored {len(scores)} pair(s) from {args.pairs}"
             + (f" -> {args.out}" if args.out else "")
             + (" (header skipped)" if info["header"] else "")
             + (f"; {info['blank_lines']} blank line(s) skipped" if info["blank_lines"] else "")]
    if not len(scores):
        notes.append(f"warning: {args.pairs} holds no pairs")
    if empty:
        notes.append(f"warning: {empty} pair(s) with an empty side scored nan")
    if truncated is not None and truncated.any():
        notes.append(_truncation_note(int(truncated.sum()), len(scores), scorer.max_length))
    for note in notes:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    from kerasbert_lite.native_logs import quiet_native_logs
    quiet_native_logs()  # --verbose keeps LiteRT's lines
    sys.exit(main())
