"""The files the package reads at run time (chat templates, the report page) load, render,
and are named by setup.cfg's package_data, so an installed wheel has them."""

import configparser
import fnmatch
from pathlib import Path

import jinja2
import pytest

from llava_star.models import templates
from llava_star.models.families import FAMILIES
from llava_star.stages import report

PACKAGE = Path(__file__).resolve().parent.parent / "llava_star"


def package_data_patterns():
    parser = configparser.ConfigParser()
    parser.read(PACKAGE.parent / "setup.cfg")
    return [pattern.strip() for pattern in parser["options.package_data"]["llava_star"].split(",")]


@pytest.mark.parametrize("suffix", [".jinja", ".html"])
def test_template_files_are_package_data(suffix):
    files = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob(f"*{suffix}")]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in package_data_patterns()), name


def render(template, messages, add_generation_prompt=False):
    # transformers compiles chat templates with these settings
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


CONVERSATION = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What colour?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
]


@pytest.mark.parametrize(
    "family, expected",
    [
        ("video_llava", "USER: <video>\nWhat colour? ASSISTANT: Red.</s>"),
        (
            "llava_onevision",
            "<|im_start|>user\n<video>\nWhat colour?<|im_end|>\n<|im_start|>assistant\nRed.<|im_end|>\n",
        ),
        (
            "qwen2_vl",
            (
                "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What colour?<|im_end|>\n"
                "<|im_start|>assistant\nRed.<|im_end|>\n"
            ),
        ),
    ],
)
def test_chat_templates_load_from_their_files_and_render(family, expected):
    assert render(FAMILIES[family].chat_template, CONVERSATION) == expected


def test_generation_prompts_and_plain_templates():
    assert (
        render(templates.LLAVA_TEMPLATE, CONVERSATION[:1], add_generation_prompt=True)
        == "USER: <video>\nWhat colour? ASSISTANT:"
    )
    assert (
        render(FAMILIES["qwen2_vl"].plain_template, CONVERSATION) == "<|vision_start|><|video_pad|><|vision_end|>Red.\n"
    )
    assert render(FAMILIES["video_llava"].plain_template, CONVERSATION) == "<video>Red.\n"


def test_report_page_template_loads_and_escapes():
    page = report.render_html(Path("/runs/r"), {"cycles": [{"label": "start", "held_out_accuracy": 0.5}]}, [], [], [])
    assert page.startswith("<!DOCTYPE html>") and "<td>50.0%</td>" in page and 'id="shown">0<' in page
    assert "{{" not in page and "{%" not in page


def test_the_patches_package_is_installed():
    """``patches/`` (lmms-eval's runtime patches, which ``llava-star eval`` applies) ships in the wheel."""
    from setuptools import find_packages

    parser = configparser.ConfigParser()
    parser.read(PACKAGE.parent / "setup.cfg")
    include = parser["options.packages.find"]["include"].split()
    found = find_packages(where=str(PACKAGE.parent), include=include)
    assert "patches" in found and "llava_star.eval_tasks" in found
