"""training.pipelines: bucket plans, fixed shapes, exact resume, tf.data == eager tokenizer."""

import numpy as np
import pytest
import tensorflow as tf

from kerasbert.bert_tokenizer import BertTokenizer
from training.pipelines import (PAD_INDEX, TaskBatches, batch_plan, make_eval_dataset,
                                make_train_dataset, padding_waste, resolve_buckets, token_lengths)
from training.examples import PairData, SentenceData
from training.readers import load_split

WORDS = [f"w{i}" for i in range(40)]
BUCKETS = (8, 16)
MAX_LENGTH = 32
SHAPES = {(4, 8), (4, 16), (4, 32)}


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)


def random_texts(rng, n, max_words):
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, max_words + 1))) for _ in range(n)]


@pytest.fixture()
def sentences():
    rng = np.random.default_rng(1)
    n = 37
    return SentenceData([f"s{i}" for i in range(n)], random_texts(rng, n, 40),
                        rng.integers(0, 5, n).astype(np.int32), "toy-sentences")


@pytest.fixture()
def pairs():
    rng = np.random.default_rng(2)
    n = 29
    return PairData([f"p{i}" for i in range(n)], random_texts(rng, n, 20), random_texts(rng, n, 20),
                    rng.uniform(0, 5, n).astype(np.float32), "toy-pairs")


def collect(dataset):
    """A dataset's elements as nested NumPy structures (None stays None)."""
    return [tf.nest.map_structure(lambda t: None if t is None else t.numpy(), element)
            for element in dataset]


def assert_tree_equal(a, b):
    tf.nest.assert_same_structure(a, b)
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resolve_buckets():
    assert resolve_buckets((32, 64, 128), 128) == (32, 64, 128)
    assert resolve_buckets((128, 32, 64), 100) == (32, 64, 100)
    assert resolve_buckets((32, 64, 128), 512) == (32, 64, 128, 512)
    assert resolve_buckets(None, 64) == (32, 64)
    with pytest.raises(ValueError, match=">= 3"):
        resolve_buckets((2, 8), 16)


def lengths_for_plans():
    rng = np.random.default_rng(0)
    return rng.integers(3, 60, size=103)


def test_eval_plan_scores_every_example_once():
    lengths = lengths_for_plans()
    buckets = (8, 16, 32)
    plan = batch_plan(lengths, 8, buckets, shuffle=False)
    assert all(idx.shape == (8,) for _, idx in plan)
    rows = np.concatenate([idx for _, idx in plan])
    real = rows[rows != PAD_INDEX]
    assert sorted(real.tolist()) == list(range(len(lengths)))
    assert (rows == PAD_INDEX).sum() == -len(lengths) % 8
    assert all(PAD_INDEX not in idx for _, idx in plan[:-1])  # padding only at the very end
    for length, idx in plan:
        assert length in buckets
        idx = idx[idx != PAD_INDEX]
        assert np.all(length >= np.minimum(lengths[idx], buckets[-1]))
    # Eval plans ignore seed and epoch.
    assert plan_key(plan) == plan_key(batch_plan(lengths, 8, buckets, seed=5, epoch=9,
                                                 shuffle=False))


def plan_key(plan):
    return [(length, idx.tolist()) for length, idx in plan]


def test_train_plan_deterministic_full_and_reshuffled():
    lengths = lengths_for_plans()
    buckets = (8, 16, 32)
    plan = batch_plan(lengths, 8, buckets, seed=3, epoch=0)
    assert plan_key(plan) == plan_key(batch_plan(lengths, 8, buckets, seed=3, epoch=0))
    assert plan_key(plan) != plan_key(batch_plan(lengths, 8, buckets, seed=3, epoch=1))
    assert plan_key(plan) != plan_key(batch_plan(lengths, 8, buckets, seed=4, epoch=0))
    for epoch in range(4):
        plan = batch_plan(lengths, 8, buckets, seed=3, epoch=epoch)
        rows = np.concatenate([idx for _, idx in plan])
        assert all(idx.shape == (8,) for _, idx in plan)
        assert len(plan) == len(lengths) // 8  # same count every epoch
        assert len(set(rows.tolist())) == rows.size and PAD_INDEX not in rows
        for length, idx in plan:
            assert np.all(length >= np.minimum(lengths[idx], buckets[-1]))
    sat_out = [set(range(len(lengths))) - set(np.concatenate(
        [idx for _, idx in batch_plan(lengths, 8, buckets, seed=3, epoch=e)]).tolist())
        for e in range(4)]
    assert all(len(s) == len(lengths) % 8 for s in sat_out)
    assert len(set(map(frozenset, sat_out))) > 1  # not the same examples every epoch


def test_underfull_buckets_move_up_instead_of_being_dropped():
    lengths = np.array([4, 5, 6] + [12] * 5)  # 3 short ones: less than one batch of 4
    plan = batch_plan(lengths, 4, (8, 16), seed=0, epoch=0)
    assert len(plan) == 2 and all(length == 16 for length, _ in plan)
    assert sorted(np.concatenate([idx for _, idx in plan]).tolist()) == list(range(8))
    # Nothing above to move into: a lone remainder is padded (eval) where it is.
    plan = batch_plan(np.array([4, 5, 6]), 4, (8, 16), shuffle=False)
    assert plan_key(plan) == [(8, [0, 1, 2, PAD_INDEX])]


def test_padding_waste():
    plan = [(4, np.array([0, 1])), (8, np.array([2, PAD_INDEX]))]
    assert padding_waste(plan, [4, 2, 6]) == pytest.approx(0.5)
    assert padding_waste([(4, np.array([0]))], [9]) == 0.0  # truncated, so no waste
    assert padding_waste([], []) == 0.0


def test_token_lengths_are_cached_and_follow_subsets(tok, pairs):
    calls = []

    class Counting(BertTokenizer):
        def token_lengths(self, *args):
            calls.append(len(args[0]))
            return super().token_lengths(*args)

    counting = Counting(tok.vocabulary)
    bi = token_lengths(pairs, counting, "bi")
    cross = token_lengths(pairs, counting, "cross")
    assert len(calls) == 2  # a and b once each, both encodings derived from them
    words_a = np.array([len(t.split()) for t in pairs.texts_a])
    words_b = np.array([len(t.split()) for t in pairs.texts_b])
    np.testing.assert_array_equal(bi, np.maximum(words_a, words_b) + 2)
    np.testing.assert_array_equal(cross, words_a + words_b + 3)
    np.testing.assert_array_equal(cross, tok.token_lengths(pairs.texts_a, pairs.texts_b).numpy())
    sub = pairs.subset([3, 1])
    np.testing.assert_array_equal(token_lengths(sub, counting, "cross"), cross[[3, 1]])
    assert len(calls) == 2


def check_eval_dataset(data, tok, pair_encoding):
    """Every batch has a bucket shape and equals the tokenizer called eagerly."""
    ds, n = make_eval_dataset(data, tok, batch_size=4, buckets=BUCKETS, max_length=MAX_LENGTH,
                              pair_encoding=pair_encoding)
    batches = collect(ds)
    assert len(batches) == n == -(-len(data) // 4)
    seen = []
    for x, y, weight, index in batches:
        # One shape per sentence; a bi-encoder's two sides each have their own.
        side_shapes = [{v.shape for v in part.values()}
                       for part in (x.values() if "token_ids" not in x else [x])]
        assert all(len(shapes) == 1 and shapes <= SHAPES for shapes in side_shapes)
        length, *more = [shapes.pop()[1] for shapes in side_shapes]
        assert all(v.dtype == np.int32 for v in tf.nest.flatten(x))
        assert weight.dtype == np.float32 and index.dtype == np.int32
        if isinstance(data, SentenceData):
            expected = tok(np.array(data.texts)[index], max_length=length)
        elif pair_encoding == "bi":
            expected = {"a": tok(np.array(data.texts_a)[index], max_length=length),
                        "b": tok(np.array(data.texts_b)[index], max_length=more[0])}
        else:
            expected = {"pair": tok(np.array(data.texts_a)[index], np.array(data.texts_b)[index],
                                    max_length=length)}
        assert_tree_equal(x, expected)
        if data.labels is None:
            assert y is None
        else:
            np.testing.assert_array_equal(y, data.labels[index])
        assert np.all(index[weight == 0] == 0)
        seen += index[weight > 0].tolist()
    assert sorted(seen) == list(range(len(data)))
    return batches


def test_sentence_eval_dataset(tok, sentences):
    batches = check_eval_dataset(sentences, tok, "bi")
    x, y, _, _ = batches[0]
    assert sorted(x) == ["padding_mask", "segment_ids", "token_ids"] and y.dtype == np.int32
    assert {b[0]["token_ids"].shape[1] for b in batches} == {8, 16, 32}  # truncation used too


def test_unlabeled_eval_dataset_yields_none(tok, sentences):
    unlabeled = SentenceData(sentences.ids, sentences.texts, None, "toy-test")
    check_eval_dataset(unlabeled, tok, "bi")


@pytest.mark.parametrize("encoding,keys", [("bi", ["a", "b"]), ("cross", ["pair"])])
def test_pair_eval_dataset_structures(tok, pairs, encoding, keys):
    batches = check_eval_dataset(pairs, tok, encoding)
    x, y, _, _ = batches[0]
    assert sorted(x) == keys and y.dtype == np.float32
    for part in x.values():
        assert sorted(part) == ["padding_mask", "segment_ids", "token_ids"]


def test_bi_encoding_buckets_each_side_by_its_own_length(tok):
    short, long = "w1", " ".join(["w2"] * 12)  # 3 and 14 tokens: buckets 8 and 16
    data = PairData(["a", "b", "c", "d"], [short, long, short, long], [long, short, short, long],
                    np.zeros(4, np.float32), "toy")
    batches = collect(make_eval_dataset(data, tok, batch_size=1, buckets=BUCKETS,
                                        max_length=MAX_LENGTH)[0])
    shapes = {int(index[0]): (x["a"]["token_ids"].shape[1], x["b"]["token_ids"].shape[1])
              for x, _, _, index in batches}
    assert shapes == {0: (8, 16), 1: (16, 8), 2: (8, 8), 3: (16, 16)}
    # Batched together, each side pads to its own longest.
    (x, _, _, index), = collect(make_eval_dataset(data.subset([0, 2]), tok, batch_size=2,
                                                  buckets=BUCKETS, max_length=MAX_LENGTH)[0])
    assert x["a"]["token_ids"].shape == (2, 8) and x["b"]["token_ids"].shape == (2, 16)
    assert x["b"]["padding_mask"].sum(axis=1)[np.argsort(index)].tolist() == [14, 3]


def test_pair_plan_pads_each_side_to_its_own_bucket():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=(203, 2))
    buckets = (8, 16, 32, 64)
    for shuffle in (False, True):
        plan = batch_plan(lengths, 8, buckets, seed=1, shuffle=shuffle)
        rows = np.concatenate([idx for _, idx in plan])
        real = rows[rows != PAD_INDEX]
        assert sorted(real.tolist()) == (list(range(203)) if not shuffle
                                         else sorted(real.tolist()))
        assert len(real) == (203 if not shuffle else 203 // 8 * 8)
        for (length_a, length_b), idx in plan:
            idx = idx[idx != PAD_INDEX]
            # Each side's bucket is the smallest that holds that side's longest row.
            for side, length in ((0, length_a), (1, length_b)):
                longest = lengths[idx, side].max()
                assert length == min(b for b in buckets if b >= longest)
    # Against one bucket per pair (the longer side's), fewer token slots.
    longer = lengths.max(axis=1)
    per_pair = batch_plan(longer, 8, buckets, shuffle=False)
    per_side = batch_plan(lengths, 8, buckets, shuffle=False)
    slots = lambda plan: sum(8 * sum(np.atleast_1d(length)) for length, _ in plan)  # noqa: E731
    assert slots(per_side) < slots([((length, length), idx) for length, idx in per_pair])
    assert padding_waste(per_side, lengths) < padding_waste(
        [((length, length), idx) for length, idx in per_pair], lengths)


@pytest.mark.parametrize("encoding", ["bi", "cross"])
def test_start_batch_resumes_exactly(tok, pairs, encoding):
    kwargs = dict(batch_size=4, buckets=BUCKETS, max_length=MAX_LENGTH, seed=7, epoch=2,
                  pair_encoding=encoding)
    full_ds, n = make_train_dataset(pairs, tok, **kwargs)
    full = collect(full_ds)
    assert len(full) == n == len(pairs) // 4 and full_ds.cardinality().numpy() == n
    for x, y in full:
        assert {v.shape for v in tf.nest.flatten(x)} <= SHAPES and y.shape == (4,)
    if encoding == "bi":  # sides padded apart: some batch has two lengths
        assert any(x["a"]["token_ids"].shape != x["b"]["token_ids"].shape for x, _ in full)
    for k in (0, 3, n):
        resumed_ds, m = make_train_dataset(pairs, tok, start_batch=k, **kwargs)
        resumed = collect(resumed_ds)
        assert m == len(resumed) == n - k
        for a, b in zip(resumed, full[k:]):
            assert_tree_equal(a, b)


def test_train_epochs_differ_and_repeat(tok, sentences):
    batches = TaskBatches(sentences, tok, batch_size=4, buckets=BUCKETS, max_length=MAX_LENGTH)
    first = collect(batches.train_dataset(seed=0, epoch=0)[0])
    again = collect(batches.train_dataset(seed=0, epoch=0)[0])
    other = collect(batches.train_dataset(seed=0, epoch=1)[0])
    assert len(first) == len(other) == batches.num_train_batches == len(sentences) // 4
    for a, b in zip(first, again):
        assert_tree_equal(a, b)
    assert any(a[0]["token_ids"].shape != b[0]["token_ids"].shape
               or not np.array_equal(a[0]["token_ids"], b[0]["token_ids"])
               for a, b in zip(first, other))
    # The eval dataset is built once and iterates the same way every time.
    ds, n = batches.eval_dataset()
    assert batches.eval_dataset()[0] is ds
    for a, b in zip(collect(ds), collect(ds)):
        assert_tree_equal(a, b)


def test_train_dataset_errors(tok, sentences):
    with pytest.raises(ValueError, match="unlabeled"):
        make_train_dataset(SentenceData(["a"], ["w1"], None, "t"), tok, batch_size=4,
                           max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match="no full batch"):
        make_train_dataset(sentences.take(3), tok, batch_size=4, max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match="start_batch"):
        make_train_dataset(sentences, tok, batch_size=4, max_length=MAX_LENGTH, start_batch=99)
    with pytest.raises(ValueError, match="pair_encoding"):
        make_eval_dataset(sentences, tok, batch_size=4, max_length=MAX_LENGTH,
                          pair_encoding="siamese")


@pytest.fixture(scope="module")
def real_tok():
    from kerasbert.from_pretrained import embedded_model_dir
    return BertTokenizer(embedded_model_dir() / "vocab.txt")


@pytest.mark.parametrize("task,encoding", [("sst", "bi"), ("sts", "cross")])
def test_real_dev_sets_match_eager_tokenizer(data_dir, real_tok, task, encoding):
    data = load_split(task, "dev", data_dir)
    ds, n = make_eval_dataset(data, real_tok, batch_size=64, max_length=128,
                              pair_encoding=encoding)
    seen = []
    for x, y, weight, index in collect(ds):
        x = x if task == "sst" else x["pair"]
        length = x["token_ids"].shape[1]
        assert x["token_ids"].shape == (64, length) and length in (32, 64, 128)
        if task == "sst":
            expected = real_tok(np.array(data.texts)[index], max_length=length)
        else:
            expected = real_tok(np.array(data.texts_a)[index], np.array(data.texts_b)[index],
                                max_length=length)
        assert_tree_equal(x, expected)
        np.testing.assert_array_equal(y, data.labels[index])
        seen += index[weight > 0].tolist()
    assert sorted(seen) == list(range(len(data)))


@pytest.mark.parametrize("kind", ["sentences", "bi", "cross"])
def test_one_map_datasets_equal_the_per_bucket_ones(tok, sentences, pairs, kind):
    """static_shapes=False (graph mode's single map, each batch cut to its
    bucket) yields the same batches, in the same shapes, as a map per bucket."""
    data, encoding = (sentences, "bi") if kind == "sentences" else (pairs, kind)
    kwargs = dict(batch_size=4, buckets=BUCKETS, max_length=MAX_LENGTH, pair_encoding=encoding)
    static, dynamic = (TaskBatches(data, tok, static_shapes=flag, **kwargs) for flag in (True, False))
    for make in (lambda b: b.train_dataset(seed=3, epoch=1), lambda b: b.train_dataset(3, 1, 2),
                 lambda b: b.eval_dataset()):
        (ds_s, n_s), (ds_d, n_d) = make(static), make(dynamic)
        assert n_s == n_d
        a, b = collect(ds_s), collect(ds_d)
        assert len(a) == len(b) == n_d
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
        spec = tf.nest.flatten(ds_d.element_spec[0])[0]
        assert spec.shape.as_list() == [4, None]
    # Lengths really vary between batches (and, for bi pairs, between sides).
    shapes = {tuple(v.shape for v in tf.nest.flatten(x)) for x, *_ in collect(
        dynamic.eval_dataset()[0])}
    assert len(shapes) > 1
    # No autotune model thread, whose join stalled epoch ends (see _without_autotune_thread).
    for batches in (static, dynamic):
        for ds in (batches.train_dataset(3, 1)[0], batches.eval_dataset()[0]):
            assert ds.options().autotune.enabled is False
