"""Reading sentence pairs from a two-column TSV file, and writing scores.

One pair per line, `sentence a<TAB>sentence b`, UTF-8. A header line is
recognised by its column names (text_a/text_b, sentence1/sentence2, ...)
unless forced on or off. Blank lines are skipped (and counted). Any other
line without exactly one tab is an error naming the line.
"""

import os
from pathlib import Path

HEADER_NAMES = {
    ("text_a", "text_b"), ("sentence1", "sentence2"), ("sentence_a", "sentence_b"),
    ("sentence 1", "sentence 2"), ("a", "b"), ("s1", "s2"), ("text1", "text2"),
    ("question1", "question2"), ("first", "second"), ("query", "document"),
}


def read_pairs(path, header="auto"):
    """Reads `(texts_a, texts_b, info)` from a two-column TSV file.

    Args:
        path: the file.
        header: "auto" (a first line of known column names is a header),
            True (the first line is a header) or False (no header).

    Returns:
        texts_a, texts_b: lists of str; info: {"header": bool, "blank_lines": int,
        "line_numbers": 1-based line of each pair}.

    Raises:
        FileNotFoundError: no such file.
        ValueError: `path:line: reason` for undecodable or malformed lines.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a TSV file")
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from e
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline ends the last line, it is not a line
    texts_a, texts_b, line_numbers = [], [], []
    blank = 0
    header_seen = False
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{number}: not valid UTF-8 (byte {raw[e.start]:#04x} at "
                             f"column {e.start + 1}); save the file as UTF-8") from None
        if number == 1:
            line = line.lstrip("\ufeff")  # a BOM from spreadsheet exports
        line = line.rstrip("\r")
        if not line.strip():
            blank += 1
            continue
        fields = line.split("\t")
        first_content_line = not texts_a and not header_seen
        if first_content_line and _is_header(fields, header):
            header_seen = True
            continue
        if len(fields) != 2:
            raise ValueError(
                f"{path}:{number}: expected 2 tab-separated columns (sentence a, sentence b), "
                f"got {len(fields)}: {_preview(line)}")
        texts_a.append(fields[0])
        texts_b.append(fields[1])
        line_numbers.append(number)
    return texts_a, texts_b, {"header": header_seen, "blank_lines": blank,
                              "line_numbers": line_numbers}


def _is_header(fields, header):
    if header is True:
        return True
    if header is False:
        return False
    names = tuple(f.strip().lower() for f in fields)
    return len(names) == 2 and names in HEADER_NAMES


def _preview(line, width=60):
    text = line.replace("\t", "\\t")
    return repr(text if len(text) <= width else text[:width] + "...")


def write_scores(path, texts_a, texts_b, scores, truncated=None):
    """Writes `text_a<TAB>text_b<TAB>score[<TAB>truncated]` lines with a header.

    Through a temporary file renamed over `path`: a kill leaves the old file
    or the whole new one, never a part.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write_scores_to(f, texts_a, texts_b, scores, truncated)
        os.replace(tmp, path)
    except BaseException:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise


def write_scores_to(stream, texts_a, texts_b, scores, truncated=None):
    columns = ["text_a", "text_b", "score"] + (["truncated"] if truncated is not None else [])
    stream.write("\t".join(columns) + "\n")
    for i, (a, b, s) in enumerate(zip(texts_a, texts_b, scores)):
        row = [a, b, f"{float(s):.4f}"]
        if truncated is not None:
            row.append(str(int(bool(truncated[i]))))
        stream.write("\t".join(row) + "\n")
