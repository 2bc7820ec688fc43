"""Issue 25's claim: a fourth dataset of an existing label kind is one new `Task` row.

Each test adds rows to `kerasbert_lite.tasks.TASKS` (monkeypatched, so the
table is restored after) and nothing else: an "sst2"-like binary sentiment
set and an "sts2"-like pair-similarity set, written as CS224N files. The
readers, the metrics, the prediction writer, the flags, the data check, the
run summary and the results table must all take them from the row alone. The
last test trains the classifier variant on "sst2" end to end (tiny model).
"""

import csv
import dataclasses

import numpy as np
import pytest

from kerasbert_lite import tasks as table

SST2 = dataclasses.replace(table.TASKS["sst"], name="sst2", file_stem="ids-sst2",
                           metric="sst2_acc", prediction_stem="sst2", num_classes=2,
                           title="SST-2")
STS2 = dataclasses.replace(table.TASKS["sts"], name="sts2", file_stem="sts2",
                           metric="sts2_pearson", prediction_stem="sts2", title="STS-2")

SST2_DEV = [("s2-0", "a great film", 1), ("s2-1", "an awful plot", 0),
            ("s2-2", "good acting", 1), ("s2-3", "bad and dull", 0)]
STS2_DEV = [("p-0", "a cat sat", "a cat sat down", 4.5), ("p-1", "rain in the city", "a dog", 0.5),
            ("p-2", "music and food", "food and music", 5.0)]


@pytest.fixture
def fourth(monkeypatch):
    """`TASKS` with the two new rows; everything else as committed."""
    monkeypatch.setitem(table.TASKS, "sst2", SST2)
    monkeypatch.setitem(table.TASKS, "sts2", STS2)


def _write(path, header, rows):
    # The CS224N layout: tab-separated, an unnamed index column first.
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow([""] + header)
        writer.writerows([i, *row] for i, row in enumerate(rows))


@pytest.fixture
def data(tmp_path):
    """A data folder holding only the new datasets' files."""
    for split in ("train", "dev"):
        _write(tmp_path / f"ids-sst2-{split}.csv", ["id", "sentence", "sentiment"], SST2_DEV)
        _write(tmp_path / f"sts2-{split}.csv", ["id", "sentence1", "sentence2", "similarity"],
               STS2_DEV)
    _write(tmp_path / "ids-sst2-test-student.csv", ["id", "sentence"],
           [r[:2] for r in SST2_DEV[:2]])
    return tmp_path


def test_the_derived_views_and_lookups_see_the_rows(fourth):
    assert table.get_task("sst2") is SST2
    assert table.METRIC_NAMES["sst2"] == "sst2_acc" and table.METRIC_NAMES["sts2"] == "sts2_pearson"
    assert dict(table.SENTIMENT_CLASSES) == {"sst": 5, "cfimdb": 2, "sst2": 2}
    assert table.sentiment_task_names() == ("sst", "cfimdb", "sst2")
    assert [t.name for t in table.tasks_of_output("similarity")] == ["sts", "sts2"]
    # The benchmark (its overall score, its export checks, its table columns) stays SST/Quora/STS.
    assert table.benchmark_task("sentiment").name == "sst"
    assert (SST2.column, SST2.metric_title, STS2.column) == ("SST-2 acc", "SST-2 accuracy", "STS-2 r")


def test_readers_read_the_new_files(fourth, data):
    from training.readers import SENTIMENT_CLASSES, load_split, split_path

    assert SENTIMENT_CLASSES["sst2"] == 2  # the readers' own import of the view
    assert split_path("sst2", "test", data).name == "ids-sst2-test-student.csv"
    dev = load_split("sst2", "dev", data)
    assert dev.ids == [r[0] for r in SST2_DEV] and dev.texts == [r[1] for r in SST2_DEV]
    assert dev.labels.tolist() == [1, 0, 1, 0]
    assert load_split("sst2", "test", data).labels is None
    pairs = load_split("sts2", "dev", data)
    assert pairs.texts_b[0] == "a cat sat down"
    assert pairs.labels.tolist() == pytest.approx([4.5, 0.5, 5.0])


def test_metrics_score_the_new_tasks(fourth):
    from training.metrics import (METRIC_NAMES, overall_scores, predicted_labels, selection_score,
                                  task_metric)

    logits = np.array([[-1.0, 2.0], [3.0, 0.0], [0.5, 0.2], [0.0, 1.0]])  # argmax 1, 0, 0, 1
    predicted = predicted_labels("sst2", logits)
    assert predicted.tolist() == [1, 0, 0, 1]
    assert task_metric("sst2", predicted, [1, 0, 1, 0]) == 0.5
    scores = np.array([4.0, 1.0, 4.5])
    r = task_metric("sts2", scores, [4.5, 0.5, 5.0])
    assert r == pytest.approx(np.corrcoef(scores, [4.5, 0.5, 5.0])[0, 1]) and r > 0.99
    metrics = {METRIC_NAMES["sst2"]: 0.5, "sts2_pearson": 0.6}
    # A run that trains the new tasks selects its epoch by them, r mapped to [0, 1].
    assert selection_score(metrics, tasks=["sst2", "sts2"]) == pytest.approx((0.5 + 0.8) / 2)
    # The overall scores are the benchmark's: a new dataset's metric does not enter them.
    assert overall_scores({"sst_acc": .5, "quora_acc": .8, "sts_pearson": .4, **metrics}) == {
        "overall_mean": pytest.approx(.5666667), "overall_cs224n": pytest.approx(2 / 3)}


def test_prediction_writer_names_the_new_files(fourth, tmp_path):
    from training.predictions import write_predictions

    path = write_predictions(tmp_path, "sst2", "dev", ["s2-0", "s2-1"], np.array([1, 0]))
    assert path.name == "sst2-dev-output.csv"
    assert path.read_text().splitlines() == ["id,Predicted_Sentiment", "s2-0,1", "s2-1,0"]
    path = write_predictions(tmp_path, "sts2", "test", ["p-0"], np.array([3.14159]))
    assert path.name == "sts2-test-output.csv"
    assert path.read_text().splitlines() == ["id,Predicted_Similarity", "p-0,3.1416"]


def test_flags_accept_the_new_tasks(fourth, data):
    from training.data_files import missing_data_message, required_files
    from training.run import build_parser
    from training.train_config import TrainConfig
    from training.variants import get_variant

    parser = build_parser()
    assert parser.parse_args(["--task", "sst2"]).task == "sst2"
    assert "for --variant classifier: sst or cfimdb or sst2" in " ".join(parser.format_help().split())
    TrainConfig(variant="classifier", sentiment_task="sst2")
    TrainConfig(tasks=("sst", "quora", "sts2"))
    with pytest.raises(ValueError, match="--task must be sst or cfimdb or sst2, got 'sts2'"):
        TrainConfig(variant="classifier", sentiment_task="sts2")
    assert required_files(get_variant("classifier"), sentiment_task="sst2") == [
        ("sst2", "train"), ("sst2", "dev")]
    assert missing_data_message(TrainConfig(variant="classifier", sentiment_task="sst2",
                                            data_dir=str(data))) is None


def test_run_summary_and_results_table_name_the_new_task(fourth):
    from experiments.tables import column_score
    from training.run_summary import summary_table

    best = {"sst2_acc": 0.912, "sts2_pearson": 0.5}
    lines = summary_table({"variant": "classifier", "best_epoch": 1, "epochs": 1, "best": best},
                          "runs/x").splitlines()
    assert lines[1:3] == ["  SST-2 accuracy     0.912", "  STS-2 Pearson r    0.500"]
    # A classifier row trained on the new set shows in the sentiment column, as CFIMDB's do.
    assert column_score(best, "sst") == 0.912 and column_score(best, "quora") is None


def test_classifier_trains_on_the_new_dataset(fourth, tiny_model_dir, tiny_data_dir, tmp_path):
    """`--variant classifier --task sst2`: trained, scored and written with no code change."""
    import json
    import shutil

    from tiny_setup import tiny_config
    from training.multitask_trainer import MultitaskTrainer

    # The tiny SST files' signal, binarized (awful/bad -> 0, good/great -> 1; okay dropped).
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        with open(tiny_data_dir / f"ids-sst-{split}.csv", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:]
        _write(data / f"ids-sst2-{split}.csv", ["id", "sentence", "sentiment"],
               [(i, s, int(y) // 3) for _, i, s, y in rows if y != "2"])
    shutil.copy(tiny_data_dir / "ids-sst-test-student.csv", data / "ids-sst2-test-student.csv")
    out = tmp_path / "run"
    config = tiny_config(tiny_model_dir, data, out, variant="classifier", sentiment_task="sst2",
                         epochs=1)
    MultitaskTrainer(config).train()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["best"]) == {"sst2_acc"}
    assert 0.0 <= summary["best"]["sst2_acc"] <= 1.0
    dev = (out / "predictions" / "sst2-dev-output.csv").read_text().splitlines()
    assert dev[0] == "id,Predicted_Sentiment" and len(dev) == 1 + sum(
        1 for line in (data / "ids-sst2-dev.csv").read_text().splitlines()[1:])
    assert {line.split(",")[1] for line in dev[1:]} <= {"0", "1"}
    assert (out / "predictions" / "sst2-test-output.csv").is_file()


def test_multitask_run_trains_and_scores_a_new_pair_dataset(fourth, tiny_model_dir, tiny_data_dir,
                                                            tmp_path):
    """`--tasks sst,sts2`: the new pair set trains the similarity head and picks the epoch."""
    import json
    import shutil

    from tiny_setup import tiny_config
    from training.data_files import required_files
    from training.multitask_trainer import MultitaskTrainer
    from training.variants import get_variant

    assert required_files(get_variant("bm"), tasks=("sst", "sts2")) == [
        ("sst", "train"), ("sts2", "train"), ("sst", "dev"), ("quora", "dev"), ("sts", "dev"),
        ("sts2", "dev")]
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    for split in ("train", "dev"):  # the tiny STS files under the new row's names
        shutil.copy(data / f"sts-{split}.csv", data / f"sts2-{split}.csv")
    out = tmp_path / "run"
    config = tiny_config(tiny_model_dir, data, out, variant="bm", tasks=("sst", "sts2"), epochs=1)
    MultitaskTrainer(config).train()
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best"]
    assert {"sst_acc", "quora_acc", "sts_pearson", "sts2_pearson"} <= set(best)
    # Same dev file, same head: the new row scores exactly what STS does.
    assert best["sts2_pearson"] == pytest.approx(best["sts_pearson"], abs=1e-4)
    assert (out / "predictions" / "sts2-dev-output.csv").read_text().splitlines()[0] == (
        "id,Predicted_Similarity")
