"""Learning-curve figure of a run."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(history, path, title=""):
    """Per-task train loss and dev metrics per epoch, side by side, saved as PNG."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    for task in sorted({t for h in history for t in h["train_loss"]}):
        left.plot(epochs, [h["train_loss"].get(task, float("nan")) for h in history],
                  marker="o", label=task)
    left.set(xlabel="epoch", ylabel="mean train loss", title="training loss")
    left.legend()
    for name in sorted({m for h in history for m in h["dev"]}):
        right.plot(epochs, [h["dev"].get(name, float("nan")) for h in history],
                   marker="o", label=name)
    right.set(xlabel="epoch", ylabel="score", title="dev metrics")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
