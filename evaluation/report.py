"""Results -> JSON file, Markdown table and a PNG plot of the metric against visual tokens (log-scaled x)."""

import json
import os
from pathlib import Path

from matryoshka_llava.formatting import percent


def results_to_markdown(results: dict) -> str:
    """One row per count: every metric overall, then the main metric per category; the oracle last."""
    metric = results["metric"]
    metric_names = list(results["per_k"][0]["metrics"])
    categories = results.get("categories") or sorted(results["per_k"][0]["by_category"])
    header = ["visual tokens"] + metric_names + [f"{metric} [{category}]" for category in categories]
    lines = [
        f"**{results['model']}** on {results['dataset']}"
        + (f" ({results['split']})" if results.get("split") else "")
        + f", {results['num_items']} items, task `{results['task']}`"
        + (f", training-free baseline `{results['baseline']}`" if results.get("baseline") else "")
        + ". Metrics in %.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
    ]
    for row in results["per_k"]:
        cells = [str(row["num_visual_tokens"])] + [percent(row["metrics"][name]) for name in metric_names]
        cells += [percent(row["by_category"][category][metric]) if category in row["by_category"] else ""
                  for category in categories]
        lines.append("| " + " | ".join(cells) + " |")
    auto = results.get("auto")
    if auto:
        cells = [f"auto ({auto['mean_visual_tokens']:.1f} mean)"] + [percent(auto["metrics"][name]) for name in metric_names]
        cells += [percent(auto["by_category"][category][metric]) if category in auto["by_category"] else ""
                  for category in categories]
        lines.append("| " + " | ".join(cells) + " |")
    oracle = results["oracle"]
    cells = [f"oracle ({oracle['mean_visual_tokens']:.1f} mean)", percent(oracle["accuracy"])]
    cells += [""] * (len(metric_names) - 1)
    cells += [percent(oracle["by_category"][category]["accuracy"]) if category in oracle.get("by_category", {}) else ""
              for category in categories]
    lines.append("| " + " | ".join(cells) + " |")
    skipped = results.get("skipped") or []
    if skipped:
        shown = ", ".join(f"row {record['row']} (id {record['item_id']})" if record.get("row") is not None
                          else f"id {record['item_id']}" for record in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        lines += ["", f"{len(skipped)} items skipped, not in the metrics: an image could not be decoded "
                      f"({shown}{more}; reasons in results.json)."]
    if auto:
        spent = ", ".join(f"{category} {tokens:.1f}" for category, tokens in auto["mean_visual_tokens_by_category"].items())
        lines += ["", "`auto`: the model's count chooser picks the count per item" + (f"; mean tokens per category: {spent}." if spent else ".")]
    return "\n".join(lines) + "\n"


def _label(results: dict) -> str:
    name = Path(str(results["model"])).name or str(results["model"])
    return f"{name} + {results['baseline']}" if results.get("baseline") else name


def plot_tradeoff(results, path: str | os.PathLike, *, by_category: bool = False, labels=None, title: str | None = None,
                  categories=None, chance: dict | None = None):
    """Plot the main metric against visual tokens (log x) for one or several results dicts, the oracle as a star.

    by_category: one panel per category (plus "overall"), each with a line per results dict; `categories` orders the
    panels (default: sorted). `chance`: {panel: accuracy of guessing}, drawn as a dotted line. Runs are drawn with
    their own marker and line style, slightly apart on x, so that equal values do not hide a series. Returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [results] if isinstance(results, dict) else list(results)
    if not runs:
        raise ValueError("plot_tradeoff needs at least one results dict.")
    labels = list(labels) if labels is not None else [_label(run) for run in runs]
    metric = runs[0]["metric"]
    panels = ["overall"]
    if by_category:
        present = {category for run in runs for category in run.get("categories") or []}
        panels += [category for category in categories if category in present] if categories else sorted(present)
    columns = min(len(panels), 3)
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels):
        for index, (run, label) in enumerate(zip(runs, labels)):
            # A few percent apart on the log x axis: identical accuracies stay visible side by side.
            shift = 1.06 ** (index - (len(runs) - 1) / 2)
            style = {"marker": "osv^D"[index % 5], "linestyle": ("-", "--", "-.", ":")[index % 4]}
            points = [
                (row["num_visual_tokens"], row["metrics"][metric] if panel == "overall" else row["by_category"].get(panel, {}).get(metric))
                for row in run["per_k"]
            ]
            points = [(count, value) for count, value in points if value is not None]
            if not points:
                continue
            line = axis.plot([c * shift for c, _ in points], [100 * v for _, v in points], label=label, **style)[0]
            oracle = run["oracle"] if panel == "overall" else run["oracle"].get("by_category", {}).get(panel)
            if oracle:
                axis.plot([max(oracle["mean_visual_tokens"], 1) * shift], [100 * oracle["accuracy"]], marker="*",
                          markersize=13, linestyle="none", color=line.get_color())
            auto = run.get("auto")
            if auto:
                value = auto["metrics"][metric] if panel == "overall" else auto["by_category"].get(panel, {}).get(metric)
                tokens = (auto["mean_visual_tokens"] if panel == "overall"
                          else auto["mean_visual_tokens_by_category"].get(panel))
                if value is not None and tokens is not None:
                    axis.plot([max(tokens, 1) * shift], [100 * value], marker="P", markersize=9, linestyle="none",
                              markerfacecolor="none", markeredgewidth=2, color=line.get_color())
        if chance and panel in chance:
            axis.axhline(100 * chance[panel], color="gray", linestyle=":", linewidth=1, label="chance" if panel == panels[0] else None)
        axis.set_xscale("log")
        counts = sorted({row["num_visual_tokens"] for run in runs for row in run["per_k"]})
        axis.set_xticks(counts, [str(count) for count in counts])
        axis.minorticks_off()
        axis.set_ylim(-3, 103)
        axis.set_title(panel)
        axis.set_xlabel("visual tokens per image (log scale)")
        axis.set_ylabel(f"{metric} (%)")
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    has_auto = any(run.get("auto") for run in runs)
    axes.flat[0].legend(fontsize=8, title="* = oracle" + (", + = auto" if has_auto else ""), title_fontsize=8)
    figure.suptitle(title or f"{runs[0]['dataset']}: {metric} vs visual tokens")
    return save_figure(figure, path)


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as a PNG (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_outputs(results: dict, output_dir: str | os.PathLike, *, plot: bool = True, stem: str = "results") -> dict:
    """Write `{stem}.json`, `{stem}.md` and (with `plot`) `{stem}_tradeoff.png` into `output_dir`; the JSON's
    `plot` key is the PNG's path relative to the folder. Returns the results with `plot` set."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    if plot:
        name = f"{stem}_tradeoff.png"
        plot_tradeoff(results, output_dir / name, by_category=bool(results.get("categories")))
        results["plot"] = name
    (output_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / f"{stem}.md").write_text(results_to_markdown(results))
    return results
