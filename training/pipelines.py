"""Length-bucketed `tf.data` pipelines for the CS224N tasks.

XLA compiles one program per input shape, so batches come in a handful of
fixed shapes `(batch_size, L)`, one per length bucket `L`, instead of being
padded to the longest example of each batch (a new shape almost every step)
or always to `max_length` (mostly padding: SST sentences average ~30 tokens).

The work is split in two:

* `batch_plan` decides, in NumPy, which examples form each batch and at which
  bucket length. It is deterministic given `(seed, epoch)`, so a run resumed
  at batch `k` of an epoch sees exactly the batches it would have seen.
* `TaskBatches` turns a plan into a `tf.data.Dataset`: each element gathers its
  texts from in-memory string tensors and tokenises them with `BertTokenizer`
  inside `tf.data.map` (never inside the XLA-compiled step), then prefetches.

Structures yielded (B = batch_size, L = the batch's bucket length; every
tensor listed is int32 unless said otherwise):

* `x` for SST/CFIMDB: `{"token_ids", "segment_ids", "padding_mask"}`, each (B, L).
* `x` for Quora/STS with `pair_encoding="bi"`: `{"a": {...}, "b": {...}}`, the
  two sentences tokenised alone, each three keys, `a` (B, La) and `b` (B, Lb):
  each side has its own bucket length, since the encoder sees them apart
  (padding both to the longer one's bucket cost Quora train 28% of its
  token slots as padding, each side at its own bucket 12%).
* `x` for Quora/STS with `pair_encoding="cross"`: `{"pair": {...}}` =
  `tokenizer(a, b)`, `[CLS] a [SEP] b [SEP]`; the bucket is chosen by the
  packed length.
* `y`: int32 (B,) class ids for sentiment, float32 (B,) for pairs.
* training: `(x, y)`, every batch full.
* evaluation: `(x, y, weight, index)`; `y` is None for unlabeled (test) data,
  `weight` float32 (B,) is 0 on padding rows, `index` (B,) is each row's
  position in the data (`data.ids[index]`). Padding rows repeat example 0
  (index 0, weight 0), so keeping the rows with `weight > 0` scores every
  example exactly once. For `keras.Model.evaluate`, map to `(x, y, weight)`.

Example:
>>> from kerasbert.bert_tokenizer import BertTokenizer
>>> from training.examples import SentenceData
>>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film"])
>>> data = SentenceData(["a", "b", "c"], ["good film", "bad", "good good bad film"],
...                     np.array([1, 0, 1], np.int32), "toy")
>>> ds, n = make_eval_dataset(data, tok, batch_size=2, buckets=(4,), max_length=8)
>>> [(tuple(x["token_ids"].shape), w.numpy().tolist(), i.numpy().tolist())
...  for x, y, w, i in ds]
[((2, 4), [1.0, 1.0], [0, 1]), ((2, 8), [1.0, 0.0], [2, 0])]
"""

import logging

import numpy as np
import tensorflow as tf

from training.examples import PairData, SentenceData

logger = logging.getLogger(__name__)

DEFAULT_BUCKETS = (32, 64, 128)
PAIR_ENCODINGS = ("bi", "cross")
# Marks a padding row in an eval plan; the dataset turns it into index 0, weight 0.
PAD_INDEX = -1

_LENGTH_CHUNK = 8192  # texts per eager `token_lengths` call: bounds peak memory


def resolve_buckets(buckets, max_length):
    """Sorted bucket lengths capped at `max_length`, with `max_length` as the last.

    >>> resolve_buckets((32, 64, 128), 128)
    (32, 64, 128)
    >>> resolve_buckets((128, 32, 64), 100)
    (32, 64, 100)
    >>> resolve_buckets((32, 64, 128), 512)
    (32, 64, 128, 512)
    """
    max_length = int(max_length)
    if buckets is None:
        buckets = DEFAULT_BUCKETS
    kept = sorted({int(b) for b in buckets if int(b) <= max_length} | {max_length})
    if kept[0] < 3:
        raise ValueError(f"bucket lengths must be >= 3 ([CLS] a [SEP] b [SEP]), got {kept}")
    return tuple(kept)


def token_lengths(data, tokenizer, pair_encoding="bi"):
    """Untruncated token lengths (specials included) used to bucket `data`.

    Sentences: `len([CLS] s [SEP])`. Pairs, "bi": the longer of `a` and `b`
    each tokenised alone; "cross": `len([CLS] a [SEP] b [SEP])`.
    WordPiece runs once per dataset and tokenizer; the per-text lengths are
    cached on `data` (and carried along by `data.subset`).

    Returns:
        int64 (N,) NumPy array.
    """
    cache = data._token_length_cache.setdefault(_tokenizer_key(tokenizer), {})
    if isinstance(data, SentenceData):
        if "a" not in cache:
            cache["a"] = _eager_lengths(tokenizer, data.texts)
        return cache["a"]
    _check_pair_encoding(pair_encoding)
    for part, texts in (("a", data.texts_a), ("b", data.texts_b)):
        if part not in cache:
            cache[part] = _eager_lengths(tokenizer, texts)
    if pair_encoding == "bi":
        return np.maximum(cache["a"], cache["b"])
    # Each single length counts [CLS] and [SEP]; the pair has three specials.
    return cache["a"] + cache["b"] - 1


def _eager_lengths(tokenizer, texts):
    parts = [tokenizer.token_lengths(texts[i:i + _LENGTH_CHUNK]).numpy()
             for i in range(0, len(texts), _LENGTH_CHUNK)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _tokenizer_key(tokenizer):
    # Identifies the tokenisation, not the Python object: a reloaded tokenizer
    # with the same vocabulary reuses the cache, a different one does not.
    return (tokenizer.lowercase, len(tokenizer.vocabulary), hash(tuple(tokenizer.vocabulary)))


def pair_side_lengths(data, tokenizer):
    """(N, 2) untruncated token lengths of each pair's `a` and `b`, tokenised alone.

    What a bi-encoder's batches are planned by: each side gets its own bucket.
    """
    token_lengths(data, tokenizer, "bi")
    cache = data._token_length_cache[_tokenizer_key(tokenizer)]
    return np.stack([cache["a"], cache["b"]], axis=1)


def batch_plan(lengths, batch_size, buckets, seed=0, epoch=0, shuffle=True, drop_remainder=None):
    """Assigns examples to fixed-shape batches: a list of `(bucket_length, indices)`.

    Each example goes to the smallest bucket >= its length (longer ones to the
    largest bucket, where the tokenizer truncates them). Examples are sorted
    by bucket and cut into batches of exactly `batch_size` rows; a batch that
    straddles two buckets takes the larger (a bucket's leftover rows move up
    at some extra padding rather than being dropped or padded there), so only
    the last batch has a remainder.

    `lengths` may have one column per side, (N, K), for a bi-encoder's pairs
    (`pair_side_lengths`): each side then has its own bucket and the plan's
    lengths are K-tuples. Examples are sorted by their buckets
    lexicographically, the second side's order reversing at each step of the
    first (a snake, so neighbouring batches stay alike at the turns), and
    each batch pads each side to its own largest bucket.

    Training (`shuffle=True`, which implies `drop_remainder=True`): rows are
    shuffled within buckets and batch order is shuffled, from a generator
    seeded with `(seed, epoch)`; the final remainder (< batch_size examples,
    different ones each epoch) sits out that epoch. The number of batches is
    the same in every epoch.

    Evaluation (`shuffle=False`): data order within buckets, and the final
    remainder is filled up with `PAD_INDEX` rows, so every example appears in
    exactly one batch.

    Args:
        lengths: (N,) untruncated token lengths (see `token_lengths`).
        batch_size: rows per batch.
        buckets: ascending bucket lengths (see `resolve_buckets`).
        seed, epoch: non-negative ints fixing the shuffle.
        shuffle: shuffle rows and batches (training).
        drop_remainder: drop (True) or pad (False) the final remainder;
            defaults to `shuffle`.

    Returns:
        list of `(bucket_length, indices: int64 ndarray (batch_size,))`, the
        bucket length an int for (N,) lengths, a K-tuple of ints for (N, K).

    Example:
    >>> plan = batch_plan([5, 40, 7, 9, 70], batch_size=2, buckets=(16, 64, 128),
    ...                   shuffle=False)
    >>> [(length, idx.tolist()) for length, idx in plan]
    [(16, [0, 2]), (64, [3, 1]), (128, [4, -1])]
    >>> pairs = [[5, 70], [40, 7], [7, 9], [9, 60]]
    >>> [(length, idx.tolist()) for length, idx in batch_plan(
    ...     pairs, batch_size=2, buckets=(16, 64, 128), shuffle=False)]
    [((16, 64), [2, 3]), ((64, 128), [0, 1])]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    sides = lengths.ndim == 2
    lengths = lengths.reshape(len(lengths), -1) if lengths.size else lengths.reshape(0, 1)  # (N, K)
    buckets = tuple(int(b) for b in buckets)
    if list(buckets) != sorted(set(buckets)) or not buckets:
        raise ValueError(f"buckets must be distinct and ascending, got {buckets}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_remainder is None:
        drop_remainder = shuffle
    rng = np.random.default_rng([int(seed), int(epoch)]) if shuffle else None

    bucket_of = np.minimum(np.searchsorted(buckets, lengths, side="left"), len(buckets) - 1)
    # np.lexsort sorts by its last key first: the first side's bucket, then
    # the next side's (snaking), then a random tie-break (training) or data order.
    keys = [rng.random(len(lengths))] if rng is not None else []
    for k in range(bucket_of.shape[1] - 1, 0, -1):
        keys.append(np.where(bucket_of[:, k - 1] % 2 == 1, -bucket_of[:, k], bucket_of[:, k]))
    keys.append(bucket_of[:, 0])
    order = np.lexsort(keys) if keys[0].size else np.zeros(0, np.int64)
    full = order.size // batch_size * batch_size
    starts = list(range(0, full, batch_size))
    chunks = [order[i:i + batch_size] for i in starts]
    if order.size > full and not drop_remainder:
        padding = np.full(batch_size - (order.size - full), PAD_INDEX, np.int64)
        chunks.append(np.concatenate([order[full:], padding]))

    def length_of(rows):
        top = bucket_of[rows[rows >= 0]].max(axis=0)
        return tuple(buckets[k] for k in top) if sides else buckets[top[0]]

    batches = [(length_of(rows), rows.astype(np.int64)) for rows in chunks]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padding_waste(plan, lengths):
    """Fraction of the plan's token slots that are padding (padding rows count whole).

    `lengths` as given to `batch_plan`: (N,), or (N, K) per side.

    >>> padding_waste([(4, np.array([0, 1])), (8, np.array([2, -1]))], [4, 2, 6])
    0.5
    >>> padding_waste([((4, 8), np.array([0, 1]))], [[4, 8], [2, 8]])
    0.0833...
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    lengths = lengths.reshape(len(lengths), -1) if lengths.size else lengths.reshape(0, 1)
    slots = real = 0
    for length, indices in plan:
        indices, length = np.asarray(indices), np.atleast_1d(length)
        slots += indices.size * int(length.sum())
        real += int(np.minimum(lengths[indices[indices >= 0]], length).sum())
    return 1.0 - real / slots if slots else 0.0


def _check_pair_encoding(pair_encoding):
    if pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(f"pair_encoding must be one of {PAIR_ENCODINGS}, got {pair_encoding!r}")


def _without_autotune_thread(dataset):
    """`dataset` without tf.data's autotuning (AUTOTUNE then means static defaults).

    Autotuning runs a model thread per iterator, and destroying an iterator
    joins that thread: in full training runs the join held up the start of
    the next epoch by 10-57 s (py-spy: ~IteratorResource -> ~RootDataset::
    Iterator -> ~LogicalThreadWrapper). Tokenising a batch is never the
    bottleneck, so nothing is lost: map parallelism falls back to the core
    count.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class TaskBatches:
    """One task's data as fixed-shape, length-bucketed `tf.data` batches.

    Args:
        data: `SentenceData` or `PairData` (see `training.readers`).
        tokenizer: a `kerasbert.BertTokenizer`.
        batch_size: rows per batch (every batch has exactly this many).
        buckets: bucket lengths; capped at `max_length`, which is always the
            last bucket (see `resolve_buckets`).
        max_length: longest sequence; longer examples are truncated.
        pair_encoding: for pairs, "bi" (a and b tokenised alone) or "cross"
            (`[CLS] a [SEP] b [SEP]`); ignored for single sentences.
        static_shapes: True (default): one `map` per bucket length, so the
            dataset's element spec has each length fixed, as TPUs and XLA
            want. False: one `map` for all batches, the length dimension
            `None` in the spec and each batch cut to its bucket; the same
            values, for graph mode, where shapes are free: with per-side
            buckets a bi-encoder's pairs have ~70 bucket pairs, and building
            a pipeline per pair each epoch took seconds per task.

    Example:
    >>> from kerasbert.bert_tokenizer import BertTokenizer
    >>> from training.examples import PairData
    >>> tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "how", "old", "age"])
    >>> data = PairData(["p", "q"], ["how old", "age"], ["age", "how old"],
    ...                 np.array([1.0, 0.0], np.float32), "toy")
    >>> batches = TaskBatches(data, tok, batch_size=2, max_length=8, pair_encoding="cross")
    >>> ds, n = batches.train_dataset(seed=0, epoch=0)
    >>> x, y = next(iter(ds))
    >>> n, sorted(x), tuple(x["pair"]["token_ids"].shape), y.dtype.name
    (1, ['pair'], (2, 8), 'float32')
    """

    def __init__(self, data, tokenizer, *, batch_size, buckets=DEFAULT_BUCKETS, max_length=128,
                 pair_encoding="bi", static_shapes=True):
        if not isinstance(data, (SentenceData, PairData)):
            raise TypeError(f"expected SentenceData or PairData, got {type(data).__name__}")
        _check_pair_encoding(pair_encoding)
        self.data = data
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.buckets = resolve_buckets(buckets, self.max_length)
        self.is_pair = isinstance(data, PairData)
        self.pair_encoding = pair_encoding if self.is_pair else None
        self.static_shapes = bool(static_shapes)
        # (N,) lengths, or (N, 2) for a bi-encoder's pairs: each side its own bucket.
        self.lengths = (pair_side_lengths(data, tokenizer) if self.pair_encoding == "bi"
                        else token_lengths(data, tokenizer, pair_encoding))
        self._texts = None  # string tensors, built on first use
        self._eval = None  # the eval plan never changes: build its dataset once

    @property
    def num_train_batches(self):
        """Batches per training epoch (the same for every seed and epoch)."""
        return len(self) // self.batch_size

    def __len__(self):
        return len(self.data)

    def train_plan(self, seed, epoch):
        return batch_plan(self.lengths, self.batch_size, self.buckets, seed, epoch, shuffle=True)

    def eval_plan(self):
        return batch_plan(self.lengths, self.batch_size, self.buckets, shuffle=False)

    def train_dataset(self, seed, epoch, start_batch=0):
        """`(dataset of (x, y), number of batches it yields)` for one epoch.

        `start_batch=k` skips the first k batches of the epoch's plan, for an
        exact resume; the dataset then yields `num_train_batches - k` batches.
        """
        if not self.data.labeled:
            raise ValueError(f"{self.data.source}: cannot train on unlabeled data")
        plan = self.train_plan(seed, epoch)
        if not plan:
            raise ValueError(f"{self.data.source}: {len(self)} examples make no full batch "
                             f"of {self.batch_size}")
        if not 0 <= start_batch <= len(plan):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(plan)}")
        dropped = len(self) - len(plan) * self.batch_size
        logger.info("%s: epoch %d: %d batches of %d, %d examples sit out this epoch, "
                    "padding waste %.1f%%", self.data.source, epoch, len(plan), self.batch_size,
                    dropped, 100 * padding_waste(plan, self.lengths))
        plan = plan[start_batch:]
        return self._dataset(plan, eval_fields=False), len(plan)

    def eval_dataset(self):
        """`(dataset of (x, y_or_None, weight, index), number of batches)`, every example once.

        The same dataset object is returned on every call; it can be iterated
        any number of times.
        """
        if self._eval is None:
            plan = self.eval_plan()
            self._eval = self._dataset(plan, eval_fields=True), len(plan)
        return self._eval

    def _dataset(self, plan, eval_fields):
        return _without_autotune_thread(self._build_dataset(plan, eval_fields))

    def _build_dataset(self, plan, eval_fields):
        texts, labels = self._tensors()
        if not self.static_shapes:
            return self._one_map_dataset(plan, texts, labels, eval_fields)
        order = [length for length, _ in plan]
        lengths = sorted(set(order))
        # One sub-dataset per bucket so each map traces with a static length,
        # interleaved back into plan order by `choose_from_datasets`.
        per_bucket = []
        for length in lengths:
            rows = np.stack([idx for bucket, idx in plan if bucket == length]).astype(np.int32)
            fn = self._batch_fn(length, texts, labels, eval_fields)
            per_bucket.append(tf.data.Dataset.from_tensor_slices(rows)
                              .map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        if not per_bucket:
            return self._empty_dataset(texts, labels, eval_fields)
        if len(per_bucket) == 1:
            dataset = per_bucket[0]
        else:
            choice = tf.data.Dataset.from_tensor_slices(
                np.array([lengths.index(length) for length in order], np.int64))
            dataset = tf.data.Dataset.choose_from_datasets(per_bucket, choice)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(plan)))
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _one_map_dataset(self, plan, texts, labels, eval_fields):
        # Each element carries its rows and its bucket length(s); the batch is
        # tokenised at max_length and cut to them (the plan's lengths hold
        # every row, so the cut removes padding only).
        sides = 2 if self.pair_encoding == "bi" else 1
        rows = np.zeros((len(plan), self.batch_size), np.int32)
        lengths = np.zeros((len(plan), sides), np.int32)
        for k, (length, idx) in enumerate(plan):
            rows[k], lengths[k] = idx, np.broadcast_to(length, (sides,))
        fn = batch_fn(texts, labels, self.tokenizer, self.batch_size, self.max_length,
                      self.pair_encoding, eval_fields, cut=True)
        dataset = tf.data.Dataset.from_tensor_slices((rows, lengths)).map(
            fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _empty_dataset(self, texts, labels, eval_fields):
        # Keeps the element structure of a real dataset when a resume starts
        # after the last batch.
        first = (self.buckets[0],) * self.lengths.shape[1] if self.lengths.ndim == 2 else self.buckets[0]
        fn = self._batch_fn(first, texts, labels, eval_fields)
        rows = np.zeros((0, self.batch_size), np.int32)
        return tf.data.Dataset.from_tensor_slices(rows).map(fn)

    def _tensors(self):
        if self._texts is None:
            self._texts, self._labels = data_tensors(self.data)
        return self._texts, self._labels

    def _batch_fn(self, length, texts, labels, eval_fields):
        return batch_fn(texts, labels, self.tokenizer, self.batch_size, length,
                        self.pair_encoding, eval_fields)


def data_tensors(data):
    """`(texts, labels)`: a tuple of string tensors (one, or a and b) and the label tensor."""
    if isinstance(data, PairData):
        texts = (tf.constant(data.texts_a), tf.constant(data.texts_b))
    elif isinstance(data, SentenceData):
        texts = (tf.constant(data.texts),)
    else:
        raise TypeError(f"expected SentenceData or PairData, got {type(data).__name__}")
    # Class ids are int32; scores, 0/1 pairs and (N, 1 + K) distillation
    # targets (gold, then a teacher's soft outputs) are float32.
    dtype = tf.float32 if isinstance(data, PairData) or np.ndim(data.labels) == 2 else tf.int32
    return texts, None if data.labels is None else tf.constant(data.labels, dtype)


def batch_fn(texts, labels, tokenizer, batch_size, length, pair_encoding, eval_fields=False,
             cut=False):
    """`rows -> (x, y)` (or `(x, y, weight, index)`): one batch at one length, in `tf.data`.

    The one tokenising step of every training pipeline: the custom loop's
    bucketed `TaskBatches` and `model.fit`'s fixed-length streams
    (`training.keras_fit`). `rows` (batch_size,) int32 indexes `texts`;
    `PAD_INDEX` rows become example 0 with weight 0. `pair_encoding` is
    None for single sentences. `length` is an int, or for "bi" pairs also
    `(length_a, length_b)`, each side padded to its own.

    `cut=True`: the function takes `(rows, lengths)`, `lengths` int32 (K,)
    (one per side), tokenises at `length` and cuts each side to its entry of
    `lengths` (its columns beyond are padding when no row is longer); the
    length dimension is then `None` in the element spec.
    """
    def tokenize(*parts, length, cut_to=None):
        encoded = tokenizer(*parts, max_length=length)
        if cut_to is not None:
            return {k: tf.ensure_shape(v[:, :cut_to], (batch_size, None))
                    for k, v in encoded.items()}
        return {k: tf.ensure_shape(v, (batch_size, length)) for k, v in encoded.items()}

    length_a, length_b = length if isinstance(length, tuple) else (length, length)
    if length_a != length_b and pair_encoding != "bi":
        raise ValueError(f"a length per side, {length}, is for bi-encoded pairs only")

    def fn(rows, lengths=None):
        real = rows >= 0
        index = tf.where(real, rows, 0)
        parts = [tf.gather(t, index) for t in texts]
        cut_a, cut_b = (lengths[0], lengths[-1]) if cut else (None, None)
        if len(parts) == 1:
            x = tokenize(parts[0], length=length_a, cut_to=cut_a)
        elif pair_encoding == "bi":
            x = {"a": tokenize(parts[0], length=length_a, cut_to=cut_a),
                 "b": tokenize(parts[1], length=length_b, cut_to=cut_b)}
        else:
            x = {"pair": tokenize(parts[0], parts[1], length=length_a, cut_to=cut_a)}
        y = None if labels is None else tf.gather(labels, index)
        if not eval_fields:
            return x, y
        return x, y, tf.cast(real, tf.float32), index

    return fn


def replica_slices(dataset, context):
    """Each element's rows split among the replicas: this input pipeline's replicas' shares, in turn.

    For `strategy.distribute_datasets_from_function`: `dataset` yields
    global batches (every tensor's first axis is the global batch, any
    shape after it, so labels of any shape travel along), `context` is the
    `tf.distribute.InputContext` of one input pipeline (one worker). Replica
    `r` of `R` takes rows `r * B/R .. (r + 1) * B/R` of every batch; the
    pipeline yields its replicas' shares one after the other, which is how
    the strategy hands consecutive elements to its local replicas. So the
    batches, their order and their bucket lengths are those of one device,
    the global batch size means the same for any replica count, and each
    example is seen once per epoch across all workers.

    Example (one pipeline of two replicas, as a 2-device Mirrored strategy has):
    >>> context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
    ...                                      num_replicas_in_sync=2)
    >>> ds = tf.data.Dataset.from_tensors((np.arange(4), np.arange(8).reshape(4, 2)))
    >>> [(a.numpy().tolist(), b.numpy().tolist()) for a, b in replica_slices(ds, context)]
    [([0, 1], [[0, 1], [2, 3]]), ([2, 3], [[4, 5], [6, 7]])]
    """
    replicas = context.num_replicas_in_sync
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local

    def shares(tensor):
        rows = tensor.shape[0]
        if rows is None or rows % replicas:
            raise ValueError(f"a batch of {rows} rows does not split into {replicas} equal "
                             f"replica shares; use a batch size divisible by {replicas}")
        rest = tensor.shape[1:]
        shape = ([replicas, rows // replicas] + rest.as_list() if rest.is_fully_defined()
                 else tf.concat([[replicas, rows // replicas], tf.shape(tensor)[1:]], 0))
        return tf.reshape(tensor, shape)[first:first + local]

    def split(*element):
        element = element if len(element) > 1 else element[0]
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(shares, element))

    return dataset.flat_map(split).prefetch(tf.data.AUTOTUNE)


def outputs_in_data_order(steps, num_examples, bar=None):
    """Gathers eval batches' outputs back into data order.

    `steps` yields `(outputs, weight, index)` per batch, as an eval dataset's
    `(x, y, weight, index)` gives them once `x` went through a model: rows of
    weight 0 are padding and are dropped, the rest land at their index.
    `bar` (a `kerasbert_lite.progress.Progress`) counts the real rows.

    Example:
    >>> steps = [(np.array([[1.0], [2.0]]), np.array([1.0, 1.0]), np.array([1, 0])),
    ...          (np.array([[3.0], [9.0]]), np.array([1.0, 0.0]), np.array([2, 0]))]
    >>> outputs_in_data_order(steps, 3)[:, 0].tolist()
    [2.0, 1.0, 3.0]
    """
    outputs = None
    for out, weight, index in steps:
        out, keep = np.asarray(out), np.asarray(weight) > 0
        if outputs is None:
            outputs = np.zeros((num_examples,) + out.shape[1:], out.dtype)
        outputs[np.asarray(index)[keep]] = out[keep]
        if bar is not None:
            bar.update(int(keep.sum()))
    return outputs


def make_train_dataset(data, tokenizer, *, batch_size, buckets=DEFAULT_BUCKETS, max_length=128,
                       seed=0, epoch=0, start_batch=0, pair_encoding="bi", static_shapes=True):
    """One training epoch of `data` as `(dataset of (x, y), number of batches it yields)`.

    See `TaskBatches` for the arguments and the module docstring for the
    structures. Deterministic given `(seed, epoch)`; `start_batch=k` yields
    exactly batches k.. of the uninterrupted epoch. Reuse one `TaskBatches`
    across epochs to keep its string tensors; token lengths are cached on
    `data` either way.
    """
    batches = TaskBatches(data, tokenizer, batch_size=batch_size, buckets=buckets,
                          max_length=max_length, pair_encoding=pair_encoding,
                          static_shapes=static_shapes)
    return batches.train_dataset(seed, epoch, start_batch)


def make_eval_dataset(data, tokenizer, *, batch_size, buckets=DEFAULT_BUCKETS, max_length=128,
                      pair_encoding="bi", static_shapes=True):
    """All of `data` once as `(dataset of (x, y_or_None, weight, index), number of batches)`.

    Padding rows have weight 0 and index 0; see the module docstring.
    """
    batches = TaskBatches(data, tokenizer, batch_size=batch_size, buckets=buckets,
                          max_length=max_length, pair_encoding=pair_encoding,
                          static_shapes=static_shapes)
    return batches.eval_dataset()
