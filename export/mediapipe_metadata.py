"""TFLite metadata for MediaPipe's BERT text tasks (TextEmbedder, TextClassifier).

MediaPipe accepts a BERT text model only when its flatbuffer carries
TFLite metadata (the `TFLITE_METADATA` buffer, schema
`metadata_schema.fbs`, file identifier "M001"): three int32 inputs named
`ids`, `mask`, `segment_ids` in the subgraph's own order, a BertTokenizer
input process unit whose vocabulary is packed into the file, and the
output tensors (a label file for classifiers). The packed files are a zip
archive appended to the flatbuffer, as tflite-support's MetadataPopulator
writes them; MediaPipe and LiteRT read past the flatbuffer unharmed.

Written here with the `flatbuffers` builder directly: mediapipe 1.2.x's
own metadata writers fail to import (`No module named 'mediapipe.tasks.cc'`),
and tflite-support pins a protobuf older than TensorFlow 2.21 needs. Field
slots follow `metadata_schema.fbs` (a union takes two slots: type, value).
"""

import io
import zipfile

import flatbuffers

METADATA_NAME = "TFLITE_METADATA"
_FILE_IDENTIFIER = b"M001"
# BertTokenizerOptions and SubGraphMetadata.input_process_units are 1.1.0 fields.
_MIN_PARSER_VERSION = "1.1.0"
# enum AssociatedFileType
TENSOR_AXIS_LABELS = 2
VOCABULARY = 5
# union ProcessUnitOptions / ContentProperties member indices
_BERT_TOKENIZER_OPTIONS = 4
_FEATURE_PROPERTIES = 1
BERT_INPUT_NAMES = ("ids", "mask", "segment_ids")
_INPUT_DESCRIPTIONS = {
    "ids": "Tokenized ids of the input text.",
    "mask": "Mask with 1 for real tokens and 0 for padding tokens.",
    "segment_ids": "0 for the first sequence, 1 for the second sequence if exists.",
}


class _Writer:
    """Builds one ModelMetadata flatbuffer, bottom-up as flatbuffers require."""

    def __init__(self):
        self.b = flatbuffers.Builder(1024)

    def string(self, s):
        return self.b.CreateString(s) if s is not None else None

    def vector(self, offsets):
        self.b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def table(self, num_slots, fields):
        """fields: [(slot, kind, value)], kind "offset", "byte" or "ubyte"; None values skipped."""
        self.b.StartObject(num_slots)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "offset":
                self.b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                self.b.PrependInt8Slot(slot, value, 0) if kind == "byte" else \
                    self.b.PrependUint8Slot(slot, value, 0)
        return self.b.EndObject()

    def associated_file(self, name, description, file_type):
        # AssociatedFile: name 0, description 1, type 2, locale 3, version 4
        name, description = self.string(name), self.string(description)
        return self.table(5, [(0, "offset", name), (1, "offset", description),
                              (2, "byte", file_type)])

    def feature_content(self):
        features = self.table(0, [])  # FeatureProperties has no fields
        # Content: content_properties_type 0, content_properties 1, range 2
        return self.table(3, [(0, "ubyte", _FEATURE_PROPERTIES), (1, "offset", features)])

    def tensor(self, name, description, associated_files=()):
        # TensorMetadata: name 0, description 1, dimension_names 2, content 3,
        # process_units 4, stats 5, associated_files 6
        name, description = self.string(name), self.string(description)
        content = self.feature_content()
        files = self.vector(list(associated_files)) if associated_files else None
        return self.table(7, [(0, "offset", name), (1, "offset", description),
                              (3, "offset", content), (6, "offset", files)])

    def bert_tokenizer_unit(self, vocab_name):
        vocab = self.associated_file(vocab_name, "Vocabulary file for the BERT tokenizer.",
                                     VOCABULARY)
        options = self.table(1, [(0, "offset", self.vector([vocab]))])  # BertTokenizerOptions
        # ProcessUnit: options_type 0, options 1
        return self.table(2, [(0, "ubyte", _BERT_TOKENIZER_OPTIONS), (1, "offset", options)])


def bert_metadata(input_order, outputs, vocab_name="vocab.txt", name="", description="",
                  version=""):
    """The ModelMetadata flatbuffer (bytes) of a BERT text model.

    Args:
        input_order: the subgraph's input tensor names in order, a permutation
            of `BERT_INPUT_NAMES` (metadata entries are positional).
        outputs: [(name, description, labels_file_name or None)] in the
            subgraph's output order.
        vocab_name: name of the packed vocabulary file.
        name, description, version: the model's general information.
    """
    if sorted(input_order) != sorted(BERT_INPUT_NAMES):
        raise ValueError(f"BERT metadata needs inputs {BERT_INPUT_NAMES}, the model has "
                         f"{list(input_order)}")
    w = _Writer()
    inputs = [w.tensor(n, _INPUT_DESCRIPTIONS[n]) for n in input_order]
    outs = []
    for out_name, out_description, labels in outputs:
        files = [w.associated_file(labels, "Labels for the categories the model can classify.",
                                   TENSOR_AXIS_LABELS)] if labels else []
        outs.append(w.tensor(out_name, out_description, files))
    unit = w.bert_tokenizer_unit(vocab_name)
    sub_name = w.string(name)
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2,
    # output_tensor_metadata 3, associated_files 4, input_process_units 5, ...
    subgraph = w.table(10, [(0, "offset", sub_name), (2, "offset", w.vector(inputs)),
                            (3, "offset", w.vector(outs)), (5, "offset", w.vector([unit]))])
    fields = [w.string(name), w.string(description), w.string(version)]
    subgraphs = w.vector([subgraph])
    parser = w.string(_MIN_PARSER_VERSION)
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3,
    # author 4, license 5, associated_files 6, min_parser_version 7
    root = w.table(8, [(0, "offset", fields[0]), (1, "offset", fields[1]),
                       (2, "offset", fields[2]), (3, "offset", subgraphs),
                       (7, "offset", parser)])
    w.b.Finish(root, _FILE_IDENTIFIER)
    return bytes(w.b.Output())


def populate(model_bytes, metadata, files):
    """The model with `metadata` as its TFLITE_METADATA buffer and `files` packed after it.

    Args:
        model_bytes: a TFLite flatbuffer without metadata.
        metadata: bytes from `bert_metadata`.
        files: {name: bytes} to pack (the vocabulary, label files).

    Returns:
        The bytes of the new .tflite file.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))
    if any(m.name in (METADATA_NAME, METADATA_NAME.encode()) for m in (model.metadata or [])):
        raise ValueError("the model already has TFLite metadata")
    buffer = schema.BufferT()
    buffer.data = metadata
    model.buffers = (model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()
