"""`Teacher`: a trained model or ensemble whose soft outputs a student learns from.

A teacher is either the run folders of one or more trained `MultitaskBert`s
(their outputs averaged as `export.MultitaskEnsemble` averages them: softmax
probabilities, sigmoid probabilities, 0-5 scores) or an export folder (its
text-in SavedModel, which is that average already). Its outputs on the
training sets are computed once, batched and length-sorted, and cached by
example id in the student's run folder (`teacher_outputs.npz` +
`teacher.json`), so `--resume` and reruns never recompute them; a cache
written by another teacher is refused, never mixed in.

Soft outputs, per training task:
  - `sst` / `cfimdb`: class probabilities, (N, C);
  - `quora`: the probability of "paraphrase", (N,);
  - `sts`: the similarity score on the 0-5 scale, (N,).

A single bi-encoder run folder can also teach its sentence vectors
(`--embedding-teacher`): `embeddings(data)` gives each pair's unit vectors
of a and b, (N, 2D), cached beside the outputs (`teacher_embeddings.npz` +
`embedding_teacher.json`).
"""

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from kerasbert_lite.tasks import get_task
from training import run_folder as rf
from training.examples import PairData
from training.run_folder import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FILE = rf.TEACHER_OUTPUTS
CACHE_RECORD = rf.TEACHER_RECORD
EMBEDDING_CACHE = (rf.TEACHER_EMBEDDINGS, rf.EMBEDDING_TEACHER_RECORD)
PAIR_EMBEDDINGS = "pair_embeddings"
_RUN_FILES = (rf.CONFIG, rf.BEST_MODEL, rf.VOCAB)


def _sha256(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


class Teacher:
    """Soft outputs of a trained model or ensemble, for distillation.

    Use `Teacher.load(paths)`; `outputs(task, data)` gives the teacher's soft
    outputs for a `SentenceData` / `PairData`, and `cached_outputs` the same
    through the run folder's cache.

    Args:
        kind: `"runs"` or `"export"`.
        paths: the folders it was loaded from.
        vocabulary: its token list (the student must share it).
        max_length: its tokens per sentence or pair.
        fingerprint: a hash of its weight files: which teacher this is.
        predict: `predict(output, data)` -> numpy soft outputs in data order.
        embedding_dim: the width of its sentence vectors, for a single
            bi-encoder run folder; None for any other teacher (it has no
            one vector per sentence to teach).

    Example:
    >>> teacher = Teacher.load(["runs/dps_mse"])                 # doctest: +SKIP
    >>> teacher.outputs("sts", sts_train)[:3]                     # doctest: +SKIP
    array([3.9, 1.2, 4.6], dtype=float32)
    """

    def __init__(self, kind, paths, vocabulary, max_length, fingerprint, predict,
                 embedding_dim=None):
        self.kind = kind
        self.embedding_dim = embedding_dim
        self.paths = [str(p) for p in paths]
        self.vocabulary = list(vocabulary)
        self.max_length = int(max_length)
        self.fingerprint = fingerprint
        self._predict = predict

    # ------------------------------------------------------------- loading
    @classmethod
    def load(cls, paths, batch_size=128):
        """A teacher from one export folder, or from one or more run folders.

        Raises:
            ValueError / FileNotFoundError: a path that is neither, naming it
                and what it lacks; run folders with different vocabularies
                or max lengths.
        """
        paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        if not paths:
            raise ValueError("--teacher: give an export folder or run folders")
        for path in paths:
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: --teacher folder does not exist")
        exports = [p for p in paths if (p / "manifest.json").is_file()
                   and (p / "saved_model").is_dir()]
        if exports:
            if len(paths) > 1:
                raise ValueError(f"{exports[0]}: an export folder is a whole teacher; "
                                 "give it alone, or give run folders")
            return cls._from_export(paths[0], batch_size)
        for path in paths:
            missing = [name for name in _RUN_FILES if not (path / name).is_file()]
            if missing:
                raise ValueError(
                    f"{path}: not a teacher: neither an export folder (manifest.json + "
                    f"saved_model/) nor a run folder ({', '.join(_RUN_FILES)}; missing "
                    f"{', '.join(missing)})")
        return cls._from_runs(paths, batch_size)

    @classmethod
    def _from_runs(cls, paths, batch_size):
        import keras
        import tensorflow as tf

        import kerasbert
        from kerasbert.bert_tokenizer import read_vocabulary
        from training.pipelines import TaskBatches, outputs_in_data_order

        configs = [rf.read_config(p) for p in paths]
        vocabulary = read_vocabulary(paths[0] / rf.VOCAB)
        for path, config in zip(paths, configs):
            if read_vocabulary(path / rf.VOCAB) != vocabulary:
                raise ValueError(f"{path / rf.VOCAB} differs from {paths[0] / rf.VOCAB}: "
                                 "teacher members must share one vocabulary")
            for key in ("max_length", "lowercase"):
                if config.get(key) != configs[0].get(key):
                    raise ValueError(f"{path / rf.CONFIG}: {key}={config.get(key)!r} but "
                                     f"{paths[0]} has {configs[0].get(key)!r}")
        max_length = int(configs[0]["max_length"])
        tokenizer = kerasbert.BertTokenizer(vocabulary, lowercase=bool(configs[0]["lowercase"]),
                                            max_length=max_length)
        members = []
        for path in paths:
            try:
                model = keras.saving.load_model(path / rf.BEST_MODEL, compile=False)
            except Exception as e:  # a zip/JSON/weights problem: say which file
                raise ValueError(f"{path / rf.BEST_MODEL}: cannot load the model "
                                 f"({type(e).__name__}: {e})") from e
            members.append(model)
        buckets = tuple(range(8, max_length, 8)) + (max_length,)
        functions = {}

        def predict(output, data):
            total = None
            for m, model in enumerate(members):
                batches = TaskBatches(data, tokenizer, batch_size=batch_size, buckets=buckets,
                                      max_length=max_length, pair_encoding=model.pair_encoding)
                key = (m, output)
                if key not in functions:
                    submodel = model.task_model(output)
                    call = (_unit_pair_vectors(submodel) if output == PAIR_EMBEDDINGS
                            else (lambda x, s=submodel: s(x, training=False)))
                    functions[key] = tf.function(call, reduce_retracing=True)
                dataset, _ = batches.eval_dataset()
                bar = _progress(len(data), f"teacher {m + 1}/{len(members)} {output}")
                out = outputs_in_data_order(((functions[key](x), weight, index)
                                             for x, _y, weight, index in dataset), len(data), bar)
                bar.close()
                out = _soft(output, out)
                total = out if total is None else total + out
            return (total / len(members)).astype(np.float32)

        fingerprint = _sha256([p / rf.BEST_MODEL for p in paths])
        embedding_dim = None
        if len(members) == 1 and members[0].pair_encoding == "bi":
            embedding_dim = int(members[0].task_model(PAIR_EMBEDDINGS).outputs[0].shape[-1])
        return cls("runs", paths, vocabulary, max_length, fingerprint, predict, embedding_dim)

    @classmethod
    def _from_export(cls, path, batch_size):
        import tensorflow as tf

        from kerasbert.bert_tokenizer import read_vocabulary
        try:
            import tensorflow_text  # noqa: F401  registers the tokenizer ops the graph uses
        except ImportError as e:
            raise ImportError("an export folder teacher needs tensorflow-text "
                              "(pip install 'tensorflow-text==2.21.*')") from e
        manifest = _read_json(path / "manifest.json")
        if "max_length" not in manifest:
            raise ValueError(f"{path / 'manifest.json'}: no max_length")
        vocabulary = read_vocabulary(path / "vocab.txt")
        saved = tf.saved_model.load(str(path / "saved_model"))
        names = {"sentiment": "probabilities", "paraphrase": "probability",
                 "similarity": "score"}

        def predict(output, data):
            texts_a, texts_b = ((data.texts_a, data.texts_b) if isinstance(data, PairData)
                                else (data.texts, None))
            if output not in saved.signatures:
                raise ValueError(f"{path / 'saved_model'}: no {output!r} signature")
            fn = saved.signatures[output]
            # Sorted by length so each batch is trimmed to its longest text.
            order = np.argsort([len(t) + (len(texts_b[i]) if texts_b else 0)
                                for i, t in enumerate(texts_a)], kind="stable")
            result = None
            bar = _progress(len(order), f"teacher {output}")
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                if texts_b is None:
                    out = fn(text=tf.constant([texts_a[i] for i in rows]))
                else:
                    out = fn(text_a=tf.constant([texts_a[i] for i in rows]),
                             text_b=tf.constant([texts_b[i] for i in rows]))
                values = out[names[output]].numpy()
                if result is None:
                    result = np.zeros((len(order),) + values.shape[1:], np.float32)
                result[rows] = values
                bar.update(len(rows))
            bar.close()
            return result

        weights = [path / "saved_model" / "saved_model.pb",
                   *sorted((path / "saved_model" / "variables").glob("*"))]
        return cls("export", [path], vocabulary, manifest["max_length"], _sha256(weights),
                   predict)

    # ------------------------------------------------------------- outputs
    def describe(self):
        """What `teacher.json` records of this teacher."""
        return {"kind": self.kind, "paths": self.paths, "fingerprint": self.fingerprint,
                "max_length": self.max_length,
                "vocabulary": hashlib.sha256("\n".join(self.vocabulary).encode()).hexdigest()[:16]}

    def check_student(self, vocabulary, max_length, source="the student"):
        """Refuses a student with another vocabulary or max length, naming both."""
        if list(vocabulary) != self.vocabulary:
            where = next((i for i, (x, y) in enumerate(zip(vocabulary, self.vocabulary))
                          if x != y), min(len(vocabulary), len(self.vocabulary)))
            raise ValueError(
                f"--teacher {', '.join(self.paths)}: its vocabulary ({len(self.vocabulary)} "
                f"tokens) differs from {source}'s ({len(vocabulary)}; first difference at "
                f"line {where + 1}): a student learns from a teacher that reads the same tokens")
        if int(max_length) != self.max_length:
            raise ValueError(
                f"--teacher {', '.join(self.paths)}: max_length {self.max_length}, but "
                f"--max-length is {max_length}: use --max-length {self.max_length}")

    def outputs(self, task, data):
        """Soft outputs for every example of `data`, in data order (see module docstring)."""
        return self._predict(get_task(task).output, data)

    def embeddings(self, data):
        """Unit sentence vectors of each pair of `data`, (N, 2D): a's, then b's.

        Raises ValueError for a teacher without one vector per sentence
        (an ensemble, a cross-encoder, an export folder).
        """
        self.check_vectors()
        return self._predict(PAIR_EMBEDDINGS, data)

    def check_vectors(self):
        """Raises ValueError unless this teacher has one vector per sentence to teach."""
        if self.embedding_dim is None:
            raise ValueError(
                f"--embedding-teacher {', '.join(self.paths)}: give one bi-encoder run folder "
                "(its sentence vectors are what the student learns); an ensemble, a "
                "cross-encoder or an export folder has no one vector per sentence")

    def cached_outputs(self, folder, task, data, write=True):
        """`outputs(task, data)` through the cache in run folder `folder`.

        Examples already in the cache (by id) are read from it; the others
        are computed and, with `write`, added (a multi-worker run's non-chief
        workers read but never write). A cache of another teacher raises.
        """
        return self._cached(folder, (CACHE_FILE, CACHE_RECORD), "--teacher", "outputs", task,
                            data, lambda d: self.outputs(task, d), write)

    def cached_embeddings(self, folder, task, data, write=True):
        """`embeddings(data)` through its own cache in `folder`, as `cached_outputs`."""
        return self._cached(folder, EMBEDDING_CACHE, "--embedding-teacher", "sentence vectors",
                            task, data, self.embeddings, write)

    def _cached(self, folder, files, flag, what, task, data, compute, write):
        folder = Path(folder)
        cache, record = (folder / name for name in files)
        stored = {}
        if record.is_file():
            previous = _read_json(record)
            if previous.get("teacher") != self.describe():
                raise ValueError(
                    f"{cache}: holds the {what} of another teacher ({previous.get('teacher')}), "
                    f"not of {flag} {', '.join(self.paths)} ({self.describe()}); remove "
                    f"{cache} and {record}, or train into another --out")
            if cache.is_file():
                try:
                    with np.load(cache, allow_pickle=False) as npz:
                        stored = {k: npz[k] for k in npz.files}
                except (OSError, ValueError) as e:
                    logger.warning("%s: unreadable (%s); recomputing the teacher %s", cache, e,
                                   what)
        ids_key, values_key = f"{task}/ids", f"{task}/values"
        known = set(stored[ids_key].tolist()) if ids_key in stored else set()
        need = [n for n, i in enumerate(data.ids) if i not in known]
        if need:
            logger.info("teacher: %s: computing %d %s (%d cached)", task, len(need), what,
                        len(data) - len(need))
            start = time.perf_counter()
            fresh = compute(data.subset(need))
            logger.info("teacher: %s: %d %s in %.0f s", task, len(need), what,
                        time.perf_counter() - start)
            ids = list(stored[ids_key].tolist()) if ids_key in stored else []
            values = stored[values_key] if values_key in stored else fresh[:0]
            stored[ids_key] = np.array(ids + [data.ids[n] for n in need])
            stored[values_key] = np.concatenate([values, fresh]).astype(np.float32)
            if write:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(record,
                                  json.dumps({"teacher": self.describe()}, indent=2) + "\n")
                atomic_write(cache, lambda f: np.savez(f, **stored))
        row = {i: n for n, i in enumerate(stored[ids_key].tolist())}
        return stored[values_key][[row[i] for i in data.ids]]


def _unit_pair_vectors(submodel):
    """`x -> (B, 2D)`: a `pair_embeddings` sub-model's a and b vectors, each of unit length."""
    import tensorflow as tf

    def call(x):
        out = submodel(x, training=False)
        return tf.concat([tf.math.l2_normalize(tf.cast(out[k], tf.float32), axis=-1)
                          for k in ("a", "b")], axis=-1)

    return call


def _soft(output, raw):
    """A member's raw output -> what the ensemble averages."""
    raw = np.asarray(raw, np.float64)
    if output == "sentiment":
        raw = raw - raw.max(axis=-1, keepdims=True)
        e = np.exp(raw)
        return e / e.sum(axis=-1, keepdims=True)
    if output == "paraphrase":
        return 1.0 / (1.0 + np.exp(-raw))
    return raw


def _progress(total, label):
    from kerasbert_lite.progress import Progress
    logger.info("%s: %d examples", label, total)
    return Progress(total, label, unit="example")


def with_teacher_outputs(train_data, teacher, folder, write=True, embedding_teacher=None):
    """Each training set with (N, 1 + K) labels: the gold label, then the teacher's outputs.

    What a distillation recipe trains on, in the custom loop and in
    `model.fit` alike (`kerasbert.losses.TaskLosses(teacher_weight=...)`
    reads the rows). The outputs come through `teacher.cached_outputs`, so
    the run folder `folder` keeps them for `--resume`.

    Args:
        train_data: {task: SentenceData or PairData}, labelled.
        teacher: a `Teacher`.
        folder: the run folder holding the cache.
        write: add what was computed to the cache (False: a non-chief worker).
        embedding_teacher: a `Teacher` with sentence vectors (one bi-encoder
            run): pair tasks' rows get its unit vectors of a and b after the
            score, (N, 2 + 2D), for `TaskLosses(embedding_weight=...)`.

    Returns:
        {task: a copy of the data with the packed labels}.
    """
    out = {}
    for task, data in train_data.items():
        soft = teacher.cached_outputs(folder, task, data, write=write).reshape(len(data), -1)
        gold = np.asarray(data.labels, np.float32).reshape(-1, 1)
        columns = [gold, soft]
        if embedding_teacher is not None and isinstance(data, PairData):
            columns.append(embedding_teacher.cached_embeddings(folder, task, data, write=write))
        packed = data.subset(np.arange(len(data)))
        packed.labels = np.concatenate(columns, axis=1).astype(np.float32)
        out[task] = packed
    return out
