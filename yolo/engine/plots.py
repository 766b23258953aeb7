"""Training curves saved next to the run."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_results(rows, path):
    """results.png: loss terms per epoch and mAP per evaluation, from the metrics.csv rows."""
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "box", "obj", "cls"):
        axes[0].plot(epochs, [r[key] for r in rows], label=key, marker=".")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss", yscale="log")
    axes[0].legend()
    evals = [r for r in rows if r.get("map50") is not None and r.get("map50") == r.get("map50")]
    axes[1].plot([r["epoch"] for r in evals], [r["map50"] for r in evals], label="mAP@0.5", marker="o")
    axes[1].plot([r["epoch"] for r in evals], [r["map"] for r in evals], label="mAP@0.5:0.95", marker="o")
    axes[1].set(xlabel="epoch", ylabel="mAP", title="validation", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
