"""Distillation: layer selection, the soft-target losses, the teacher and its cache, the CLI.

* `select_layers` / `from_pretrained(layers=...)`: the student's blocks are
  exactly the chosen blocks of the checkpoint.
* The losses against numpy computations of their formulas, and a contrastive
  recipe's InfoNCE term added on the gold positives only.
* `Teacher` from run folders against the members computed one by one in
  Keras (`test_export_fixtures.expected_outputs`), and from the export of
  those runs; the cache is read back without recomputing, and a cache of
  another teacher is refused.
* `--variant distill` on the tiny model and data: with `--teacher-weight 0`
  it trains exactly as dps_mse (the gold half of the loss is dps_mse's).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from test_export_fixtures import MAX_LENGTH, MEMBERS, PAIRS, SENTENCES, expected_outputs, make_run
from tiny_setup import TINY_FLAGS, run_training


# ------------------------------------------------------------ layer selection

def test_from_pretrained_keeps_the_chosen_layers(tmp_path):
    import keras

    import kerasbert
    from kerasbert import BertBackbone, BertConfig, BertTokenizer
    from tiny_setup import VOCAB

    keras.utils.set_random_seed(3)
    config = BertConfig.tiny(vocabulary_size=len(VOCAB), num_layers=4)
    full = BertBackbone.from_bert_config(config)
    kerasbert.save_pretrained(full, BertTokenizer(VOCAB), tmp_path)
    student, _ = kerasbert.from_pretrained(tmp_path, layers=(0, 2))
    assert student.num_layers == 2
    source = {v.path: v.numpy() for v in full.weights}
    renumber = {"transformer_layer_0": "transformer_layer_0",
                "transformer_layer_1": "transformer_layer_2"}
    for variable in student.weights:
        head, _, rest = variable.path.partition("/")
        path = f"{renumber[head]}/{rest}" if head in renumber else variable.path
        np.testing.assert_array_equal(variable.numpy(), source[path], err_msg=variable.path)
    with pytest.raises(ValueError, match="strictly increasing indices in 0..3"):
        kerasbert.from_pretrained(tmp_path, layers=(2, 0))
    with pytest.raises(ValueError, match="strictly increasing indices in 0..3"):
        kerasbert.from_pretrained(tmp_path, layers=(0, 4))


def test_student_layers_every_kth():
    from training.multitask_trainer import student_layers
    from training.train_config import TrainConfig

    assert student_layers(TrainConfig()) is None
    assert student_layers(TrainConfig(student_layers=3)) == (0, 2, 4)  # MiniLM's 6
    assert student_layers(TrainConfig(student_layers=2)) == (0, 3)
    assert student_layers(TrainConfig(student_layers=6)) == (0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="--student-layers must be at most 6"):
        student_layers(TrainConfig(student_layers=7))


# ---------------------------------------------------------------------- losses

def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_sentiment_distillation_is_tempered_kl():
    from kerasbert.losses import sentiment_distillation

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    p = np.exp(_log_softmax(rng.normal(size=(4, 5))))
    for t in (1.0, 2.0):
        q = p ** (1 / t) / (p ** (1 / t)).sum(-1, keepdims=True)
        expected = t * t * np.mean((q * (np.log(q) - _log_softmax(logits / t))).sum(-1))
        assert float(sentiment_distillation(logits, p, t)) == pytest.approx(expected, rel=1e-5)
    # Zero where the student's distribution is the teacher's.
    assert float(sentiment_distillation(np.log(p), p, 2.0)) == pytest.approx(0.0, abs=1e-5)


def test_distillation_loss_mixes_gold_and_teacher():
    from kerasbert.losses import distillation_loss

    logit = np.array([0.3, -1.2, 2.0], np.float32)
    gold = np.array([1.0, np.nan, 0.0], np.float32)  # the second row has no gold label
    p = np.array([0.7, 0.1, 0.4], np.float32)
    s = 1 / (1 + np.exp(-logit.astype(np.float64)))
    bce_gold = -(gold * np.log(s) + (1 - gold) * np.log(1 - s))
    bce_soft = -(p * np.log(s) + (1 - p) * np.log(1 - s))
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    w = 0.3
    expected = (1 - w) * np.nanmean(bce_gold) + w * np.mean(bce_soft - entropy)
    y = np.stack([gold, p], 1)
    assert float(distillation_loss("paraphrase", logit, y, w)) == pytest.approx(expected, rel=1e-5)

    score = np.array([1.0, 4.0, 2.5], np.float32)
    sts = np.stack([np.array([2.0, 4.5, np.nan], np.float32),
                    np.array([1.5, 3.0, 2.0], np.float32)], 1)
    expected = 0.5 * np.mean([1.0, 0.25]) + 0.5 * np.mean([0.25, 1.0, 0.25])
    assert float(distillation_loss("similarity", score, sts, 0.5)) == pytest.approx(expected, rel=1e-6)

    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32))
    y = np.array([[2, 0.1, 0.2, 0.7], [1, 0.5, 0.25, 0.25]], np.float32)
    ce = -np.mean([np.log(0.7), np.log(0.25)])
    assert float(distillation_loss("sentiment", logits, y, 0.25)) == pytest.approx(0.75 * ce, rel=1e-5)


def test_contrastive_distillation_adds_info_nce_on_gold_positives():
    """distill_nce: the distillation loss of the output plus InfoNCE whose
    positives are the gold ones; unlabeled (NaN) rows are negatives only."""
    from kerasbert.losses import TaskLosses, distillation_loss
    from test_losses import info_nce_reference

    rng = np.random.default_rng(5)
    u = rng.normal(size=(5, 4)).astype(np.float32)
    v = (u + 2.0 * rng.normal(size=(5, 4))).astype(np.float32)
    spec = TaskLosses(similarity="infonce", quora_positives=True, temperature=0.1,
                      positive_threshold=4.0, teacher_weight=0.4)

    logit = np.array([0.3, -1.2, 2.0, 0.1, -0.4], np.float32)
    gold = np.array([1.0, np.nan, 0.0, 1.0, np.nan], np.float32)
    y = np.stack([gold, rng.uniform(0.05, 0.95, 5).astype(np.float32)], 1)
    got = float(spec("paraphrase", {"paraphrase": logit, "a": u, "b": v}, y))
    nce = info_nce_reference(u.astype(np.float64), v.astype(np.float64),
                             np.array([True, False, False, True, False]), 0.1)
    assert nce > 0.1
    expected = float(distillation_loss("paraphrase", logit, y, 0.4)) + nce
    assert got == pytest.approx(expected, rel=1e-5)

    score = np.array([4.5, 1.0, 3.0, 4.2, 2.0], np.float32)
    sts = np.stack([np.array([4.0, 1.0, np.nan, 3.9, 5.0], np.float32),
                    np.array([4.2, 1.5, 3.0, 4.0, 4.6], np.float32)], 1)
    got = float(spec("similarity", {"similarity": score, "a": u, "b": v}, sts))
    nce = info_nce_reference(u.astype(np.float64), v.astype(np.float64),
                             np.array([True, False, False, False, True]), 0.1)
    expected = float(distillation_loss("similarity", score, sts, 0.4)) + nce
    assert got == pytest.approx(expected, rel=1e-5)
    # Sentiment has no contrastive term: its distillation loss alone.
    logits = rng.normal(size=(2, 5)).astype(np.float32)
    y = np.array([[2, .1, .2, .4, .2, .1], [0, .5, .2, .1, .1, .1]], np.float32)
    assert float(spec("sentiment", logits, y)) == pytest.approx(
        float(distillation_loss("sentiment", logits, y, 0.4)), rel=1e-6)


# --------------------------------------------------------------------- teacher

@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    from test_export_fixtures import MEMBERS
    root = tmp_path_factory.mktemp("teacher")
    return [make_run(root / name, seed=i + 11, **kwargs)
            for i, (name, kwargs) in enumerate(MEMBERS.items())]


def _sentences(texts):
    from training.readers import SentenceData
    return SentenceData([f"s{i}" for i in range(len(texts))], list(texts),
                        np.zeros(len(texts), np.int32), "sentences")


def _pairs(texts_a, texts_b):
    from training.readers import PairData
    return PairData([f"p{i}" for i in range(len(texts_a))], list(texts_a), list(texts_b),
                    np.zeros(len(texts_a), np.float32), "pairs")


def test_teacher_from_runs_is_the_members_mean(teacher_runs):
    from training.teacher import Teacher

    teacher = Teacher.load([str(p) for p in teacher_runs])
    assert teacher.kind == "runs" and teacher.max_length == MAX_LENGTH
    got = teacher.outputs("sst", _sentences(SENTENCES))
    np.testing.assert_allclose(got, expected_outputs(teacher_runs, "sentiment", SENTENCES),
                               atol=1e-5)
    for task, output in (("quora", "paraphrase"), ("sts", "similarity")):
        got = teacher.outputs(task, _pairs(*PAIRS))
        np.testing.assert_allclose(got, expected_outputs(teacher_runs, output, *PAIRS),
                                   atol=1e-5, err_msg=task)


def test_teacher_from_an_export_equals_its_runs(export_dir, runs):
    from training.teacher import Teacher

    teacher = Teacher.load(export_dir)
    assert teacher.kind == "export"
    members = [runs["bi"], runs["cross"]]
    np.testing.assert_allclose(teacher.outputs("sst", _sentences(SENTENCES)),
                               expected_outputs(members, "sentiment", SENTENCES), atol=1e-4)
    np.testing.assert_allclose(teacher.outputs("sts", _pairs(*PAIRS)),
                               expected_outputs(members, "similarity", *PAIRS), atol=1e-4)


def test_cache_is_read_back_and_another_teachers_refused(teacher_runs, tmp_path):
    from training.teacher import CACHE_FILE, Teacher

    teacher = Teacher.load([teacher_runs[0]])
    data = _pairs(*PAIRS)
    first = teacher.cached_outputs(tmp_path, "sts", data.take(5))
    np.testing.assert_allclose(first, teacher.outputs("sts", data.take(5)), atol=1e-6)

    calls = []
    real = teacher._predict

    def counting(output, pairs):
        calls.append(len(pairs))
        return real(output, pairs)

    teacher._predict = counting
    again = teacher.cached_outputs(tmp_path, "sts", data.take(5))
    np.testing.assert_array_equal(again, first)
    assert calls == []  # all five from the cache
    whole = teacher.cached_outputs(tmp_path, "sts", data)
    assert calls == [len(data) - 5]  # only the three it had not seen
    np.testing.assert_array_equal(whole[:5], first)

    other = Teacher.load([teacher_runs[1]])
    with pytest.raises(ValueError, match=f"{CACHE_FILE}: holds the outputs of another teacher"):
        other.cached_outputs(tmp_path, "sts", data)


def test_bad_teachers_are_refused(teacher_runs, tmp_path):
    from test_export_fixtures import VOCAB
    from training.teacher import Teacher

    with pytest.raises(ValueError, match="not a teacher: neither an export folder"):
        Teacher.load([tmp_path])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Teacher.load([tmp_path / "nowhere"])
    other_vocab = make_run(tmp_path / "other", seed=5, vocab=VOCAB + ["extra"])
    with pytest.raises(ValueError, match="must share one vocabulary"):
        Teacher.load([teacher_runs[0], other_vocab])
    teacher = Teacher.load([teacher_runs[0]])
    with pytest.raises(ValueError, match="first difference at line 37"):
        teacher.check_student(VOCAB + ["extra"], MAX_LENGTH)
    with pytest.raises(ValueError, match="use --max-length 16"):
        teacher.check_student(VOCAB, 32)
    teacher.check_student(VOCAB, MAX_LENGTH)


# ------------------------------------------------------------------------- CLI


def _dev_lines(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_distill_with_teacher_weight_zero_trains_as_dps_mse(tiny_model_dir_no_dropout,
                                                            tiny_data_dir, tmp_path):
    from tiny_setup import VOCAB
    teacher = make_run(tmp_path / "teacher", seed=7, vocab=VOCAB, **MEMBERS["bi"])
    common = ["--model", str(tiny_model_dir_no_dropout), "--data-dir", str(tiny_data_dir),
              "--lr", "2e-3", *TINY_FLAGS, "--epochs", "1"]
    plain = run_training(common + ["--variant", "dps_mse", "--out", str(tmp_path / "plain")])
    assert plain.returncode == 0, plain.stderr[-3000:]
    gold = run_training(common + ["--variant", "distill", "--teacher", str(teacher),
                                  "--teacher-weight", "0", "--out", str(tmp_path / "gold")])
    assert gold.returncode == 0, gold.stderr[-3000:]
    a, b = _dev_lines(tmp_path / "plain")[0], _dev_lines(tmp_path / "gold")[0]
    for task in ("sst", "quora", "sts"):
        assert b["train_loss"][task] == pytest.approx(a["train_loss"][task], abs=1e-5)
    assert b["dev"] == pytest.approx(a["dev"], abs=1e-5)

    with np.load(tmp_path / "gold" / "teacher_outputs.npz") as cache:
        assert cache["sst/values"].shape == (96, 5) and cache["sts/values"].shape == (96,)
    record = json.loads((tmp_path / "gold" / "teacher.json").read_text())
    assert record["teacher"]["paths"] == [str(teacher)]

    # A teacher of another vocabulary is refused before training, naming it.
    stranger = make_run(tmp_path / "stranger", seed=8)
    bad = run_training(common + ["--variant", "distill", "--teacher", str(stranger),
                                 "--out", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "differs from the student's encoder" in bad.stderr
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------- one engine

@pytest.mark.parametrize("variant", ["distill", "distill_nce"])
def test_fit_trains_the_student_as_the_loop_does(tmp_path, variant):
    """Distillation labels through both front-ends: the same weights after 3 steps
    (`distill_nce`: with its InfoNCE terms on the gold positives)."""
    import tensorflow as tf

    import test_engine
    from kerasbert import BertTokenizer
    from tiny_setup import VOCAB, make_data_folder
    from training import keras_fit
    from training.extra_pairs import with_extra_pairs
    from training.readers import load_split

    folder = make_data_folder(tmp_path / "data")
    rng = np.random.default_rng(0)
    # With --extra-pairs' unlabeled pairs (NaN gold), which train by the teacher term alone.
    loaded = with_extra_pairs({task: load_split(task, "train", folder)
                               for task in ("sst", "quora", "sts")}, 48, seed=0)
    data = {}
    for task, k in (("sst", 5), ("quora", 1), ("sts", 1)):
        d = loaded[task]
        soft = (rng.dirichlet(np.ones(5), len(d)) if k == 5 else
                rng.uniform(0, 1 if task == "quora" else 5, (len(d), 1)))
        d.labels = np.concatenate([np.asarray(d.labels, np.float32)[:, None], soft], 1)
        data[task] = d.subset(np.arange(len(d)))
        data[task].labels = d.labels.astype(np.float32)
    dataset, _ = keras_fit.make_fit_dataset(
        data, BertTokenizer(VOCAB), batch_size=test_engine.BATCH, seed=0,
        lengths=dict.fromkeys(("sentiment", "paraphrase", "similarity"), test_engine.LENGTH))
    steps = list(dataset.take(test_engine.STEPS))
    assert tuple(steps[0][1]["sentiment"].shape) == (test_engine.BATCH, 6)
    gold = np.concatenate([y[out].numpy()[:, 0] for _, y in steps
                           for out in ("paraphrase", "similarity")])
    assert 0 < np.isnan(gold).sum() < len(gold)

    start = test_engine.tiny_model(variant)
    looped, losses = test_engine.custom_loop(variant, steps)
    fitted, history = test_engine.with_fit(variant, steps)
    assert test_engine.max_weight_diff(start, looped) > 1e-3
    assert test_engine.max_weight_diff(looped, fitted) < 1e-5
    for output in ("sentiment", "paraphrase", "similarity"):
        mean = np.mean([step[output] for step in losses])
        assert history[f"{output}_loss"][-1] == pytest.approx(mean, rel=1e-5)
    # Metrics read the gold column: evaluate's accuracy is the predictions' against it.
    spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, steps[0])
    results = fitted.evaluate(tf.data.Dataset.from_generator(lambda: iter(steps),
                                                             output_signature=spec),
                              steps=len(steps), return_dict=True, verbose=0)
    hits = [np.argmax(fitted.task_model("sentiment")(x["sentiment"]).numpy(), -1)
            == y["sentiment"].numpy()[:, 0].astype(int) for x, y in steps]
    key = next(k for k in results if k.startswith("sentiment") and k.endswith("acc"))
    assert results[key] == pytest.approx(np.mean(hits), abs=1e-6)
    # ... and skip the unlabeled pairs: r over the rows that have a gold score.
    scores = np.concatenate([np.ravel(fitted.task_model("similarity")(x["similarity"]))
                             for x, _ in steps])
    gold = np.concatenate([y["similarity"].numpy()[:, 0] for _, y in steps])
    known = ~np.isnan(gold)
    assert 0 < known.sum() < len(gold)
    key = next(k for k in results if k.startswith("similarity") and k.endswith("pearson"))
    assert results[key] == pytest.approx(np.corrcoef(scores[known], gold[known])[0, 1], abs=1e-4)
    assert all(np.isfinite(v).all() for v in history.values())
