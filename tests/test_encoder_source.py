"""`--model RUN`: a student starts from a trained run's fine-tuned encoder.

The encoder read back through `checkpoint_folder` is the run's own, layer
for layer (with `--student-layers`, the chosen layers); other `--model`
values pass through untouched; the CLI trains from a run folder.
"""

import numpy as np

from test_export_fixtures import MEMBERS, load_member, make_run
from tiny_setup import TINY_FLAGS, run_training


def _weights(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def test_a_run_folders_encoder_is_read_back_layer_for_layer(tmp_path):
    import kerasbert
    from training.encoder_source import checkpoint_folder, is_run_folder
    from training.multitask_trainer import student_layers
    from training.train_config import TrainConfig

    run = make_run(tmp_path / "run", seed=9, **MEMBERS["bi"])
    assert is_run_folder(run) and not is_run_folder(tmp_path) and not is_run_folder(None)
    for model in (None, "some/hub-name", str(tmp_path)):
        assert checkpoint_folder(model, tmp_path / "scratch") == model
    source = checkpoint_folder(str(run), tmp_path / "scratch")
    trained = load_member(run).backbone
    assert student_layers(TrainConfig(student_layers=1), source) == (0,)  # of its 2 layers
    backbone, tokenizer = kerasbert.from_pretrained(source, layers=(1,))
    assert backbone.bert_config.num_layers == 1
    assert tokenizer.vocabulary == [line for line in (run / "vocab.txt").read_text().split("\n")
                                    if line]
    for got, want in zip(_weights(backbone.get_layer("transformer_layer_0")),
                         _weights(trained.get_layer("transformer_layer_1"))):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(_weights(backbone.get_layer("embeddings")),
                         _weights(trained.get_layer("embeddings"))):
        np.testing.assert_array_equal(got, want)


def test_training_starts_from_a_run_folder(tiny_data_dir, tmp_path):
    from tiny_setup import VOCAB

    run = make_run(tmp_path / "six", seed=10, vocab=VOCAB, **MEMBERS["bi"])
    out = tmp_path / "student"
    result = run_training(["--model", str(run), "--student-layers", "1", "--variant", "dps_mse",
                           "--data-dir", str(tiny_data_dir), *TINY_FLAGS, "--epochs", "1",
                           "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the fine-tuned encoder of run {run} (2 layers)" in result.stderr
    assert (out / "best.keras").is_file()
