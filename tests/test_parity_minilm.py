"""The packaged all-MiniLM-L6-v2 against Hugging Face `BertModel` on real CS224N sentences.

Run with `-s` to see the measured max|diff| lines; they are also recorded as
junit properties.
"""

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def batch(minilm, sst_dev_sentences, sts_dev_pairs):
    """16 SST sentences spanning the length range plus 8 STS pairs, one padded (24, 64) batch."""
    _, tokenizer, _ = minilm
    by_length = sorted(sst_dev_sentences, key=len)
    picks = np.linspace(0, len(by_length) - 1, 16).round().astype(int)
    singles = tokenizer([by_length[i] for i in picks], max_length=MAX_LENGTH)
    pairs = sts_dev_pairs[::108][:8]
    paired = tokenizer([a for a, _ in pairs], [b for _, b in pairs], max_length=MAX_LENGTH)
    out = {k: np.concatenate([singles[k].numpy(), paired[k].numpy()]) for k in singles}
    lengths = out["padding_mask"].sum(1)
    # The batch really mixes lengths, pads, and uses segment 1.
    assert lengths.min() < 12 and lengths.max() >= 40 and (lengths < MAX_LENGTH).sum() >= 20
    assert out["segment_ids"][16:].max() == 1
    return out


@pytest.fixture(scope="module")
def hf_outputs(minilm, batch):
    _, _, folder = minilm
    model = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["token_ids"], dtype=torch.long),
                    token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(batch["padding_mask"], dtype=torch.long))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _run(backbone, batch, mode):
    if mode == "eager":
        out = backbone(batch, training=False)
    else:
        fn = tf.function(lambda b: backbone(b, training=False), jit_compile=(mode == "xla"))
        out = fn({k: tf.constant(v) for k, v in batch.items()})
    return np.asarray(out["sequence_output"]), np.asarray(out["pooled_output"])


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_minilm_matches_hf(minilm, batch, hf_outputs, mode, record_property):
    backbone, _, _ = minilm
    seq, pooled = _run(backbone, batch, mode)
    keep = batch["padding_mask"].astype(bool)
    seq_diff = float(np.max(np.abs(seq[keep] - hf_outputs[0][keep])))
    pooled_diff = float(np.max(np.abs(pooled - hf_outputs[1])))
    print(f"\n[parity] MiniLM {mode}: sequence_output max|diff| {seq_diff:.3g}, "
          f"pooled_output {pooled_diff:.3g} ({keep.sum()} real tokens of {keep.size})")
    record_property(f"minilm_{mode}_sequence_max_diff", seq_diff)
    record_property(f"minilm_{mode}_pooled_max_diff", pooled_diff)
    assert seq.shape == (24, MAX_LENGTH, 384) and pooled.shape == (24, 384)
    assert seq_diff <= TOL and pooled_diff <= TOL
    # Non-trivial outputs: the rows differ from each other.
    assert np.std(pooled, axis=0).mean() > 1e-2
