"""Single-signature, ids-in TFLite files for app runtimes (MediaPipe Tasks, stock LiteRT).

An app's runtime has no tf-text ops and MediaPipe's text tasks take one
subgraph whose BERT inputs are named by TFLite metadata. These files are
built for that:

    embedder_float32.tflite / embedder_int8.tflite     MediaPipe TextEmbedder
    sentiment_float32.tflite / sentiment_int8.tflite   MediaPipe TextClassifier

Inputs `ids`, `mask`, `segment_ids` (int32, (1 or B, max_length), right
padded), builtin ops only, metadata with the BERT tokenizer and the
vocabulary (and the sentiment labels) packed in. The embedder's output
`embedding` is unit length, and its cosine IS the model's similarity:
score = 5 * max(cosine, 0) for the relu head. So it is built from one
bi-encoder member with a cosine similarity head (the best by STS dev r),
never from a concatenation across members, whose cosine is not what the
ensemble scores.
"""

import json
import math

import numpy as np
import tensorflow as tf

from export.mediapipe_metadata import BERT_INPUT_NAMES, bert_metadata, populate
from export.tflite_flatbuffer import rename_io_tensors, signature_io
from export.multitask_ensemble import trim_padding
from kerasbert_lite.tasks import benchmark_task

SST_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")
# kind -> (file name, model, quantisation)
DEVICE_KINDS = {
    "embedder_float32": ("embedder_float32.tflite", "embedder", None),
    "embedder_int8": ("embedder_int8.tflite", "embedder", "int8"),
    "sentiment_float32": ("sentiment_float32.tflite", "sentiment", None),
    "sentiment_int8": ("sentiment_int8.tflite", "sentiment", "int8"),
}
# Model -> (output name, description, labels file or None).
DEVICE_OUTPUTS = {
    "embedder": ("embedding", "Unit-length sentence embedding; 5 * max(cosine, 0) of two "
                 "is the model's 0-5 similarity.", None),
    "sentiment": ("probabilities", "Probabilities of the SST sentiment classes.",
                  "labels.txt"),
}
# How the embedder's cosine maps to the member's 0-5 score, by similarity_output.
COSINE_TO_SCORE = {"relu": "5 * max(cosine, 0)", "sigmoid": "5 * sigmoid(cosine)",
                    "linear": "cosine"}


def cosine_to_score(cosine, similarity_output="relu"):
    """The member's 0-5 similarity from the embedder's cosine (numpy)."""
    cosine = np.asarray(cosine, np.float64)
    if similarity_output == "relu":
        return 5.0 * np.maximum(cosine, 0.0)
    if similarity_output == "sigmoid":
        return 5.0 / (1.0 + np.exp(-cosine))
    if similarity_output == "linear":
        return cosine
    raise ValueError(f"no cosine mapping for similarity_output {similarity_output!r}")


def embedder_candidates(ensemble):
    """Indices of members whose embedding cosine is their similarity score."""
    return [i for i, m in enumerate(ensemble.members)
            if m.pair_encoding == "bi" and m.similarity_head == "cosine"
            and m.similarity_output in COSINE_TO_SCORE]


def choose_embedder(ensemble):
    """(member index, why) of the embedder's member, or (None, why not).

    The best candidate by STS dev Pearson recorded in its run folder
    (summary.json), else the first candidate.
    """
    candidates = embedder_candidates(ensemble)
    if not candidates:
        kinds = ", ".join(f"{m.pair_encoding}/{m.similarity_head}" for m in ensemble.members)
        return None, ("no member is a bi-encoder with a cosine similarity head (members: "
                      f"{kinds}); a cross-encoder's or dot head's score is not the cosine "
                      "of two sentence embeddings")

    def sts(i):
        metric = benchmark_task("similarity").metric
        r = ensemble.runs[i].dev_scores().get(metric) if i < len(ensemble.runs) else None
        return -math.inf if r is None else r
    best = max(candidates, key=sts)
    return best, f"best STS dev r of {len(candidates)} cosine bi-encoder member(s)"


def device_endpoints(ensemble, embedder_member):
    """{model: (fn, input_signature)}: `embedder` (if a member is given) and `sentiment`.

    Inputs are named `ids`, `mask`, `segment_ids` (MediaPipe's BERT names),
    int32 (None, max_length).
    """
    spec = [tf.TensorSpec([None, ensemble.max_length], tf.int32, name=n)
            for n in BERT_INPUT_NAMES]

    def encoding(ids, mask, segment_ids):
        return trim_padding({"token_ids": ids, "padding_mask": mask, "segment_ids": segment_ids})

    endpoints = {}
    if embedder_member is not None:
        member = ensemble.members[embedder_member]

        def embedder(ids, mask, segment_ids):
            out = member.task_model("embedding")(encoding(ids, mask, segment_ids),
                                                 training=False)
            return {"embedding": tf.math.l2_normalize(tf.cast(out, tf.float32), axis=-1)}
        endpoints["embedder"] = (embedder, spec)

    def sentiment(ids, mask, segment_ids):
        return {"probabilities": ensemble.sentiment_from_ids(encoding(ids, mask, segment_ids))}
    endpoints["sentiment"] = (sentiment, spec)
    return endpoints


# Packed beside vocab.txt: what a runtime other than MediaPipe needs to use
# the file alone (kerasbert_lite reads it; MediaPipe ignores it).
CONFIG_FILE = "kerasbert.json"


def finish_device_model(model_bytes, model, vocabulary, description, config):
    """Renamed tensors, MediaPipe BERT metadata, vocabulary (and labels) packed in.

    Args:
        config: packed as `kerasbert.json` (tokenizer casing, max_length, how
            the embedder's cosine maps to the 0-5 score, label names).

    Returns:
        (file bytes, the subgraph's input names in order).
    """
    output_name, output_description, labels = DEVICE_OUTPUTS[model]
    model_bytes = rename_io_tensors(model_bytes)
    ((_, io),) = signature_io(model_bytes).items()
    if io["outputs"] != [output_name]:
        raise ValueError(f"{model}: expected the one output {output_name!r}, got {io['outputs']}")
    # Metadata entries are positional: they follow the converter's input order.
    input_order = io["inputs"]
    metadata = bert_metadata(input_order, [(output_name, output_description, labels)],
                             name=f"kerasbert {model}", description=description)
    files = {"vocab.txt": ("\n".join(vocabulary) + "\n").encode("utf-8")}
    if labels:
        files[labels] = ("\n".join(SST_LABELS) + "\n").encode("utf-8")
    files[CONFIG_FILE] = json.dumps({"model": model, "output": output_name, **config},
                                    indent=1).encode("utf-8")
    return populate(model_bytes, np.frombuffer(metadata, np.uint8), files), input_order
