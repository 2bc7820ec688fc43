"""The committed results parse, agree with their own prediction files, and the table is current.

CI does not retrain: these tests rescore every row's dev prediction files
against the dev labels and compare with the numbers the table shows.
"""

import csv
import json
import shutil

import numpy as np
import pytest

from experiments.ensemble import ensemble_metrics, size_curve
from experiments.export_figures import export_section
from experiments.results import (EM_EXPORT_END, EM_EXPORT_START, EM_SIZES_END, EM_SIZES_START,
                                 TABLE_END, TABLE_START)
from experiments.rows import RESULTS_DIR, rescore, rows, training_args
from experiments.tables import em_size_table, table
from training.metrics import METRIC_NAMES, predicted_labels, selection_score
from training.multitask_trainer import trained_tasks
from training.predictions import prediction_path, read_predictions
from training.readers import load_split
from training.run import build_parser, config_from_args
from training.variants import get_variant

ROWS = rows()
TRAINED = [r for r in ROWS if (r / "metrics.jsonl").is_file()]


def _row_tasks(row):
    best = json.loads((row / "summary.json").read_text())["best"]
    return [t for t, m in METRIC_NAMES.items() if m in best]


def test_there_are_rows_and_the_readme_table_is_current():
    assert {"dps_mse", "em"} <= {r.name for r in ROWS}
    readme = (RESULTS_DIR / "README.md").read_text()
    current = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert current == table(), "results/README.md is stale: run python -m experiments.results table"
    sizes = readme.split(EM_SIZES_START, 1)[1].split(EM_SIZES_END, 1)[0].strip()
    assert sizes == em_size_table(), "the EM size table is stale: run python -m experiments.results table"
    chosen = json.loads((RESULTS_DIR / "em" / "run.json").read_text())["chosen_size"]
    assert f"| **{chosen} (EM)** |" in sizes
    figures = readme.split(EM_EXPORT_START, 1)[1].split(EM_EXPORT_END, 1)[0].strip()
    assert figures == export_section(RESULTS_DIR), \
        "the EM export figures are stale: run python -m experiments.results table"


@pytest.mark.parametrize("row", TRAINED, ids=lambda r: r.name)
def test_row_files_parse_and_agree(row):
    summary = json.loads((row / "summary.json").read_text())
    history = [json.loads(line) for line in (row / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(history) >= 1
    # The best epoch's logged dev metrics are the ones published.
    logged = history[summary["best_epoch"] - 1]["dev"]
    for metric, value in summary["best"].items():
        assert value == pytest.approx(logged[metric], abs=1e-9), metric
    run = json.loads((row / "run.json").read_text())
    assert run["epochs"] == len(history) and run["machine"]["cores"] >= 1
    # The recorded command rebuilds the recorded config.
    config = json.loads((row / "config.json").read_text())
    rebuilt = config_from_args(build_parser().parse_args(run["args"]))
    for field in ("variant", "epochs", "tasks", "sentiment_task", "mode", "max_length", "lr",
                  "head_lr", "batch_size", "seed"):
        want = config[field] if not isinstance(config[field], list) else tuple(config[field])
        assert getattr(rebuilt, field) == want, field
    # The published epoch is the best by the score the trainer selects with,
    # over the tasks the row trains only (a tie may keep either epoch).
    tasks = trained_tasks(rebuilt, get_variant(rebuilt.variant))
    scores = [selection_score(h["dev"], tasks) for h in history]
    assert scores[summary["best_epoch"] - 1] == pytest.approx(max(scores), abs=1e-12), scores
    assert (row / "learning_curves.png").stat().st_size > 1000
    with open(row / "train_loss.csv", newline="") as f:
        logged_losses = list(csv.DictReader(f))
    assert logged_losses and {r["task"] for r in logged_losses} <= {"sst", "cfimdb", "quora", "sts"}
    assert all(np.isfinite(float(r["loss"])) for r in logged_losses)
    assert max(int(r["step"]) for r in logged_losses) <= history[-1]["step"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_dev_predictions_rescore_to_the_published_metrics(row, data_dir):
    scores = rescore(row, data_dir)
    # Every task the summary reports is rescored from a file.
    assert len(scores) == len(_row_tasks(row)) >= 1
    for metric, (from_files, published) in scores.items():
        assert from_files == pytest.approx(published, abs=1e-3), (row.name, metric)


@pytest.mark.parametrize("row", TRAINED, ids=lambda r: r.name)
def test_raw_outputs_match_the_prediction_files(row):
    # Test outputs exist for rows finished since they were written (see experiments.rows).
    for split in ("dev", "test") if (row / "test-outputs.npz").is_file() else ("dev",):
        raw = np.load(row / f"{split}-outputs.npz")
        tasks = _row_tasks(row) if split == "dev" else raw.files
        assert tasks, (row.name, split)
        for task in tasks:
            predicted = read_predictions(prediction_path(row / "predictions", task, split))
            labels = predicted_labels(task, raw[task])
            np.testing.assert_allclose(labels, list(predicted.values()), atol=6e-5,
                                       err_msg=f"{row.name} {split} {task}")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_test_predictions_cover_the_test_files(row, data_dir):
    for task in _row_tasks(row):
        if task == "quora":
            continue  # no quora-test-student file on these machines
        path = prediction_path(row / "predictions", task, "test")
        with open(path, newline="") as f:
            ids = [r[0] for r in list(csv.reader(f))[1:]]
        assert ids == list(load_split(task, "test", data_dir).ids), path


def test_em_summary_is_the_mean_of_its_members(data_dir):
    em = json.loads((RESULTS_DIR / "em" / "summary.json").read_text())
    curve = json.loads((RESULTS_DIR / "em" / "ensemble_size.json").read_text())
    ranked, recomputed, _, _ = size_curve(curve[-1]["members"], RESULTS_DIR, data_dir)
    assert ranked == curve[-1]["members"]
    for saved, fresh in zip(curve, recomputed):
        for metric, value in saved["dev"].items():
            assert fresh["dev"][metric] == pytest.approx(value, abs=1e-9)
    chosen = next(c for c in curve if c["members"] == em["members"])
    assert em["best"] == chosen["dev"]


def test_em_test_predictions_were_made_by_its_members():
    # Test predictions come from the members' outputs or weights; the summary records
    # which trainings made them, and those must be the trainings the rows hold now.
    from training.run_folder import training_version

    em = json.loads((RESULTS_DIR / "em" / "summary.json").read_text())
    assert em["test_members"] == em["members"]
    assert em["test_member_versions"] == {
        name: training_version(RESULTS_DIR / name) for name in em["members"]}


def test_em_test_predictions_follow_the_members_trainings(tiny_data_dir, tmp_path, capsys):
    from training.predictions import write_predictions

    from experiments.ensemble import update_test_predictions
    from training.run_folder import training_version

    sst, sts = load_split("sst", "test", tiny_data_dir), load_split("sts", "test", tiny_data_dir)
    results, runs, out = tmp_path / "results", tmp_path / "runs", tmp_path / "em"
    for name, score in (("a", 1.0), ("b", 3.0)):
        row = results / name
        write_predictions(row / "predictions", "sst", "test", sst.ids, [0] * len(sst.ids))
        write_predictions(row / "predictions", "sts", "test", sts.ids, [0.0] * len(sts.ids))
        np.savez(row / "test-outputs.npz", sst=np.zeros((len(sst.ids), 5), np.float32),
                 sts=np.full(len(sts.ids), score, np.float32))
        (row / "metrics.jsonl").write_text(f'{{"epoch": 1, "train_seconds": {score}}}\n')
    made = update_test_predictions(["a", "b"], results, out, tiny_data_dir)
    assert made == {"test_members": ["a", "b"], "test_member_versions": {
        "a": training_version(results / "a"), "b": training_version(results / "b")}}
    assert set(read_predictions(out / "sts-test-output.csv").values()) == {2.0}
    # Rows without test outputs (older ones): the same trainings keep their predictions.
    for name in "ab":
        (results / name / "test-outputs.npz").unlink()
    assert update_test_predictions(["a", "b"], results, out, tiny_data_dir, made_by=made) == made
    assert (out / "sts-test-output.csv").is_file()
    # `b` retrained under the same name: its old run folder (the weights of another
    # training than the row) is not used, and the predictions go, saying why.
    (runs / "b").mkdir(parents=True)
    shutil.copy2(results / "b" / "metrics.jsonl", runs / "b")
    (results / "b" / "metrics.jsonl").write_text('{"epoch": 1, "train_seconds": 4.0}\n')
    capsys.readouterr()
    gone = {"test_members": None, "test_member_versions": None}
    assert update_test_predictions(["a", "b"], results, out, tiny_data_dir, runs=runs,
                                   made_by=made) == gone
    err = capsys.readouterr().err
    assert f"{runs / 'a'} (missing), {runs / 'b'} (another training than its row)" in err
    assert "removed 2 test prediction files made by other trainings of ['b'] than" in err
    assert not list(out.glob("*-test-output.csv"))
    # Predictions made for other members go too.
    write_predictions(out, "sst", "test", sst.ids, [0] * len(sst.ids))
    assert update_test_predictions(["a", "b"], results, out, tiny_data_dir,
                                   made_by={"test_members": ["a", "c"]}) == gone
    assert "removed 1 test prediction files made for ['a', 'c'], not ['a', 'b']" in \
        capsys.readouterr().err
    assert not (out / "sst-test-output.csv").exists()


def test_em_test_predictions_from_published_outputs_by_hand(tiny_data_dir, tmp_path, capsys):
    from training.predictions import write_predictions

    from experiments.ensemble import write_test_predictions_from_outputs

    sst, sts = load_split("sst", "test", tiny_data_dir), load_split("sts", "test", tiny_data_dir)
    n_sst, n_sts = len(sst.ids), len(sts.ids)
    # Test example 0, member 1: SST logits [0,0,0,0,4] -> p4 .932, others .017;
    # member 2: [3,0,0,0,-4] -> p0 .869, p1-3 .043, p4 .0008. Mean p: p4 .466 > p0 .443,
    # so class 4, where the mean logit ([1.5,0,0,0,0]) would say class 0.
    # STS example 0: 2.0 and 4.0 -> 3.0. Every other example: uniform SST (class 0), STS 1.0.
    logits = {1: [0, 0, 0, 0, 4], 2: [3, 0, 0, 0, -4]}
    rows = []
    for member in (1, 2):
        row = tmp_path / f"m{member}"
        sst_out = np.zeros((n_sst, 5), np.float32)
        sst_out[0] = logits[member]
        sts_out = np.ones(n_sts, np.float32)
        sts_out[0] = 2.0 * member
        # The prediction files (and so the outputs' rows) in reverse id order:
        # the ensemble must follow each row's files, not assume the test order.
        write_predictions(row / "predictions", "sst", "test", sst.ids[::-1], [0] * n_sst)
        write_predictions(row / "predictions", "sts", "test", sts.ids[::-1], [0.0] * n_sts)
        np.savez(row / "test-outputs.npz", sst=sst_out[::-1], sts=sts_out[::-1])
        rows.append(row)
    out = tmp_path / "em"
    write_predictions(out, "quora", "test", ["stale"], [1])  # from an earlier ensemble
    assert write_test_predictions_from_outputs(rows, out, tiny_data_dir)
    got_sst = read_predictions(out / "sst-test-output.csv")
    got_sts = read_predictions(out / "sts-test-output.csv")
    assert list(got_sst) == list(sst.ids) and list(got_sts) == list(sts.ids)
    assert list(got_sst.values()) == [4] + [0] * (n_sst - 1)
    assert list(got_sts.values()) == [3.0] + [1.0] * (n_sts - 1)
    # No quora test file (as on these machines): reported, and no stale file kept.
    assert not (out / "para-test-output.csv").exists()
    assert "no quora test predictions" in capsys.readouterr().err
    # A member without test outputs: nothing is written, the caller falls back.
    (rows[1] / "test-outputs.npz").unlink()
    assert not write_test_predictions_from_outputs(rows, tmp_path / "none", tiny_data_dir)
    assert not (tmp_path / "none").exists()


def test_ensemble_metrics_average_probabilities_by_hand():
    # Member 1 says class 0 / duplicate (p .9) / 1.0; member 2 says class 2 / not (p .2) / 3.0.
    m1 = {"sst": np.array([[.5, .1, .4]]), "quora": np.array([.9]), "sts": np.array([1.0])}
    m2 = {"sst": np.array([[.1, .3, .6]]), "quora": np.array([.2]), "sts": np.array([3.0])}
    m3 = {"sst": np.array([[.2, .5, .3]]), "quora": np.array([.3]), "sts": np.array([2.0])}
    # Two examples so STS has a Pearson r: put the members' second example in by hand.
    members = []
    for m, second in ((m1, ([0, 0, 1], .4, 4.0)), (m2, ([0, 1, 0], .4, 5.0)),
                      (m3, ([1, 0, 0], .4, 0.0))):
        members.append({"sst": np.vstack([m["sst"], second[0]]),
                        "quora": np.append(m["quora"], second[1]),
                        "sts": np.append(m["sts"], second[2])})
    labels = {"sst": np.array([2, 1]), "quora": np.array([0., 0.]), "sts": np.array([1.0, 2.0])}
    # Means: sst [.267, .3, .433] -> 2 (right); [1/3]*3 -> argmax 0 (wrong): acc .5.
    # quora p .467 -> 0 (right), .4 -> 0 (right): acc 1.  sts [2, 3] vs [1, 2]: r = 1.
    metrics = ensemble_metrics(members, labels)
    assert metrics["sst_acc"] == pytest.approx(.5)
    assert metrics["quora_acc"] == pytest.approx(1.0)
    assert metrics["sts_pearson"] == pytest.approx(1.0)
    assert metrics["overall_cs224n"] == pytest.approx((.5 + 1 + 1) / 3)


def test_training_args_round_trip_through_the_command_line():
    for argv in (["--variant", "bm", "--epochs", "1", "--tasks", "sst"],
                 ["--variant", "classifier", "--task", "cfimdb", "--mode", "frozen",
                  "--epochs", "5", "--max-length", "256"],
                 ["--variant", "classifier_mean", "--task", "sst", "--mode", "frozen", "--epochs", "5"],
                 ["--variant", "cross", "--epochs", "2", "--lr", "3e-05", "--seed", "3"],
                 ["--variant", "distill", "--epochs", "5", "--teacher", "runs/a", "runs/b",
                  "--extra-pairs", "6000", "--embedding-update", "dense"],
                 ["--variant", "distill_cosine_nce", "--epochs", "5", "--teacher", "runs/a",
                  "--calibration-holdout", "0.1", "--student-layers", "3"]):
        config = config_from_args(build_parser().parse_args(argv))
        as_dict = {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in config.__dict__.items()}
        again = config_from_args(build_parser().parse_args(training_args(as_dict)))
        assert again == config, argv


def test_every_setting_of_a_run_is_in_its_recorded_command():
    """A TrainConfig field that changes what is trained must have a flag in
    the row's command, or republishing the row drops it silently."""
    import dataclasses

    from experiments.rows import _FLAGS
    from training.train_config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - set(_FLAGS) - set(TrainConfig.RESUMABLE_CHANGES) == set()


def test_em_test_predictions_are_the_ensemble_mean(tiny_data_dir, tmp_path):
    from test_export_fixtures import MEMBERS, expected_outputs, make_run

    from experiments.ensemble import write_test_predictions

    runs = [make_run(tmp_path / name, seed=i + 1, **kwargs)
            for i, (name, kwargs) in enumerate(MEMBERS.items())]
    # The tiny data, plus a quora test file (these machines have none) made from its dev file.
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    shutil.copy(data / "quora-dev.csv", data / "quora-test-student.csv")
    write_test_predictions(runs, tmp_path / "predictions", data, batch_size=5)
    for task, name, stem in (("sst", "sentiment", "sst"), ("quora", "paraphrase", "para"),
                             ("sts", "similarity", "sts")):
        test = load_split(task, "test", data)
        texts = (test.texts,) if task == "sst" else (test.texts_a, test.texts_b)
        want = expected_outputs(runs, name, *texts)
        got = read_predictions(tmp_path / "predictions" / f"{stem}-test-output.csv")
        assert list(got) == list(test.ids)
        if task == "sst":
            want = want.argmax(-1)
        elif task == "quora":
            want = (want > 0.5).astype(int)
        np.testing.assert_allclose(list(got.values()), want, atol=6e-5, err_msg=task)


def test_export_figures_say_whose_trainings_they_are(tmp_path):
    # The README's export figures come from the manifest and the latency JSON, and
    # their first line tracks whether the exported members are the rows' trainings.
    from training.run_folder import training_version

    results = tmp_path / "results"
    for name in ("a", "b"):
        (results / name).mkdir(parents=True)
        (results / name / "metrics.jsonl").write_text(f'{{"epoch": 1, "name": "{name}"}}\n')
    (results / "em").mkdir()
    (results / "em" / "summary.json").write_text(json.dumps({"members": ["a", "b"]}))
    diffs = {s: 2.5e-7 for s in ("sentiment", "paraphrase", "similarity", "embed")}
    manifest = {
        "members": [{"path": "runs/a", "training": training_version(results / "a")},
                    {"path": "runs/b", "training": training_version(results / "b")}],
        "tensorflow_version": "2.21.0", "keras_version": "3.15.1", "export_seconds": 61.4,
        "files": {k: {"bytes": 3 * 2 ** 20} for k in
                  ("saved_model", "float32", "int8", "ids_float32", "ids_int8")},
        "verification": {
            "parity": {"tolerance": 1e-4, "examples": dict.fromkeys(diffs, 64), "passed": True,
                       "max_abs_diff": {"saved_model": diffs, "tflite_float32": diffs,
                                        "tflite_ids_float32": diffs}},
            "int8": {"source": "/data/here (dev files, seed 0)", "float_reference": "tflite_float32",
                     "embedding_cosine": {"mean": 0.99861, "min": 0.9944, "examples": 500},
                     "metrics": {"sst_accuracy": {"float32": 0.486, "int8": 0.48,
                                                  "change": -0.006, "examples": 500}},
                     "prediction_agreement": {"sentiment": 0.99},
                     "ids_int8_vs_text_int8": dict.fromkeys(diffs, 0.0)}}}
    path = results / "em" / "export_manifest.json"
    path.write_text(json.dumps(manifest))
    text = export_section(results)
    assert "`a` + `b` (TF 2.21.0, Keras 3.15.1; 61 s to export" in text
    manifest["peak_rss_mib"] = 11571
    path.write_text(json.dumps(manifest))
    text = export_section(results)
    assert "; 61 s and 11.3 GiB peak RSS to export and verify)" in text
    assert "hold the very trainings their rows publish" in text
    assert "| SavedModel | 2.5e-07 | 2.5e-07 | 2.5e-07 | 2.5e-07 |" in text
    assert "64 examples per signature; tolerance 1e-4: passed." in text
    assert "| SST acc | .486 | .480 | −.006 | 500 |" in text  # no Quora/STS metrics: no rows
    assert "Quora acc" not in text and "/data/here" not in text
    assert "(dev files, seed 0): decisions agree on 99.0% (sentiment); embedding cosine mean " \
           ".9986, min .9944; ids-in int8 equals text-in int8 exactly." in text
    assert "| 3.0 | 3.0 | 3.0 | 3.0 | 3.0 |" in text and "latency" not in text
    latency = {"token_lengths": [15, 15], "load_before": [1.0], "load_after": [1.25], "rows": [
        {"runtime": "TFLite float32", "threads": 1, "p50_ms": 40.0, "p95_ms": 41.0,
         "min_ms": 39.0, "iterations": 100, "score": 4.5871},
        {"runtime": "TFLite int8", "threads": 1, "p50_ms": 10.0, "p95_ms": 11.0,
         "min_ms": 9.5, "iterations": 100, "score": 4.5766},
        {"runtime": "Keras (eager)", "threads": "tf default", "p50_ms": 700.0, "p95_ms": 750.0,
         "min_ms": 690.0, "iterations": 30, "score": 4.5871}]}
    (results / "em" / "score_latency.json").write_text(json.dumps(latency))
    text = export_section(results)
    assert "| TFLite int8 | 1 | 10.00 | 11.00 | 9.50 | 100 | 4.577 |" in text
    assert "| Keras (eager) | default | 700.00 |" in text
    assert "10.00 ms p50 (5.00 ms per member), 4.0x faster than float32 on one thread and " \
           "70.0x faster than eager Keras." in text
    # `b` retrained and republished after the export: the figures are of other weights.
    (results / "b" / "metrics.jsonl").write_text('{"epoch": 1, "name": "b, again"}\n')
    assert "**Not the trainings the rows publish:** retrained since this export: `b`." in \
        export_section(results)
    # A manifest from before the `training` field, or of other members.
    del manifest["members"][0]["training"]
    path.write_text(json.dumps(manifest))
    assert "is not recorded** (the manifest predates the `training` field) for `a`." in \
        export_section(results)
    manifest["members"][0]["path"] = "runs/c"
    path.write_text(json.dumps(manifest))
    assert "**Not the current EM:** the export's members are c, b; EM's are a, b." in \
        export_section(results)


def test_quora_ranking_reads_the_rows_and_ranks_by_hand(data_dir, capsys):
    """`experiments.quora_ranking`: its accuracy at 0.5 is the rows' published Quora accuracy,
    the mean line is the members' mean, and its AUC is the pairwise count of a brute force."""
    from experiments import quora_ranking

    names = ["distill_nce", "cross_bf16"]
    quora_ranking.main([*names, "--mean", "--data-dir", str(data_dir)])
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    for name in names:
        published = json.loads((RESULTS_DIR / name / "summary.json").read_text())["best"]
        assert float(lines[name][2]) == pytest.approx(published["quora_acc"], abs=1e-4)
    dev = load_split("quora", "dev", data_dir)
    y = np.asarray(dev.labels) > 0.5
    mean = np.mean([quora_ranking.dev_probabilities(n, dev.ids) for n in names], axis=0)
    assert float(lines["mean"][2]) == pytest.approx(((mean > 0.5) == y).mean(), abs=1e-4)

    rng = np.random.default_rng(0)
    scores = rng.normal(size=400).round(1)  # many ties
    labels = rng.random(400) < 1 / (1 + np.exp(-2 * scores))
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
    assert quora_ranking.auc(scores, labels) == pytest.approx(pairwise / (len(pos) * len(neg)))
