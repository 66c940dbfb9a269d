"""The report: stats.json from real generation shards, plots, and an HTML gallery in Chromium."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from llava_star.records import JsonlAppender
from llava_star.stages import report

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230)}


def write_video(path, colour, frames=12, size=32):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            array = np.full((size, size, 3), 245, np.uint8)
            x = 2 + index
            array[10:22, x : x + 12] = COLOURS[colour]
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generation(sample_id, colour, *, answer, passed, rationalized=False, cycle=1, reason="", source="synthetic"):
    labels = [{"type": "class", "value": colour, "name": "colour"}]
    checks = [{"type": "class", "passed": passed, "reason": "" if passed else reason}]
    if sample_id.endswith("-count"):
        labels.append({"type": "number", "value": 2.0, "name": "count", "tolerance": 0})
        checks.append({"type": "number", "passed": True, "reason": ""})
    return {
        "id": sample_id,
        "video": f"videos/{colour}.mp4",
        "question": "What colour is the square?",
        "labels": labels,
        "source": source,
        "task": "colour",
        "answer": answer,
        "rationalized": rationalized,
        "passed": passed,
        "checks": checks,
        "cycle": cycle,
        "model": "tiny",
    }


def write_shard(directory, lines):
    with JsonlAppender(directory / "generations.rank00000-of-00001.jsonl") as appender:
        appender.write_many(lines)


@pytest.fixture
def run_dir(tmp_path):
    """A finished 2-cycle run: cycle 1 keeps 2 of 4 answers, cycle 2 keeps 4 of 4."""
    videos = tmp_path / "media"
    for colour in COLOURS:
        write_video(videos / "videos" / f"{colour}.mp4", colour)
    run = tmp_path / "run"
    (run / "config.yaml").parent.mkdir(parents=True)
    (run / "config.yaml").write_text(f"video_root: {videos}\n", encoding="utf-8")
    wrong = "expected 'red', answer names 'blue'"
    write_shard(
        run / "baseline" / "eval" / "generations",
        [
            generation("t1", "red", answer="It is blue.", passed=False, reason=wrong, cycle=0),
            generation("t2", "green", answer="The square is green.", passed=True, cycle=0),
        ],
    )
    write_shard(
        run / "cycle_1" / "generations",
        [
            generation("a", "red", answer="The square is red.", passed=True),
            generation("b", "green", answer="Step 1: the square is green.", passed=True, rationalized=True),
            generation(
                "c",
                "blue",
                answer="It is red <script>alert(1)</script>",
                passed=False,
                reason="expected 'blue', answer names 'red'",
            ),
            generation("d-count", "red", answer="", passed=False, reason="empty answer"),
        ],
    )
    with JsonlAppender(run / "cycle_1" / "generations" / "failures.rank00000-of-00001.jsonl") as appender:
        appender.write({"id": "e", "video": "videos/missing.mp4", "reason": "videos/missing.mp4: no such file"})
    write_shard(
        run / "cycle_1" / "eval" / "generations",
        [
            generation("t1", "red", answer="It is red.", passed=True),
            generation("t2", "green", answer="It is blue.", passed=False, reason=wrong),
        ],
    )
    write_shard(
        run / "cycle_2" / "generations",
        [
            generation(name, colour, answer=f"The square is {colour}.", passed=True, cycle=2)
            for name, colour in (("a", "red"), ("b", "green"), ("c", "blue"), ("d-count", "red"))
        ],
    )
    write_shard(
        run / "cycle_2" / "eval" / "generations",
        [
            generation("t1", "red", answer="It is red.", passed=True, cycle=2),
            generation("t2", "green", answer="It is green.", passed=True, cycle=2),
        ],
    )
    return run


def test_stats_per_cycle_source_and_label_type(run_dir):
    page = report.write_report(run_dir)
    stats = json.loads((page.parent / "stats.json").read_text())
    by_cycle = {entry["cycle"]: entry for entry in stats["cycles"]}
    assert sorted(by_cycle) == [0, 1, 2]
    assert by_cycle[0]["held_out_accuracy"] == 0.5 and "training" not in by_cycle[0]
    first = by_cycle[1]["training"]
    assert first["overall"]["samples"] == 4 and first["unreadable_videos"] == 1
    assert (first["overall"]["kept_direct"], first["overall"]["kept_rationalized"]) == (1, 1)
    assert first["overall"]["kept_fraction"] == 0.5
    assert first["overall"]["failures_by_reason"] == {
        "class: expected '…', answer names '…'": 1,
        "class: empty answer": 1,
    }
    assert first["by_label_type"]["number"]["samples"] == 1 and first["by_label_type"]["class"]["samples"] == 4
    assert first["by_source"]["synthetic"]["samples"] == 4
    assert first["overall"]["answer_words_mean"] == pytest.approx((4 + 6 + 4 + 0) / 4)
    assert by_cycle[1]["held_out_accuracy"] == 0.5 and by_cycle[2]["held_out_accuracy"] == 1.0
    assert by_cycle[2]["training"]["overall"]["kept_fraction"] == 1.0


def test_plots_and_gallery_files(run_dir):
    from PIL import Image

    page = report.write_report(run_dir)
    for name in ("kept_by_cycle.png", "accuracy_by_cycle.png"):
        with Image.open(page.parent / name) as image:
            assert image.size[0] > 300
    text = page.read_text()
    assert text.count('<article class="card') == 4 + 2 + 2 + 4 + 2  # every sample of this small run
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    strips = sorted((page.parent / "frames").glob("*.png"))
    assert len(strips) == 3  # one per distinct video, shared by cycles
    with Image.open(strips[0]) as strip:
        assert strip.size[1] == report.STRIP_HEIGHT and strip.size[0] > 5 * report.STRIP_HEIGHT
    assert 'data-status="rationalized"' in text and 'data-status="failed"' in text


def test_missing_video_is_shown_not_fatal(run_dir, tmp_path):
    page = report.write_report(run_dir, video_root=tmp_path / "nowhere", out_dir=tmp_path / "other")
    assert "frames unavailable" in page.read_text()


def test_gallery_is_capped_and_balanced(run_dir):
    page = report.write_report(run_dir, gallery_per_set=3)
    text = page.read_text()
    cycle_1_training = [part for part in text.split("<article")[1:] if 'data-cycle="1" data-split="train"' in part]
    assert len(cycle_1_training) == 3
    assert {
        s for s in ("passed", "rationalized", "failed") if any(f'data-status="{s}"' in p for p in cycle_1_training)
    } == {"passed", "rationalized", "failed"}


def test_cli_on_a_single_generation_directory(run_dir, tmp_path, capsys):
    directory = run_dir / "cycle_1" / "generations"
    assert report.main([str(directory), "-o", str(tmp_path / "single"), "--video-root", str(tmp_path / "media")]) == 0
    assert (tmp_path / "single" / "index.html").exists()
    assert "report:" in capsys.readouterr().out


def test_empty_run_dir_is_an_error(tmp_path):
    from llava_star.errors import LlavaStarError

    with pytest.raises(LlavaStarError, match="no generation shards"):
        report.write_report(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(args, tmp_path):
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium; CI installs it)"
)
def test_gallery_renders_in_chromium(run_dir, tmp_path):
    from PIL import Image

    page = report.write_report(run_dir)
    screenshot = tmp_path / "page.png"
    result = chromium([f"--screenshot={screenshot}", "--window-size=1280,1600", page.as_uri()], tmp_path)
    assert screenshot.exists(), result.stderr[-2000:]
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    # the frame strips draw saturated red, green and blue squares: a blank or broken
    # page has none of them
    for rgb in COLOURS.values():
        close = np.abs(pixels.astype(int) - np.array(rgb)).sum(axis=2) < 60
        assert close.sum() > 100, f"no {rgb} pixels in the screenshot"
    assert (pixels.min(axis=2) < 200).mean() > 0.02  # text, borders and images, not a white page

    # the filters run in the browser: ?status=failed hides every card that did not fail
    dom = chromium(["--dump-dom", page.as_uri() + "?status=failed"], tmp_path).stdout
    cards = dom.split("<article")[1:]
    assert len(cards) == 14
    visible = [card for card in cards if " hidden" not in card.split(">", 1)[0]]
    assert visible and all('data-status="failed"' in card for card in visible)
    assert len(visible) == 4  # baseline t1, cycle 1: c and d-count, cycle 1 held-out t2
    assert 'id="shown">4<' in dom


def test_report_command_is_registered():
    from llava_star.cli import COMMANDS, resolve

    assert COMMANDS["report"][0] == "llava_star.stages.report:main"
    assert resolve(COMMANDS["report"][0]) is report.main
    assert sys.modules.get("llava_star.stages.report") is report
