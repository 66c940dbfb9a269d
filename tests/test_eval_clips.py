"""The tasks hand a model a file holding exactly the doc's frames; our adapter reads ranges itself.

Built-in lmms-eval wrappers read ``doc_to_visual``'s file whole: before, a STAR question
about 11.1-19.6 s was answered from frames spread over the whole video, and a FineDiving
frame folder was skipped. The stamped media (:mod:`stamped_media`) say which frames a file holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from frame_numbers import read_stamps
from stamped_media import make_stamped_media

from llava_star.errors import ConfigError
from llava_star.eval_tasks import hooks
from llava_star.eval_tasks.docs import sample_to_doc
from llava_star.media.video import read_frames
from llava_star.records import read_samples


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    return make_stamped_media(tmp_path_factory.mktemp("stamped"))


def _docs(media) -> dict[str, dict]:
    return {sample.source: json.loads(json.dumps(sample_to_doc(sample))) for sample in read_samples(media.samples)}


def _every_frame(path: str) -> list[int]:
    total = read_frames(path, 1).total_num_frames
    return read_stamps(read_frames(path, total).array)


@pytest.fixture
def environment(stamped, monkeypatch, tmp_path):
    monkeypatch.setenv(hooks.VIDEO_DIR_VARIABLE, str(stamped.videos))
    monkeypatch.setenv(hooks.CLIP_CACHE_VARIABLE, str(tmp_path / "clips"))
    return tmp_path / "clips"


def test_a_clip_doc_gets_a_file_of_exactly_its_frames(stamped, environment):
    [path] = hooks.doc_to_visual(_docs(stamped)["star"])
    assert path.endswith(".mp4") and path.startswith(str(environment))
    assert _every_frame(path) == list(stamped.clip_range)


def test_a_folder_doc_gets_a_file_of_exactly_its_frames(stamped, environment):
    [path] = hooks.doc_to_visual(_docs(stamped)["finediving"])
    assert path.endswith("dive0_frames.mp4") and path.startswith(str(environment))
    assert _every_frame(path) == list(stamped.folder_range)


def test_a_whole_video_stays_as_it_is(stamped, environment):
    assert hooks.doc_to_visual(_docs(stamped)["kinetics700"]) == [str(stamped.videos / "kinetics/stamped.mp4")]
    assert not environment.exists()


def test_a_clip_is_cut_once_and_reused(stamped, environment):
    doc = _docs(stamped)["star"]
    [first] = hooks.doc_to_visual(doc)
    written = (Path(first).stat().st_mtime_ns, Path(first).stat().st_ino)
    [again] = hooks.doc_to_visual(dict(doc, id="another question on the same clip"))
    assert again == first and (Path(again).stat().st_mtime_ns, Path(again).stat().st_ino) == written
    assert [path.name for path in Path(first).parent.iterdir()] == [Path(first).name]  # no .part left


def test_the_default_cache_is_beside_the_videos(stamped, monkeypatch, tmp_path):
    videos = tmp_path / "videos"
    videos.symlink_to(stamped.videos)
    monkeypatch.setenv(hooks.VIDEO_DIR_VARIABLE, str(videos))
    monkeypatch.delenv(hooks.CLIP_CACHE_VARIABLE, raising=False)
    cache = hooks.clip_cache_dir("star")
    assert cache.parent == videos / hooks.DEFAULT_CLIP_CACHE and cache.name.startswith("star-")
    # another root holding the same relative paths gets its own clips
    monkeypatch.setenv(hooks.video_dir_variable("star"), str(tmp_path))
    assert hooks.clip_cache_dir("star").name != cache.name


@pytest.mark.parametrize(("source", "expected"), [("star", "clip_range"), ("finediving", "folder_range")])
def test_our_adapter_reads_the_range_from_the_source(stamped, environment, source, expected):
    """``llava_star`` decodes the doc's range from the source and cuts no clip file."""
    from llava_star.eval_tasks.lmms_adapter import LlavaStarVideo

    pytest.importorskip("lmms_eval")
    adapter = object.__new__(LlavaStarVideo)  # the frame reading only; no model is loaded
    adapter.num_frames = 8

    def refuse(doc):
        raise AssertionError("the adapter must not ask doc_to_visual for a project doc")

    frames = adapter._doc_frames(_docs(stamped)[source], refuse)
    numbers = read_stamps(frames.array)
    assert len(numbers) == 8 and set(numbers) <= set(getattr(stamped, expected))
    assert numbers == sorted(numbers) and numbers[0] < numbers[-1]
    assert not environment.exists()


def test_an_unwritable_clip_cache_names_the_variable(stamped, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(hooks.VIDEO_DIR_VARIABLE, str(stamped.videos))
    monkeypatch.setenv(hooks.CLIP_CACHE_VARIABLE, str(blocker / "clips"))
    with pytest.raises(ConfigError, match="LLAVA_STAR_CLIP_CACHE"):
        hooks.doc_to_visual(_docs(stamped)["star"])
    # a whole video needs no cache
    assert hooks.doc_to_visual(_docs(stamped)["kinetics700"]) == [str(stamped.videos / "kinetics/stamped.mp4")]
