"""The federated report's plot: global accuracy per round beside centralised training.

Centralised training sees the same total data (the whole training set) for the same
number of passes: round ``r`` of FedAvg with ``E`` local epochs is set beside epoch
``r * E`` of :func:`spikeforge.model.train.train` on one chip.
"""

from __future__ import annotations

__all__ = ["centralised_curve", "plot_accuracy"]


def centralised_curve(cfg, epochs: int) -> list[dict]:
    """Test accuracy after each of ``epochs`` epochs of centralised training (model backend)."""
    from ..model.train import train

    result = train(cfg.replace(train={"epochs": epochs}), backend="model")
    return [{"epoch": e["epoch"] + 1, "accuracy": e["test_accuracy"]} for e in result.epochs]


def plot_accuracy(path, runs: dict[str, dict], central: list[dict] | None, local_epochs: int) -> None:
    """Write a PNG: one line per federated report in ``runs`` (label -> report), plus centralised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rep in runs.items():
        xs = [e["round"] for e in rep["rounds"]]
        ax.plot(xs, [100 * e["accuracy"] for e in rep["rounds"]], marker="o", ms=3, label=label)
    if central:
        ax.plot([c["epoch"] / local_epochs for c in central], [100 * c["accuracy"] for c in central],
                "k--", label=f"centralised (epoch / {local_epochs})")
    ax.set_xlabel(f"round ({local_epochs} local epoch{'s' if local_epochs != 1 else ''} each)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("spikeforge integer FedAvg on digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
