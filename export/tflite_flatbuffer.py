"""Reading and editing a TFLite flatbuffer's tensor names and signatures.

Apps feed TFLite tensors by name or position. The converter names them
after the SavedModel's graph (`serving_default_token_ids:0`,
`StatefulPartitionedCall:0`) and orders a signature's inputs its own way,
so the export renames each signature's tensors to the signature's names and
records the real order in manifest.json.
"""

import flatbuffers


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


def signature_io(model_bytes):
    """{signature: {"inputs": [...], "outputs": [...]}} in the subgraph's tensor order.

    The position of a name is the index an app uses with
    `interpreter.get_input_details()[i]` / `getInputTensor(i)`.
    """
    schema = _schema()
    model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
    out = {}
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)
        graph = model.Subgraphs(sig.SubgraphIndex())
        by_tensor = {}
        for getter, length in ((sig.Inputs, sig.InputsLength()),
                               (sig.Outputs, sig.OutputsLength())):
            for i in range(length):
                by_tensor[getter(i).TensorIndex()] = getter(i).Name().decode()
        out[sig.SignatureKey().decode()] = {
            "inputs": [by_tensor[graph.Inputs(i)] for i in range(graph.InputsLength())],
            "outputs": [by_tensor[graph.Outputs(i)] for i in range(graph.OutputsLength())],
        }
    return out


def rename_io_tensors(model_bytes):
    """The model with every signature's input/output tensors named as in the signature."""
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))
    for sig in model.signatureDefs or []:
        graph = model.subgraphs[sig.subgraphIndex]
        for entry in list(sig.inputs or []) + list(sig.outputs or []):
            graph.tensors[entry.tensorIndex].name = entry.name
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())
