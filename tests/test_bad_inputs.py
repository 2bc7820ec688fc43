"""Bad flags, paths and files: one clear line naming the flag or file, exit 2, nothing written.

The cases of issue 27 that need no trained model: the flag checks of
`TrainConfig` (made before TensorFlow starts or any data is read), the run
folder lock between processes, atomic output files and the prediction files'
reader. The cases that need a run are in test_trainer.py, bad data rows in
test_readers.py, bad weight files in test_weight_conversion.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _train_main(args, capsys):
    from training.run import main

    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--epochs=-1"], "--epochs must be at least 1, got -1"),
    (["--limit", "0"], "--limit must be at least 1 (leave it out to use all the data), got 0"),
    (["--limit=-1"], "--limit must be at least 1 (leave it out to use all the data), got -1"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--eval-batch-size=-4"], "--eval-batch-size must be at least 1, got -4"),
    (["--max-length", "2"], "--max-length must be at least 3 ([CLS], one token, [SEP]), got 2"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),
    (["--quora-fraction", "0"], "--quora-fraction must be in (0, 1], got 0.0"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1], got 1.5"),
    (["--lr=-1e-5"], "--lr must be positive, got -1e-05"),
    (["--lr", "nan"], "--lr must be positive, got nan"),
    (["--head-lr", "0"], "--head-lr must be positive, got 0.0"),
    (["--clip-norm", "0"], "--clip-norm must be positive, got 0.0"),
    (["--weight-decay=-0.1"], "--weight-decay must be a non-negative number, got -0.1"),
    (["--seed=-1"], "--seed must be a non-negative integer, got -1"),
    (["--log-every", "0"], "--log-every must be at least 1, got 0"),
    (["--buckets", "16,x"], "--buckets must be 'auto' or comma-separated integers, got '16,x'"),
    (["--buckets", "2,16"], "--buckets must be 'auto' or lengths of at least 3, got (2, 16)"),
    (["--tasks", "sst,mnli"], "--tasks must be a comma-separated list of cfimdb, quora, sst, "
                              "sts, got 'sst,mnli'"),
    (["--kill-after-steps", "0"], "--kill-after-steps must be at least 1, got 0"),
])
def test_bad_flags_stop_before_anything_is_read(flags, message, tmp_path, capsys):
    # The data folder does not exist: the flag is reported first, so nothing was read.
    out = tmp_path / "out"
    code, err = _train_main(["--data-dir", str(tmp_path / "no-data"), "--out", str(out)]
                            + flags, capsys)
    assert code == 2
    assert err == f"error: {message}\n"
    assert not out.exists()


def test_out_below_a_file(tmp_path, tiny_data_dir, capsys):
    # Was a NotADirectoryError traceback.
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "sub"
    code, err = _train_main(["--data-dir", str(tiny_data_dir), "--out", str(out)], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: {out}: not a folder ({tmp_path / 'a-file'} is a file); choose another --out")


def test_missing_data_stops_at_once_with_one_paragraph(tmp_path, tiny_data_dir, monkeypatch):
    # A new user's first `make train` without the CS224N files: one paragraph naming the
    # missing files, the folder, where the data come from and how to point at them; no
    # traceback, and in a fresh process, before TensorFlow is imported.
    import shutil
    import time

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    (data / "sts-dev.csv").unlink()
    (data / "quora-train.csv").unlink()
    env = {k: v for k, v in os.environ.items() if k != "KERASBERT_DATA"}
    code = ("import sys, training.run as r; c = r.main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules); sys.exit(c)")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, "--data-dir", str(data),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == "False\n"  # stopped before TensorFlow
    assert time.monotonic() - start < 10
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: the CS224N data are missing: quora-train.csv, sts-dev.csv "
                           f"not found in {data} (from --data-dir). They come from the Stanford "
                           "CS224N default final project's starter repository "
                           "(minbert-default-final-project")
    assert "data/ folder" in line
    assert line.endswith("point at it with --data-dir /path/to/data, "
                         "KERASBERT_DATA=/path/to/data, or `make train DATA=/path/to/data`.")
    assert not (tmp_path / "out").exists()

    # From $KERASBERT_DATA: the message says so; a single-task run needs only its own files.
    monkeypatch.setenv("KERASBERT_DATA", str(tmp_path / "nowhere"))
    from training.data_files import missing_data_message
    from training.train_config import TrainConfig
    message = missing_data_message(TrainConfig())
    assert message.startswith(f"the CS224N data are missing: the data folder {tmp_path / 'nowhere'}"
                              " (from KERASBERT_DATA) does not exist; it should hold "
                              "ids-sst-train.csv, quora-train.csv, sts-train.csv, "
                              "ids-sst-dev.csv, quora-dev.csv, sts-dev.csv.")
    assert missing_data_message(TrainConfig(variant="classifier", data_dir=str(data))) is None
    monkeypatch.delenv("KERASBERT_DATA")
    assert "neither --data-dir nor KERASBERT_DATA" in missing_data_message(TrainConfig())


def test_export_out_below_a_file(tmp_path, capsys):
    from export.run import main

    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "sub"
    assert main(["--runs", str(tmp_path / "run"), "--out", str(out), "--no-verify"]) == 2
    assert capsys.readouterr().err == (
        f"error: {out}: not a folder ({tmp_path / 'a-file'} is a file); choose another --out\n")


def test_second_export_on_one_out_is_refused(tmp_path, capsys):
    from export.run import main
    from training.run_lock import RunLock

    out = tmp_path / "exports"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with RunLock(out):
        assert main(["--runs", str(tmp_path / "run"), "--out", str(out), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: in use by another run (pid {os.getpid()} on ")
    assert (out / "manifest.json").read_text() == "{}"  # the first export's files untouched


def test_error_line_of_os_errors():
    from kerasbert_lite.error_line import error_line

    assert error_line(PermissionError(13, "Permission denied", "/x/y")) == "/x/y: Permission denied"
    assert error_line(OSError(28, "No space left on device")) == "No space left on device"
    assert error_line(FileNotFoundError("data.csv: no such file")) == "data.csv: no such file"


# ---------------------------------------------------------------- run lock
_HOLDER = """
import sys, time
sys.path[:0] = {paths!r}
from training.run_lock import RunLock
with RunLock({folder!r}):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_names_the_other_process_and_dies_with_it(tmp_path):
    from training.run_lock import RunFolderBusy, RunLock

    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(paths=[str(REPO), str(REPO / "lite")],
                                              folder=str(folder))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy) as info:
            RunLock(folder).acquire()
        message = str(info.value)
        assert message.startswith(f"{folder}: in use by another run (pid {holder.pid} on ")
        assert message.endswith("; wait for it to finish, or choose another --out")
        holder.kill()  # as kill -9: the kernel drops the lock, the file stays
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert (folder / ".lock").exists()
    with RunLock(folder):  # a dead holder never blocks the next run (or --resume)
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert list(folder.iterdir()) == []  # the lock file goes with its holder


# ----------------------------------------------------------- atomic outputs
def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    from training.run_folder import atomic_write

    path = tmp_path / "summary.json"
    path.write_text("old")

    def dies_halfway(f):
        f.write(b"new, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_halfway)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "summary.json"]


def test_prediction_files_whole_and_unique(tmp_path, monkeypatch):
    from training import run_folder as module
    from training.predictions import read_predictions, write_predictions

    path = write_predictions(tmp_path, "quora", "dev", ["a", "b"], [1, 0])
    before = path.read_bytes()
    # A kill between writing and renaming leaves the previous file as it was.
    monkeypatch.setattr(module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        write_predictions(tmp_path, "quora", "dev", ["a", "b"], [0, 1])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["para-dev-output.csv"]

    with pytest.raises(ValueError, match=r"para-dev-output\.csv: id 'a' would be written twice"):
        write_predictions(tmp_path, "quora", "dev", ["a", "b", "a"], [1, 0, 1])
    assert path.read_bytes() == before
    header = "id,Predicted_Is_Paraphrase\n"
    for text, message in (
            (header + "a,1\nb,0\na,0\n", r":4: id 'a' again \(first on line 2\)"),
            (header + "a,1\nb\n", r":3: expected 2 fields"),
            (header + "a,yes\n", r":2: prediction 'yes' is not a number"),
            ("", r": header None")):
        path.write_text(text)
        with pytest.raises(ValueError, match=r"para-dev-output\.csv" + message):
            read_predictions(path)


def test_lite_scores_file_is_written_whole(tmp_path):
    from kerasbert_lite.pair_file import write_scores

    out = tmp_path / "scores.tsv"
    out.write_text("old\n")
    with pytest.raises(TypeError):
        write_scores(out, ["a", "b"], ["c", "d"], [1.0, None])  # fails on the second row
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "scores.tsv"]
    write_scores(out, ["a"], ["c"], [1.0])
    assert out.read_text() == "text_a\ttext_b\tscore\na\tc\t1.0000\n"


def test_vocab_and_config_bytes_that_are_not_utf8(tmp_path):
    # Was "'utf-8' codec can't decode byte 0xe9 in position ..." with no file named.
    from kerasbert.bert_config import BertConfig
    from kerasbert_lite.wordpiece import read_vocabulary

    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\ncaf\xe9\r\n")
    with pytest.raises(ValueError) as info:
        read_vocabulary(vocab)
    assert str(info.value) == f"{vocab}:5: not valid UTF-8 (byte 0xe9)"
    vocab.write_bytes(b"[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\ncafe\r\n")
    assert read_vocabulary(vocab) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cafe"]
    config = tmp_path / "config.json"
    config.write_bytes(b'{"hidden_size": 32, "name": "caf\xe9"}')
    with pytest.raises(ValueError, match=rf"^{config}: not valid JSON"):
        BertConfig.from_json_file(config)
