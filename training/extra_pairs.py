"""`extra_pairs`: unlabeled sentence pairs formed from training text, for a teacher to label.

A distilled student learns the pair tasks from the teacher's outputs, and
those need no gold label: any pair of training sentences can carry one. Two
random sentences are nearly always unrelated (the teacher scores them ~0),
which teaches little, so half the pairs join a sentence to a close neighbour
by word overlap (TF-IDF cosine over lower-cased words, a different text), and
half stay random. Only training text goes in (the caller's pool): never dev
or test sentences.

Pair ids are a hash of the two texts, so the teacher-output cache (keyed by
id) stays right however the pool or `--limit` changes.

Example:
>>> pool = ["a man plays a guitar", "a man is playing the guitar", "stocks fell today",
...         "the market dropped", "a cat sleeps", "a kitten is sleeping"]
>>> pairs = extra_pairs(pool, 4, seed=0, source="toy")
>>> len(pairs), bool(np.isnan(pairs.labels).all())
(4, True)
"""

import hashlib
import re
from collections import defaultdict

import numpy as np

from training.examples import PairData

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _words(text):
    return sorted(set(_WORD.findall(text.lower())))


def _pair_id(a, b):
    return "extra-" + hashlib.sha1(f"{a}\t{b}".encode("utf-8")).hexdigest()[:16]


def extra_pairs(texts, count, seed, source="extra pairs", neighbour_share=0.5, max_df=0.02):
    """`count` distinct unlabeled pairs of the distinct sentences in `texts`.

    Args:
        texts: the pool of training sentences (duplicates are dropped).
        count: how many pairs; at most what the pool allows.
        seed: the draw (same pool and seed, same pairs in the same order).
        source: names the pairs in messages.
        neighbour_share: the part paired with a word-overlap neighbour; the
            rest pair two random sentences.
        max_df: words in more than this share of the pool (stop words) do not
            make neighbours.

    Returns:
        `PairData` with NaN labels (no gold: a distillation loss gives
        these rows the teacher term only).

    Raises:
        ValueError: a negative count, or a pool of fewer than 2 sentences.
    """
    if count < 0:
        raise ValueError(f"{source}: the count of extra pairs must be >= 0, got {count}")
    pool = list(dict.fromkeys(t for t in texts if t.strip()))
    if count and len(pool) < 2:
        raise ValueError(f"{source}: {len(pool)} distinct sentence(s) make no pair")
    rng = np.random.default_rng(seed)
    words = [_words(t) for t in pool]
    postings = defaultdict(list)
    for i, ws in enumerate(words):
        for w in ws:
            postings[w].append(i)
    limit = max(2, int(max_df * len(pool)))
    idf = {w: np.log(len(pool) / len(p)) for w, p in postings.items() if len(p) <= limit}
    index = {w: np.asarray(postings[w]) for w in idf}
    norms = np.sqrt([sum(idf.get(w, 0.0) ** 2 for w in ws) or 1.0 for ws in words])

    def neighbour(i):
        found = [w for w in words[i] if w in index]
        if not found:
            return None
        rows = np.concatenate([index[w] for w in found])
        weights = np.concatenate([np.full(len(index[w]), idf[w] ** 2) for w in found])
        scores = np.bincount(rows, weights=weights, minlength=len(pool)) / norms
        scores[i] = 0.0
        top = np.argsort(-scores, kind="stable")[:5]
        top = top[scores[top] > 0]
        # One of the five closest, so one anchor does not always meet the same text.
        return int(rng.choice(top)) if len(top) else None

    pairs, seen = [], set()
    attempts = 0
    while len(pairs) < count and attempts < 20 * count:
        attempts += 1
        i = int(rng.integers(len(pool)))
        j = neighbour(i) if rng.random() < neighbour_share else None
        if j is None:
            j = int(rng.integers(len(pool) - 1))
            j += j >= i  # any other sentence
        a, b = (pool[i], pool[j]) if rng.random() < 0.5 else (pool[j], pool[i])
        key = _pair_id(a, b)
        if key not in seen:
            seen.add(key)
            pairs.append((key, a, b))
    if not pairs:
        return PairData([], [], [], np.zeros(0, np.float32), source)
    ids, texts_a, texts_b = map(list, zip(*pairs))
    return PairData(ids, texts_a, texts_b, np.full(len(ids), np.nan, np.float32), source)


def training_sentences(train_data):
    """Every sentence of `{task: SentenceData or PairData}`, in task then row order."""
    pool = []
    for data in train_data.values():
        if isinstance(data, PairData):
            pool.extend(data.texts_a)
            pool.extend(data.texts_b)
        else:
            pool.extend(data.texts)
    return pool


def with_extra_pairs(train_data, count, seed):
    """Each pair task of `train_data` with `count` unlabeled pairs of all tasks' sentences added.

    Each task draws its own pairs (seed + its position). The labels of the
    result are float32 with NaN for the extra rows, what `with_teacher_outputs`
    packs beside the teacher's outputs.
    """
    if not count:
        return dict(train_data)
    pool = training_sentences(train_data)
    out = {}
    for k, (task, data) in enumerate(train_data.items()):
        if not isinstance(data, PairData):
            out[task] = data
            continue
        extra = extra_pairs(pool, count, seed + k, source=f"{data.source} + extra pairs")
        known = set(data.ids)
        clash = [i for i in extra.ids if i in known]
        if clash:
            raise ValueError(f"{data.source}: id {clash[0]!r} is both a row and an extra pair")
        out[task] = PairData(list(data.ids) + extra.ids, list(data.texts_a) + extra.texts_a,
                             list(data.texts_b) + extra.texts_b,
                             np.concatenate([np.asarray(data.labels, np.float32), extra.labels]),
                             data.source, skipped=list(data.skipped))
    return out
