"""The training variants of the minBERT paper (and beyond), as typed data.

A `Variant` says how the multitask model is built (`model_kwargs`, passed to
`kerasbert.MultitaskBert`) and how each task is trained (`*_loss`). The
paper is *minBERT and Downstream Tasks* (CS224N); the results table's copy of
its dev scores is `experiments.tables.PAPER`, not part of a recipe.
"""

import dataclasses

from kerasbert_lite.tasks import MULTITASK, TASKS, benchmark_task


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training recipe.

    Args:
        name: registry key (`--variant`).
        description: one line for `--help` and reports.
        paper: where it comes from: the paper's method name, or "beyond paper".
        pair_encoding, pooling, paraphrase_head, similarity_head,
        similarity_output, projection_dim, shared_projection: model layout,
            see `kerasbert.MultitaskBert`.
        similarity_loss: `bce_threshold` (labels 0-2.5 -> 0, above -> 1, BCE on
            score/5, as the paper's BM), `mse` (MSE on the 0-5 score) or
            `infonce` (contrastive on STS positives, in-batch negatives).
        infonce_temperature: temperature of the cosine logits.
        infonce_positive_threshold: STS pairs scoring at least this are positives.
        quora_positives: also train InfoNCE on Quora duplicates.
        infonce_mse_weight: weight of an added MSE term on STS (0: pure InfoNCE).
        tasks: datasets trained on.
        single_task: a sentiment classifier (`--task sst|cfimdb`): trains and
            evaluates that task alone, with no CS224N overall score.
        lr: default peak learning rate.
        distill: learn from a teacher's soft outputs mixed with the gold
            labels (`--teacher`; `kerasbert.losses.distillation_loss`).

    Example:
    >>> dps_mse = VARIANTS["dps_mse"]
    >>> dps_mse.similarity_loss, dps_mse.model_kwargs()["similarity_head"]
    ('mse', 'cosine')
    >>> dps_mse.replace(name="dps_mse_256", projection_dim=256).projection_dim
    256
    """

    name: str
    description: str
    paper: str
    pair_encoding: str = "bi"
    pooling: str = "pooled"
    paraphrase_head: str = "concat"
    similarity_head: str = "concat"
    similarity_output: str = "sigmoid"
    projection_dim: int = None
    shared_projection: bool = True
    paraphrase_logit_init: tuple = None
    similarity_loss: str = "bce_threshold"
    infonce_temperature: float = 0.05
    infonce_positive_threshold: float = 4.0
    quora_positives: bool = False
    infonce_mse_weight: float = 0.0
    tasks: tuple = MULTITASK
    lr: float = 5e-5
    single_task: bool = False
    distill: bool = False

    def __post_init__(self):
        if self.similarity_loss not in benchmark_task("similarity").losses:
            raise ValueError(f"{self.name}: unknown similarity_loss {self.similarity_loss!r}")
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"{self.name}: unknown tasks {sorted(unknown)}")

    def model_kwargs(self):
        """Keyword arguments for `kerasbert.MultitaskBert`."""
        return dict(
            pair_encoding=self.pair_encoding,
            pooling=self.pooling,
            paraphrase_head=self.paraphrase_head,
            similarity_head=self.similarity_head,
            similarity_output=self.similarity_output,
            projection_dim=self.projection_dim,
            shared_projection=self.shared_projection,
            paraphrase_logit_init=self.paraphrase_logit_init,
        )

    def task_losses(self, teacher_weight=0.5, distill_temperature=1.0, embedding_weight=0.0):
        """The `kerasbert.losses.TaskLosses` this recipe trains with.

        `teacher_weight`, `distill_temperature` and `embedding_weight`
        (`--teacher-weight`, `--distill-temperature`, the weight of
        `--embedding-teacher`'s vectors) count for distillation recipes only.
        """
        from kerasbert.losses import TaskLosses  # TensorFlow: not for --help

        return TaskLosses(similarity=self.similarity_loss, temperature=self.infonce_temperature,
                          positive_threshold=self.infonce_positive_threshold,
                          quora_positives=self.quora_positives,
                          mse_weight=self.infonce_mse_weight,
                          teacher_weight=teacher_weight if self.distill else None,
                          distill_temperature=distill_temperature,
                          embedding_weight=embedding_weight if self.distill else 0.0)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


VARIANTS = {v.name: v for v in (
    Variant(
        "bm", "pooled [CLS], concat heads, BCE everywhere, STS labels thresholded",
        paper="Baseline Model (BM)"),
    Variant(
        "dps", "project to r dims, dot product pair scores, BCE (STS thresholded)",
        paper="Dot Product Similarity (DPS)",
        pooling="mean", paraphrase_head="dot", similarity_head="dot", projection_dim=128),
    Variant(
        "infonce", "cosine of projections over a temperature, InfoNCE on STS positives",
        paper="InfoNCE",
        pooling="mean", paraphrase_head="cosine", similarity_head="cosine", similarity_output="relu",
        projection_dim=128, similarity_loss="infonce", infonce_temperature=0.007),
    Variant(
        "mse", "BM with STS regressed by MSE on the raw 0-5 score",
        paper="Mean Squared Error (MSE)",
        similarity_output="linear", similarity_loss="mse"),
    Variant(
        "dps_mse", "dot product for Quora, cosine of projections -> relu x5 -> MSE for STS",
        paper="DPS-MSE",
        pooling="mean", paraphrase_head="dot", similarity_head="cosine", similarity_output="relu",
        projection_dim=128, similarity_loss="mse"),
    # Beyond the paper: its own future work and what the CS224N leaders did.
    Variant(
        "cross", "pairs encoded together ([CLS] a [SEP] b [SEP]), linear heads, STS by MSE",
        paper="beyond paper: cross-encoder",
        pair_encoding="cross", pooling="mean", similarity_loss="mse"),
    Variant(
        "infonce_plus", "InfoNCE at temperature 0.05 with Quora duplicates as extra positives, "
        "mean pooling, shared projection, plus MSE on STS",
        paper="beyond paper: tuned InfoNCE",
        pooling="mean", paraphrase_head="cosine", similarity_head="cosine",
        similarity_output="relu", projection_dim=256, similarity_loss="infonce",
        infonce_temperature=0.05, quora_positives=True, infonce_mse_weight=1.0,
        # The STS head reads 5 * cosine, so "duplicate" starts at the STS
        # midpoint 2.5 (cosine 0.5), with a slope of 10 per unit of cosine.
        # From the identity, one epoch left Quora at .534 (AUC .90).
        paraphrase_logit_init=(10.0, 0.5)),
    Variant(
        "dps_mse_pooled", "DPS-MSE on the tanh-pooled [CLS] instead of the mean (ablation)",
        paper="beyond paper: pooled vs mean embeddings",
        pooling="pooled", paraphrase_head="dot", similarity_head="cosine",
        similarity_output="relu", projection_dim=128, similarity_loss="mse"),
    Variant(
        "distill", "a DPS-MSE bi-encoder (cosine similarity head) learning from --teacher's "
        "soft outputs: KL on SST, soft BCE on Quora, MSE on STS, mixed with the gold labels",
        paper="beyond paper: distillation of the ensemble",
        pooling="mean", paraphrase_head="dot", similarity_head="cosine", similarity_output="relu",
        projection_dim=128, similarity_loss="mse", distill=True),
    Variant(
        "distill_cosine", "distill with infonce_plus's heads: one shared 256-d projection, Quora "
        "and STS both scored by its cosine (Quora logit starts at 10 (cos - 0.5))",
        paper="beyond paper: distillation of the ensemble",
        pooling="mean", paraphrase_head="cosine", similarity_head="cosine",
        similarity_output="relu", projection_dim=256, similarity_loss="mse",
        paraphrase_logit_init=(10.0, 0.5), distill=True),
    Variant(
        "distill_nce", "distill plus infonce_plus's contrastive terms on the gold positives: "
        "InfoNCE on Quora duplicates and on STS pairs scoring >= 4, at temperature 0.05",
        paper="beyond paper: distillation of the ensemble",
        pooling="mean", paraphrase_head="dot", similarity_head="cosine", similarity_output="relu",
        projection_dim=128, similarity_loss="infonce", infonce_temperature=0.05,
        quora_positives=True, distill=True),
    Variant(
        "distill_cosine_nce", "distill_cosine's heads with distill_nce's InfoNCE terms: "
        "infonce_plus's whole recipe, learning from --teacher",
        paper="beyond paper: distillation of the ensemble",
        pooling="mean", paraphrase_head="cosine", similarity_head="cosine",
        similarity_output="relu", projection_dim=256, similarity_loss="infonce",
        infonce_temperature=0.05, quora_positives=True, paraphrase_logit_init=(10.0, 0.5),
        distill=True),
    Variant(
        "classifier", "single-task sentiment classifier (the starter's milestone)",
        paper="single-task classifier", tasks=("sst",), single_task=True),
    Variant(
        "classifier_mean", "the single-task classifier on the masked mean of the tokens",
        paper="beyond paper: classifier on mean pooling", tasks=("sst",), single_task=True,
        # MiniLM's tanh pooler was never trained (its sentence vector is the
        # mean), so a frozen encoder's pooled [CLS] carries little sentiment.
        pooling="mean"),
)}


def get_variant(name):
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from None
