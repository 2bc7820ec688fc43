"""`--embedding-teacher`: a student learns a bi-encoder teacher's sentence vectors.

* `embedding_distillation` against numpy's squared distance of unit vectors,
  and `TaskLosses(embedding_weight=w)` adding exactly w times it to the pair
  outputs (never to sentiment, never an InfoNCE term a recipe lacks).
* `Teacher.embeddings` against the run's `pair_embeddings` sub-model in Keras,
  normalised by numpy; its cache read back, another teacher's refused; a
  teacher with no one vector per sentence refused by name.
* The CLI on the tiny model and data: the vectors are cached in the run
  folder and packed after the score; a teacher of another width is refused
  before training.
"""

import json

import numpy as np
import pytest

from test_export_fixtures import MAX_LENGTH, MEMBERS, PAIRS, VOCAB, load_member, make_run
from tiny_setup import TINY_FLAGS, run_training


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_loss_is_the_mean_squared_distance_of_unit_vectors():
    from kerasbert.losses import embedding_distillation

    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    teacher = np.concatenate([_unit(rng.normal(size=(6, 4))), _unit(rng.normal(size=(6, 4)))], 1)
    expected = 0.5 * np.mean(((_unit(u) - teacher[:, :4]) ** 2).sum(-1)
                             + ((_unit(v) - teacher[:, 4:]) ** 2).sum(-1))
    got = float(embedding_distillation(u.astype("float32"), v.astype("float32"),
                                       teacher.astype("float32")))
    assert got == pytest.approx(expected, rel=1e-5)
    # Length does not count, direction does: 0 at the teacher's directions.
    assert float(embedding_distillation(3 * teacher[:, :4], 0.5 * teacher[:, 4:], teacher)) \
        == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="student's vectors are 4-d, the teacher's 3-d"):
        embedding_distillation(u, v, teacher[:, :6])


def test_task_losses_add_the_weighted_term_to_pair_outputs_only():
    from kerasbert.losses import TaskLosses, distillation_loss, embedding_distillation

    rng = np.random.default_rng(1)
    b, d = 5, 3
    u, v = rng.normal(size=(b, d)).astype("float32"), rng.normal(size=(b, d)).astype("float32")
    vectors = np.concatenate([_unit(rng.normal(size=(b, d))), _unit(rng.normal(size=(b, d)))], 1)
    gold, score = rng.uniform(0, 5, (b, 1)), rng.uniform(0, 5, (b, 1))
    labels = np.concatenate([gold, score, vectors], 1).astype("float32")
    out = {"similarity": rng.uniform(0, 5, b).astype("float32"), "a": u, "b": v}
    plain = TaskLosses(similarity="mse", teacher_weight=0.5)
    with_vectors = TaskLosses(similarity="mse", teacher_weight=0.5, embedding_weight=0.3)
    assert plain.submodel("similarity") == "similarity"
    assert with_vectors.submodel("similarity") == "similarity_with_vectors"
    assert with_vectors.submodel("sentiment") == "sentiment"
    base = float(distillation_loss("similarity", out["similarity"], labels, 0.5))
    term = float(embedding_distillation(u, v, vectors))
    # No InfoNCE: this recipe is not contrastive, though it now reads the vectors.
    assert float(with_vectors("similarity", out, labels)) == pytest.approx(base + 0.3 * term,
                                                                          rel=1e-5)
    assert float(plain("similarity", out["similarity"], labels)) == pytest.approx(base, rel=1e-6)
    with pytest.raises(ValueError, match="carry no teacher vectors"):
        with_vectors("similarity", out, labels[:, :2])
    # Dev labels (plain (B,) gold) still score through the vectors sub-model's output.
    assert float(with_vectors("similarity", out, gold[:, 0].astype("float32"))) == pytest.approx(
        np.mean((out["similarity"] - gold[:, 0]) ** 2), rel=1e-5)


@pytest.fixture(scope="module")
def bi_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("vectors") / "bi", seed=3, **MEMBERS["bi"])


def _pairs(texts_a, texts_b):
    from training.readers import PairData
    return PairData([f"p{i}" for i in range(len(texts_a))], list(texts_a), list(texts_b),
                    np.zeros(len(texts_a), np.float32), "pairs")


def test_teacher_vectors_are_the_runs_unit_pair_embeddings(bi_run, tmp_path):
    from kerasbert import BertTokenizer
    from training.teacher import EMBEDDING_CACHE, Teacher

    teacher = Teacher.load([bi_run])
    assert teacher.embedding_dim == MEMBERS["bi"]["projection_dim"]
    tok = BertTokenizer(VOCAB, lowercase=True, max_length=MAX_LENGTH)
    # The empty-text pairs have no tokens but [CLS]/[SEP]: still a direction.
    model = load_member(bi_run)
    out = model.task_model("pair_embeddings")({"a": tok(PAIRS[0]), "b": tok(PAIRS[1])},
                                               training=False)
    expected = np.concatenate([_unit(out["a"]), _unit(out["b"])], 1)
    data = _pairs(*PAIRS)
    got = teacher.embeddings(data)
    assert got.shape == (len(data), 2 * teacher.embedding_dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    cached = teacher.cached_embeddings(tmp_path, "sts", data)
    np.testing.assert_array_equal(cached, got)
    teacher._predict = lambda output, pairs: pytest.fail("recomputed a cached vector")
    np.testing.assert_array_equal(teacher.cached_embeddings(tmp_path, "sts", data.take(3)),
                                  got[:3])
    other = Teacher.load([make_run(tmp_path / "other", seed=4, **MEMBERS["bi"])])
    with pytest.raises(ValueError, match=f"{EMBEDDING_CACHE[0]}: holds the sentence vectors "
                                         "of another teacher"):
        other.cached_embeddings(tmp_path, "sts", data)


def test_teachers_without_one_vector_per_sentence_are_refused(bi_run, tmp_path):
    from training.teacher import Teacher

    cross = make_run(tmp_path / "cross", seed=5, **MEMBERS["cross"])
    for paths in ([cross], [bi_run, bi_run]):
        teacher = Teacher.load(paths)
        assert teacher.embedding_dim is None
        with pytest.raises(ValueError, match="give one bi-encoder run folder"):
            teacher.embeddings(_pairs(*PAIRS))


def test_the_student_learns_the_cached_vectors(tiny_model_dir_no_dropout, tiny_data_dir,
                                               tmp_path):
    from tiny_setup import VOCAB as TINY_VOCAB
    from training.variants import get_variant

    width = get_variant("distill").projection_dim
    teacher = make_run(tmp_path / "teacher", seed=7, vocab=TINY_VOCAB,
                       **dict(MEMBERS["bi"], projection_dim=width))
    common = ["--model", str(tiny_model_dir_no_dropout), "--data-dir", str(tiny_data_dir),
              "--lr", "2e-3", *TINY_FLAGS, "--epochs", "1", "--variant", "distill",
              "--teacher", str(teacher)]
    run = run_training(common + ["--embedding-teacher", str(teacher), "--embedding-weight", "2",
                                 "--out", str(tmp_path / "student")])
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(tmp_path / "student" / "teacher_embeddings.npz") as cache:
        values = cache["sts/values"]
    assert values.shape == (96, 2 * width)
    np.testing.assert_allclose(np.linalg.norm(values[:, :width], axis=1), 1.0, atol=1e-5)
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["embedding_teacher"] == str(teacher) and config["embedding_weight"] == 2.0
    assert "sts: 96 sentence vectors" in run.stderr

    narrow = make_run(tmp_path / "narrow", seed=8, vocab=TINY_VOCAB, **MEMBERS["bi"])
    bad = run_training(common + ["--embedding-teacher", str(narrow),
                                 "--out", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "its sentence vectors are 8-d" in bad.stderr, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
    plain = run_training(["--variant", "dps_mse", "--embedding-teacher", str(teacher),
                          "--data-dir", str(tiny_data_dir), "--out", str(tmp_path / "no")])
    assert plain.returncode == 2 and "--embedding-teacher" in plain.stderr
