"""Unlabeled extra pairs for distillation (`training.extra_pairs`, `--extra-pairs`).

* The pairs: distinct, never a sentence with itself, only pool text, NaN
  labels, ids that are a hash of the texts, the same draw for the same seed.
* Neighbour pairs: on a pool where each sentence shares one rare word with
  exactly one other, every neighbour pair is that partner; random pairs are not.
* `with_extra_pairs`: pair tasks grow by the count after their own rows,
  sentence tasks are untouched.
* The CLI: a tiny distill run labels the extra pairs through the teacher cache;
  the flag without `--variant distill` is refused in one line.
"""

import numpy as np
import pytest

from training.examples import PairData, SentenceData
from training.extra_pairs import _pair_id, extra_pairs, with_extra_pairs


# Sentence 2k and 2k + 1 share the rare word "tok{k}" and nothing else rare.
POOL = [f"the tok{k} is {'red' if i == 0 else 'blue'} and it {'runs' if i == 0 else 'sits'}"
        for k in range(30) for i in range(2)]


def _partner(text):
    return POOL[POOL.index(text) ^ 1]


def test_pairs_are_distinct_unlabeled_pool_text_and_seeded():
    pairs = extra_pairs(POOL + POOL[:5], 40, seed=3, source="toy")  # duplicates dropped
    assert len(pairs) == 40 and len(set(pairs.ids)) == 40
    assert np.isnan(pairs.labels).all() and pairs.labels.dtype == np.float32
    for pair_id, a, b in zip(pairs.ids, pairs.texts_a, pairs.texts_b):
        assert a != b and a in POOL and b in POOL
        assert pair_id == _pair_id(a, b)
    again = extra_pairs(POOL, 40, seed=3)
    assert again.ids == pairs.ids
    assert extra_pairs(POOL, 40, seed=4).ids != pairs.ids
    assert len(extra_pairs(POOL, 0, seed=0)) == 0


def test_neighbour_pairs_join_the_sentence_sharing_a_rare_word():
    near = extra_pairs(POOL, 30, seed=0, neighbour_share=1.0, max_df=0.05)
    assert all(b == _partner(a) for a, b in zip(near.texts_a, near.texts_b))
    far = extra_pairs(POOL, 30, seed=0, neighbour_share=0.0)
    partners = sum(b == _partner(a) for a, b in zip(far.texts_a, far.texts_b))
    assert partners <= 3  # random: each pair is the partner with chance 1/59


def test_bad_counts_and_pools_are_refused():
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        extra_pairs(POOL, -1, seed=0, source="toy")
    with pytest.raises(ValueError, match="1 distinct sentence"):
        extra_pairs(["same", "same"], 2, seed=0, source="toy")


def test_with_extra_pairs_appends_to_pair_tasks_only():
    sst = SentenceData(["s0", "s1"], POOL[:2], np.array([1, 3], np.int32), "sst.csv")
    sts = PairData(["p0", "p1"], POOL[2:4], POOL[4:6], np.array([2.5, 4.0], np.float32),
                   "sts.csv")
    out = with_extra_pairs({"sst": sst, "sts": sts}, 7, seed=0)
    assert out["sst"] is sst
    grown = out["sts"]
    assert len(grown) == 9 and grown.ids[:2] == ["p0", "p1"]
    np.testing.assert_array_equal(grown.labels[:2], [2.5, 4.0])
    assert np.isnan(grown.labels[2:]).all()
    assert set(grown.texts_a[2:] + grown.texts_b[2:]) <= set(POOL[:6])
    assert with_extra_pairs({"sts": sts}, 0, seed=0)["sts"] is sts


def test_distill_labels_the_extra_pairs_through_the_teacher(tiny_model_dir_no_dropout,
                                                            tiny_data_dir, tmp_path):
    from test_export_fixtures import MEMBERS, make_run
    from tiny_setup import TINY_FLAGS, VOCAB, run_training

    teacher = make_run(tmp_path / "teacher", seed=7, vocab=VOCAB, **MEMBERS["bi"])
    common = ["--model", str(tiny_model_dir_no_dropout), "--data-dir", str(tiny_data_dir),
              *TINY_FLAGS, "--epochs", "1"]
    out = tmp_path / "student"
    run = run_training(common + ["--variant", "distill", "--teacher", str(teacher),
                                 "--extra-pairs", "16", "--out", str(out)])
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(out / "teacher_outputs.npz") as cache:
        for task in ("quora", "sts"):
            ids = cache[f"{task}/ids"].tolist()
            extra = [i for i in ids if i.startswith("extra-")]
            assert len(ids) == 96 + 16 and len(extra) == 16, task
            assert np.isfinite(cache[f"{task}/values"]).all()
        assert cache["sst/values"].shape == (96, 5)  # a sentence task gets none
    assert "extra pairs: quora 112 rows" in run.stderr

    refused = run_training(common + ["--variant", "dps_mse", "--extra-pairs", "4",
                                     "--out", str(tmp_path / "no")])
    assert refused.returncode == 2
    assert "--extra-pairs must be given with --variant distill only" in refused.stderr
    assert "Traceback" not in refused.stderr
