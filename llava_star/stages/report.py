"""What each self-training cycle did, in numbers and pictures.

``llava-star report RUN_DIR`` (also run at the end of every cycle) reads the generation
shards and evaluation files of a cycle run (see :mod:`llava_star.stages.cycle`) and writes
``RUN_DIR/report/``:

- ``stats.json``: per cycle, overall / per source / per label type: samples, kept
  directly, kept after rationalization, failures by reason, answer length, and the
  held-out accuracy (fraction of direct answers that pass);
- ``kept_by_cycle.png`` and ``accuracy_by_cycle.png`` (matplotlib);
- ``index.html``: a static gallery of samples, each with a strip of frames, the
  question, the answer and the verdict with its reason, filterable by
  passed / failed / rationalized, by cycle and by split (training or held-out).

RUN_DIR may also be a single generation directory (the shards of one
``llava-star generate`` run); it is then reported as one set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llava_star.config import read_yaml_mapping
from llava_star.errors import LlavaStarError, VideoError
from llava_star.io import write_json_atomic, write_text_atomic
from llava_star.preference_figures import add_preference_figures, preference_rows
from llava_star.records import Generation
from llava_star.runs import REPORT_PAGE, REPORT_STATS, CycleRunDir, GenerationDir
from llava_star.tally import GallerySample, GroupTally, SetTally, failure_reason  # noqa: F401 (imported from here)
from llava_star.verify.verdict import first_failure

logger = logging.getLogger(__name__)

STRIP_FRAMES = 6
STRIP_HEIGHT = 96


@dataclass(frozen=True)
class GenerationSet:
    """One directory of generation shards: a cycle's training answers or a held-out evaluation."""

    name: str  # "cycle 1", "cycle 1 held-out", ...
    cycle: int  # 0: the starting model; K+1: the final model
    split: str  # "train" or "held-out"
    directory: Path


def discover_sets(run_dir: Path) -> list[GenerationSet]:
    """The generation directories of a cycle run, in cycle order: the cycles the run recorded
    (run.json), or those on disk for a run that has not finished its first cycle."""
    if GenerationDir(run_dir).exists():  # a single `llava-star generate` output
        return [GenerationSet("generations", 0, "train", run_dir)]
    run = CycleRunDir(run_dir)
    recorded = run.recorded()
    cycles = [entry["cycle"] for entry in recorded["cycles"]] if recorded else run.cycle_numbers()
    candidates = [("start held-out", 0, "held-out", run.baseline.eval_generations)]
    for cycle in cycles:
        candidates.append((f"cycle {cycle}", cycle, "train", run.cycle(cycle).generations))
        candidates.append((f"cycle {cycle} held-out", cycle, "held-out", run.cycle(cycle).eval_generations))
    candidates.append(("final held-out", max(cycles, default=0) + 1, "held-out", run.final.eval_generations))
    return [GenerationSet(name, cycle, split, found.path) for name, cycle, split, found in candidates if found.exists()]


# ---------------------------------------------------------------- statistics


def read_set(generation_set: GenerationSet, gallery: GallerySample) -> dict[str, Any]:
    """One pass over a set's shards: its statistics, and its gallery candidates into ``gallery``.

    Memory holds counters and the gallery's sample, whatever the number of answers.
    """
    directory = GenerationDir(generation_set.directory)
    tally = SetTally()
    for generation in directory.iter_generations():
        tally.add(generation)
        gallery.add(generation)
    return tally.statistics(directory.count_video_failures(), held_out=generation_set.split == "held-out")


def run_statistics(
    sets: Sequence[GenerationSet], gallery_per_set: int = 0, rng: random.Random | None = None
) -> tuple[dict[str, Any], dict[str, list[Generation]]]:
    """``stats.json``: one entry per cycle with its training and held-out statistics, and each
    set's gallery (up to ``gallery_per_set`` generations, drawn with ``rng``).

    Cycle 0 (``label`` "start") is the starting model; the final direct-only model, when
    there is one, comes last (``label`` "final").
    """
    rng = rng or random.Random(0)
    cycles: dict[int, dict[str, Any]] = {}
    galleries: dict[str, list[Generation]] = {}
    for generation_set in sets:
        label = (
            "final"
            if generation_set.name.startswith("final")
            else ("start" if generation_set.cycle == 0 else str(generation_set.cycle))
        )
        entry = cycles.setdefault(generation_set.cycle, {"cycle": generation_set.cycle, "label": label})
        key = "training" if generation_set.split == "train" else "held_out"
        gallery = GallerySample(gallery_per_set, rng, status_of)
        entry[key] = read_set(generation_set, gallery)
        galleries[generation_set.name] = gallery.picked()
        if key == "held_out":
            entry["held_out_accuracy"] = entry[key]["overall"]["accuracy"]
    return {"cycles": [cycles[cycle] for cycle in sorted(cycles)]}, galleries


# ---------------------------------------------------------------- plots


def plot_by_cycle(
    stats: dict[str, Any], split: str, metric: str, title: str, path: Path, *, by: str = "by_label_type"
) -> bool:
    """A line per label type (or task, ``by="by_task"``) and overall of ``metric`` against the
    cycle; groups without a value (None: e.g. no grounding check) are left out. False when no data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for entry in stats["cycles"]:
        if split not in entry:
            continue
        if entry[split]["overall"][metric] is not None:
            series["overall"].append((entry["cycle"], entry[split]["overall"][metric]))
        for name, group in entry[split][by].items():
            if group[metric] is not None:
                series[f"{by.removeprefix('by_').replace('_', ' ')}: {name}"].append((entry["cycle"], group[metric]))
    if not series:
        return False
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, points in series.items():
        cycles, values = zip(*points)
        style = (
            {"color": "black", "linewidth": 2.5, "zorder": 3}
            if name == "overall"
            else {"linestyle": "--", "linewidth": 1.2}
        )
        axes.plot(cycles, [100 * v for v in values], marker="o", label=name, **style)
    axes.set_xlabel("after cycle (0 = starting model)" if split == "held_out" else "cycle")
    axes.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    axes.set_ylim(-2, 102)
    axes.set_xticks(sorted({c for points in series.values() for c, _ in points}))
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return True


# ---------------------------------------------------------------- gallery


def status_of(generation: Generation) -> str:
    if not generation.passed:
        return "failed"
    if generation.grounded is False:  # passed, and passed again without the video
        return "ungrounded"
    return "rationalized" if generation.rationalized else "passed"


def frame_strip(generation: Generation, video_root: Path | None, frames_dir: Path) -> tuple[str | None, str]:
    """A PNG strip of frames for the sample's clip: (path relative to the report, error)."""
    if video_root is None:
        return None, "no video root known"
    key = hashlib.sha1(
        f"{generation.sample.video}|{generation.sample.start}|{generation.sample.end}".encode()
    ).hexdigest()[:16]
    path = frames_dir / f"{key}.png"
    if not path.exists():
        from llava_star.media.video import read_frames, resolve_video_path

        try:
            video = resolve_video_path(video_root, generation.sample.video)
            frames = read_frames(video, STRIP_FRAMES, start=generation.sample.start, end=generation.sample.end)
        except VideoError as error:
            return None, str(error)
        _save_strip(frames.array, path)
    return f"{frames_dir.name}/{path.name}", ""


def _save_strip(array, path: Path) -> None:
    from PIL import Image

    height, width = array.shape[1:3]
    scale = STRIP_HEIGHT / height
    tiles = [
        Image.fromarray(frame).resize((max(1, round(width * scale)), STRIP_HEIGHT), Image.NEAREST) for frame in array
    ]
    strip = Image.new("RGB", (sum(tile.width for tile in tiles) + 2 * (len(tiles) - 1), STRIP_HEIGHT), (255, 255, 255))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 2
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.png")
    strip.save(temporary)
    temporary.replace(path)


def _label_text(generation: Generation) -> str:
    parts = []
    for label in generation.sample.labels:
        value = label.value
        text = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        parts.append(f"{label.name or label.type}: {text}")
    return "; ".join(parts)


def card(generation: Generation, generation_set: GenerationSet, image: str | None, image_error: str) -> dict[str, Any]:
    """What the page shows of one sample (``templates/report.html`` lays it out)."""
    status = status_of(generation)
    return {
        "status": status,
        "verdict": {
            "passed": "passed",
            "rationalized": "passed after rationalization",
            "failed": "failed",
            "ungrounded": "passed, and without the video too (ungrounded)",
        }[status],
        "reason": first_failure(generation.checks),
        "image": image,
        "image_error": image_error,
        "video": generation.sample.video,
        "set_name": generation_set.name,
        "cycle": generation_set.cycle,
        "split": generation_set.split,
        "source": generation.sample.source,
        "task": generation.sample.task,
        "id": generation.id,
        "question": generation.sample.question,
        "answer": generation.answer,
        "label": _label_text(generation),
    }


def _summary_rows(stats: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in stats["cycles"]:
        training = entry.get("training", {}).get("overall")
        cells = [entry["label"]]
        if training:
            cells += [
                str(training["samples"]),
                f"{100 * training['kept_fraction']:.1f}%",
                f"{100 * training['kept_direct_fraction']:.1f}%",
                f"{100 * training['kept_rationalized_fraction']:.1f}%",
            ]
        else:
            cells += ["-"] * 4
        accuracy = entry.get("held_out_accuracy")
        cells.append("-" if accuracy is None else f"{100 * accuracy:.1f}%")
        rows.append(cells)
    return rows


def render_html(
    run_dir: Path,
    stats: dict[str, Any],
    cards: Sequence[dict[str, Any]],
    plots: Sequence[str],
    sets: Sequence[GenerationSet],
) -> str:
    """The page, from the package's ``templates/report.html`` (Jinja, every value escaped)."""
    import jinja2

    cycles = sorted({s.cycle for s in sets})
    filters = [
        {
            "name": "status",
            "label": "verdict",
            "options": [
                ("all", "all"),
                ("passed_any", "passed (any)"),
                ("passed", "passed directly"),
                ("rationalized", "rationalized"),
                ("ungrounded", "ungrounded (passes without the video)"),
                ("failed", "failed"),
            ],
        },
        {
            "name": "split",
            "label": "split",
            "options": [("all", "all"), ("train", "training"), ("held-out", "held-out")],
        },
        {"name": "cycle", "label": "cycle", "options": [("all", "all"), *[(str(c), str(c)) for c in cycles]]},
    ]
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(page_template())
    return template.render(
        run_name=run_dir.name,
        run_dir=str(run_dir),
        stats_file=REPORT_STATS,
        summary_rows=_summary_rows(stats),
        preference_rows=preference_rows(stats),
        plots=plots,
        filters=filters,
        cards=cards,
    )


def page_template() -> str:
    """The report page's Jinja template, shipped as package data."""
    return (resources.files("llava_star") / "templates" / "report.html").read_text(encoding="utf-8")


def _video_root_of(run_dir: Path) -> Path | None:
    config = CycleRunDir(run_dir).config
    if not config.exists():
        return None

    video_root = read_yaml_mapping(config).get("video_root")
    return Path(video_root) if isinstance(video_root, str) else None


def write_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    video_root: str | Path | None = None,
    gallery_per_set: int = 24,
    seed: int = 0,
) -> Path:
    """Write stats.json, the plots and index.html for ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LlavaStarError(f"{run_dir}: not a directory")
    out = Path(out_dir) if out_dir is not None else CycleRunDir(run_dir).report
    video_root = Path(video_root) if video_root is not None else _video_root_of(run_dir)
    sets = discover_sets(run_dir)
    if not sets:
        raise LlavaStarError(
            f"{run_dir}: no generation shards found (expected cycle_K/generations/generations.rank*.jsonl)"
        )
    stats, galleries = run_statistics(sets, gallery_per_set, random.Random(seed))
    stats["run_dir"] = str(run_dir)
    _add_unusable_training_records(stats, CycleRunDir(run_dir).recorded())
    add_preference_figures(stats, CycleRunDir(run_dir).recorded())
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_STATS, stats)
    plots = []
    if plot_by_cycle(
        stats, "training", "kept_fraction", "Kept answers per cycle (training samples)", out / "kept_by_cycle.png"
    ):
        plots.append("kept_by_cycle.png")
    if plot_by_cycle(
        stats, "held_out", "accuracy", "Held-out accuracy (direct answers that pass)", out / "accuracy_by_cycle.png"
    ):
        plots.append("accuracy_by_cycle.png")
    grounded_title = "Grounded fraction of kept answers (--grounding-check)"
    if plot_by_cycle(
        stats, "training", "grounded_fraction", grounded_title, out / "grounded_by_cycle.png", by="by_task"
    ):
        plots.append("grounded_by_cycle.png")
    cards = []
    for generation_set in sets:
        for generation in galleries[generation_set.name]:
            image, error = frame_strip(generation, video_root, out / "frames")
            cards.append(card(generation, generation_set, image, error))
    page = out / REPORT_PAGE
    write_text_atomic(page, render_html(run_dir, stats, cards, plots, sets))
    logger.info("report: %s (%d cards)", page, len(cards))
    return page


def _add_unusable_training_records(stats: dict[str, Any], recorded: dict[str, Any] | None) -> None:
    """Training records whose media could not be read, per cycle, as the cycle recorded them."""
    trained = {entry["cycle"]: entry["train"] for entry in (recorded or {}).get("cycles", [])}
    for entry in stats["cycles"]:
        if entry["cycle"] in trained:
            entry["unusable_training_records"] = trained[entry["cycle"]].get("unusable_records", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-star report",
        description="Write stats.json, plots and an HTML gallery for a cycle run (or one generation directory).",
    )
    parser.add_argument("run_dir", help="output_dir of `llava-star cycle`, or a generation directory")
    parser.add_argument("-o", "--output", help="report directory (default RUN_DIR/report)")
    parser.add_argument("--video-root", help="where the videos are (default: video_root of RUN_DIR/config.yaml)")
    parser.add_argument("--gallery-size", type=int, default=24, help="samples shown per cycle and split (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed for picking gallery samples")
    args = parser.parse_args(argv)
    page = write_report(
        args.run_dir, out_dir=args.output, video_root=args.video_root, gallery_per_set=args.gallery_size, seed=args.seed
    )
    stats = json.loads((page.parent / REPORT_STATS).read_text(encoding="utf-8"))
    for entry in stats["cycles"]:
        logger.info(
            "cycle %d: kept %s, held-out accuracy %s",
            entry["cycle"],
            f"{100 * entry['training']['overall']['kept_fraction']:.1f}%" if "training" in entry else "-",
            f"{100 * entry['held_out_accuracy']:.1f}%" if "held_out_accuracy" in entry else "-",
        )
    sys.stdout.write(f"report: {page}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
