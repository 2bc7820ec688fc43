"""training.readers: bad rows skipped and reported by line, real files read whole."""

import logging

import numpy as np
import pytest

from training.examples import PairData, SentenceData
from training.readers import (load_split, read_quora, read_sentiment, read_sts, resolve_data_dir,
                              split_path)

SENT_HEADER = "\tid\tsentence\tsentiment\n"
PAIR_HEADER = "\tid\tsentence1\tsentence2\t{label}\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sentiment_bad_rows_are_skipped_with_line_numbers(tmp_path, caplog):
    path = write(tmp_path, "ids-sst-dev.csv", SENT_HEADER + (
        "0\ta\t Good film .\t3\n"          # line 2: kept
        "1\tb\t Short row\n"               # line 3: missing sentiment field
        "2\tc\t   \t1\n"                   # line 4: empty text after strip
        "3\td\t Fine .\tx\n"               # line 5: not a number
        "4\te\t Great .\t5\n"              # line 6: out of range 0-4
        "5\tf\t Meh .\t2.5\n"              # line 7: not an integer
        "6\tg\t Ok .\t3.0\n"               # line 8: kept, "3.0" reads as 3
        "7\th\t Bad .\t 0 \n"))            # line 9: kept, label whitespace tolerated
    with caplog.at_level(logging.WARNING, logger="training.readers"):
        data = read_sentiment(path, num_classes=5)
    assert data.ids == ["a", "g", "h"]
    assert data.texts == ["Good film .", "Ok .", "Bad ."]
    assert data.labels.dtype == np.int32 and data.labels.tolist() == [3, 3, 0]
    got = [(s.line, s.reason) for s in data.skipped]
    assert got == [
        (3, "missing field 'sentiment'"),
        (4, "empty sentence"),
        (5, "sentiment 'x' is not a number"),
        (6, "sentiment '5' is out of range 0-4"),
        (7, "sentiment '2.5' is not an integer"),
    ]
    assert all(s.path == str(path) for s in data.skipped)
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1
    assert summary[0].startswith("ids-sst-dev.csv: skipped 5 of 8 rows (line 3: missing field")


def test_cfimdb_labels_are_binary(tmp_path):
    path = write(tmp_path, "ids-cfimdb-dev.csv",
                 SENT_HEADER + "0\ta\t Good .\t1\n1\tb\t Bad .\t2\n2\tc\t Bad .\t-1\n")
    data = read_sentiment(path, num_classes=2)
    assert data.labels.tolist() == [1]
    assert [s.reason for s in data.skipped] == ["sentiment '2' is out of range 0-1",
                                                "sentiment '-1' is out of range 0-1"]


def test_quora_labels(tmp_path):
    path = write(tmp_path, "quora-dev.csv", PAIR_HEADER.format(label="is_duplicate") + (
        "10\ta\tHow old?\tWhat age?\t1.0\n"
        "11\tb\tHow old?\tWhat age?\t0\n"
        "12\tc\tHow old?\tWhat age?\t0.5\n"
        "13\td\tHow old?\tWhat age?\t\n"
        "14\te\tHow old?\t\t\n"))
    data = read_quora(path)
    assert data.labels.dtype == np.float32 and data.labels.tolist() == [1.0, 0.0]
    assert data.texts_a == ["How old?", "How old?"] and data.texts_b == ["What age?"] * 2
    assert [(s.line, s.reason) for s in data.skipped] == [
        (4, "is_duplicate '0.5' is not 0 or 1"),
        (5, "empty is_duplicate"),
        (6, "empty sentence2, empty is_duplicate"),
    ]


def test_sts_labels(tmp_path):
    path = write(tmp_path, "sts-dev.csv", PAIR_HEADER.format(label="similarity") + (
        "1\ta\tA man runs.\tA man jogs.\t4.2\n"
        "2\tb\tA man runs.\tA man jogs.\t5.5\n"
        "3\tc\tA man runs.\tA man jogs.\t-0.1\n"
        "4\td\tA man runs.\tA man jogs.\tnan\n"
        "5\te\tA man runs.\tA man jogs.\t0\n"))
    data = read_sts(path)
    np.testing.assert_allclose(data.labels, [4.2, 0.0])
    assert [s.reason for s in data.skipped] == ["similarity '5.5' is out of range 0-5",
                                                "similarity '-0.1' is out of range 0-5",
                                                "similarity 'nan' is not a number"]


def test_a_stray_quote_costs_its_own_line_only(tmp_path, caplog):
    # Read as csv reads it, the open quote on line 3 swallowed lines 3-5 (tabs
    # and newlines included) into one field and kept them as one row.
    path = write(tmp_path, "sts-train.csv", PAIR_HEADER.format(label="similarity") + (
        "1\ta\tA man runs.\tA man jogs.\t4.0\n"      # line 2: kept
        '2\tb\t"A dog barks.\tA cat.\t1.0\n'          # line 3: stray quote
        "3\tc\tA bird.\tA plane.\t2.2\n"             # line 4: kept
        "4\td\t\"two\n"                              # line 5: a quoted field over 2 lines
        'lines"\tB\t1.0\n'                          # line 6: its second half
        '5\te\t"A\ttab"\tB\t3.0\n'                   # line 7: a tab inside quotes
        "6\tf\tLast.\tOne.\t5.0\n"))                 # line 8: kept
    with caplog.at_level(logging.WARNING, logger="training.readers"):
        data = read_sts(path)
    assert data.ids == ["a", "c", "f"]
    assert data.texts_a == ["A man runs.", "A bird.", "Last."]
    np.testing.assert_allclose(data.labels, [4.0, 2.2, 5.0])
    unterminated = "unterminated quote: a quoted field runs past the end of its line"
    assert [(s.line, s.reason[:len(unterminated)] if s.line in (3, 5) else s.reason)
            for s in data.skipped] == [
        (3, unterminated), (5, unterminated),
        (6, "missing field 'sentence2', missing field 'similarity'"),
        (7, "quoted field contains a tab (a stray '\"'?)")]
    assert caplog.records[0].getMessage().startswith(
        "sts-train.csv: skipped 4 of 7 rows (line 3: unterminated quote")


def test_stray_quote_in_the_real_sts_train_file(data_dir, tmp_path):
    # The reported case: one '"' added to sts-train.csv line 4 made six rows one
    # example labelled 2.2; the only sign was "read 6034 rows".
    lines = (data_dir / "sts-train.csv").read_bytes().split(b"\n")
    fields = lines[3].split(b"\t")
    fields[2] = b'"' + fields[2]
    lines[3] = b"\t".join(fields)
    path = tmp_path / "sts-train.csv"
    path.write_bytes(b"\n".join(lines))
    data, real = read_sts(path), read_sts(data_dir / "sts-train.csv")
    assert [(s.line, s.reason.split(":")[0]) for s in data.skipped] == [(4, "unterminated quote")]
    assert len(data) == 6039 and data.ids == real.ids[:2] + real.ids[3:]
    assert data.texts_a == real.texts_a[:2] + real.texts_a[3:]


def test_bytes_that_are_not_utf8_skip_their_row(tmp_path, caplog):
    path = tmp_path / "ids-sst-train.csv"
    path.write_bytes(SENT_HEADER.encode() + b"0\ta\t Good .\t3\n"
                     b"1\tb\t caf\xe9 .\t2\n"      # latin-1, line 3
                     b"2\tc\t Bad .\t1\n")
    with caplog.at_level(logging.WARNING, logger="training.readers"):
        data = read_sentiment(path, num_classes=5)
    assert data.ids == ["a", "c"]
    assert [str(s) for s in data.skipped] == [
        "ids-sst-train.csv:3: not valid UTF-8 (byte 0xe9 at column 9)"]
    assert "skipped 1 of 3 rows (line 3: not valid UTF-8" in caplog.text
    header = tmp_path / "bad-header.csv"
    header.write_bytes(b"\tid\tsen\xe9tence\n0\ta\tx\n")
    with pytest.raises(ValueError, match=r"bad-header\.csv:1: header line not valid UTF-8"):
        read_sentiment(header, num_classes=5, labeled=False)


def test_duplicate_ids_keep_the_first_and_report_the_rest(tmp_path):
    path = write(tmp_path, "quora-dev.csv", PAIR_HEADER.format(label="is_duplicate") + (
        "0\ta\tHow old?\tWhat age?\t1.0\n"
        "1\tb\tWhy?\tHow?\t0.0\n"
        "2\ta\tOther?\tText?\t0.0\n"))        # line 4: 'a' again
    data = read_quora(path)
    assert data.ids == ["a", "b"] and data.texts_a == ["How old?", "Why?"]
    assert [str(s) for s in data.skipped] == [
        "quora-dev.csv:4: duplicate id 'a' (first on line 2)"]


def test_crlf_and_bom(tmp_path):
    path = tmp_path / "ids-sst-dev.csv"
    path.write_bytes(b"\xef\xbb\xbf" + SENT_HEADER.replace("\n", "\r\n").encode()
                     + b'0\ta\t"Good ."\t3\r\n1\tb\tBad .\t1\r\n')
    data = read_sentiment(path, num_classes=5)
    assert data.texts == ["Good .", "Bad ."] and data.labels.tolist() == [3, 1]
    assert data.skipped == []


def test_quoting_and_extra_fields(tmp_path):
    path = write(tmp_path, "ids-sst-train.csv", SENT_HEADER + (
        '0\ta\t"He said ""hi"" ."\t2\n'
        "1\tb\t Tab\tinside\t2\n"))
    data = read_sentiment(path, num_classes=5)
    assert data.texts == ['He said "hi" .']
    assert [(s.line, s.reason) for s in data.skipped] == [
        (3, "5 fields, header has 4, sentiment 'inside' is not a number")]


def test_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path, "quora-train.csv", "\tid\tsentence1\tis_duplicate\n0\ta\tx\t1.0\n")
    with pytest.raises(ValueError, match=r"quora-train\.csv: missing column\(s\) \['sentence2'\]"):
        read_quora(path)


def test_missing_label_column_only_matters_when_labeled(tmp_path):
    path = write(tmp_path, "sts-test-student.csv", "\tid\tsentence1\tsentence2\n0\ta\tx\ty\n")
    with pytest.raises(ValueError, match=r"sts-test-student\.csv: missing column.*similarity"):
        read_sts(path)
    data = read_sts(path, labeled=False)
    assert data.labels is None and len(data) == 1


def test_zero_valid_rows_raise(tmp_path):
    path = write(tmp_path, "ids-sst-dev.csv", SENT_HEADER + "0\ta\t \t1\n1\tb\tx\t9\n")
    with pytest.raises(ValueError, match=r"ids-sst-dev\.csv: no valid rows \(2 data rows, 2 skipped"):
        read_sentiment(path, num_classes=5)
    empty = write(tmp_path, "empty.csv", "")
    with pytest.raises(ValueError, match="empty.csv: empty file"):
        read_sentiment(empty, num_classes=5)
    header_only = write(tmp_path, "header.csv", SENT_HEADER)
    with pytest.raises(ValueError, match="header.csv: no valid rows"):
        read_sentiment(header_only, num_classes=5)


def test_long_fields_are_read(tmp_path):
    review = "word " * 60_000  # 300 KB, over csv's default 128 KiB field limit
    path = write(tmp_path, "ids-cfimdb-train.csv", SENT_HEADER + f"0\ta\t{review}\t1\n")
    assert len(read_sentiment(path, num_classes=2).texts[0]) == len(review.strip())


def test_test_student_extra_index_column(tmp_path):
    path = write(tmp_path, "ids-sst-test-student.csv",
                 "0\t\tid\tsentence\n1\t0.0\tabc\t Fine .\n2\t1.0\tdef\t Bad .\n")
    data = read_sentiment(path, num_classes=5, labeled=False)
    assert data.ids == ["abc", "def"] and data.texts == ["Fine .", "Bad ."]
    assert data.labels is None


def test_take_and_subset_keep_rows_aligned():
    data = PairData(["a", "b", "c"], ["1", "2", "3"], ["x", "y", "z"],
                    np.array([0.0, 1.0, 0.5], np.float32), "p.csv", skipped=["kept"])
    sub = data.subset([2, 0])
    assert (sub.ids, sub.texts_a, sub.texts_b, sub.labels.tolist()) == (
        ["c", "a"], ["3", "1"], ["z", "x"], [0.5, 0.0])
    assert sub.source == "p.csv" and sub.skipped == ["kept"]
    assert len(data.take(2)) == 2 and len(data.take(10)) == 3 and len(data.take(None)) == 3
    with pytest.raises(IndexError):
        data.subset([3])
    unlabeled = SentenceData(["a", "b"], ["x", "y"], None, "s.csv")
    assert unlabeled.take(1).labels is None and unlabeled.take(1).texts == ["x"]
    with pytest.raises(ValueError, match="differ in length"):
        SentenceData(["a"], ["x", "y"], None, "s.csv")


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("KERASBERT_DATA", raising=False)
    with pytest.raises(ValueError, match=r"--data-dir.*KERASBERT_DATA"):
        resolve_data_dir(None)
    monkeypatch.setenv("KERASBERT_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(str(other)) == other  # the flag wins over the variable
    with pytest.raises(ValueError, match="does not exist"):
        resolve_data_dir(str(tmp_path / "nope"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"a-file \(from --data-dir\) is a file, not a folder"):
        resolve_data_dir(str(tmp_path / "a-file"))


def test_split_paths():
    assert split_path("sst", "train", "d").name == "ids-sst-train.csv"
    assert split_path("cfimdb", "dev", "d").name == "ids-cfimdb-dev.csv"
    assert split_path("sst", "test", "d").name == "ids-sst-test-student.csv"
    assert split_path("quora", "dev", "d").name == "quora-dev.csv"
    assert split_path("sts", "test", "d").name == "sts-test-student.csv"
    with pytest.raises(ValueError, match="unknown task"):
        split_path("mnli", "dev", "d")
    with pytest.raises(ValueError, match="unknown split"):
        split_path("sst", "val", "d")


# The README's table of row counts.
REAL_COUNTS = [
    ("sst", "train", 8544), ("sst", "dev", 1101), ("sst", "test", 2210),
    ("cfimdb", "train", 1707), ("cfimdb", "dev", 245), ("cfimdb", "test", 488),
    ("quora", "train", 13507), ("quora", "dev", 20214),
    ("sts", "train", 6040), ("sts", "dev", 863), ("sts", "test", 1725),
]


@pytest.mark.parametrize("task,split,rows", REAL_COUNTS)
def test_real_files_match_readme(data_dir, task, split, rows):
    data = load_split(task, split, data_dir)
    assert len(data) + len(data.skipped) == rows
    assert (data.labels is None) == (split == "test")
    assert len(set(data.ids)) == len(data)
    if task == "quora" and split == "dev":
        assert [s.line for s in data.skipped] == [2577, 14222]
        assert all("empty is_duplicate" in s.reason for s in data.skipped)
    else:
        assert data.skipped == []
    if data.labels is not None and task == "sst":
        assert set(data.labels.tolist()) == {0, 1, 2, 3, 4}
