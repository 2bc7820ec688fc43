"""Writes the ONNX Runtime peer for score_latency.py: all-MiniLM-L6-v2, int8.

The packaged MiniLM (the encoder every export here is fine-tuned from) as
Hugging Face's BertModel, exported by torch.onnx with dynamic batch and
length, then dynamic-range int8 by onnxruntime.quantization: the same
architecture and quantisation kind as embedder_int8.tflite, run by a
runtime this project did not write. Needs torch, transformers, onnx and
onnxruntime (the test stack plus `pip install onnx onnxruntime`).

`--layers 3` keeps encoder layers 0, 2 and 4 (as `--student-layers 3`
does): the peer of a 3-layer distilled student.

Usage: python benchmarks/make_onnx_peer.py [--out /tmp/minilm_int8.onnx] [--layers N]
"""

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/minilm_int8.onnx")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep every k-th of the 6 layers, k = 6 // N (default: all)")
    args = parser.parse_args(argv)
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kerasbert.from_pretrained import embedded_model_dir
    bert = transformers.BertModel.from_pretrained(str(embedded_model_dir())).eval()
    if args.layers:
        total = len(bert.encoder.layer)
        keep = list(range(0, total, total // args.layers))[:args.layers]
        bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in keep])
        bert.config.num_hidden_layers = len(keep)

    class Encoder(torch.nn.Module):
        # Keyword arguments: BertModel's positional order changed in transformers 5.
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
    model = Encoder().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "minilm.onnx"
        with torch.no_grad():
            _export(torch, model, ids, fp32)
        quantize_dynamic(str(fp32), args.out, weight_type=QuantType.QInt8)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB)")
    return 0


def _export(torch, model, ids, path):
    torch.onnx.export(
        model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"], opset_version=17, dynamo=False,
        dynamic_axes={n: {0: "batch", 1: "length"} for n in
                      ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")})


if __name__ == "__main__":
    sys.exit(main())
