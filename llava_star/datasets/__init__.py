"""Dataset adapters: one module per dataset, each turning annotations into Samples.

``ADAPTERS`` maps the dataset names ``llava-star prepare`` accepts to the module and
function that reads them; a module is imported only when its dataset is asked for.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from llava_star.datasets.adapter import Adapter

# dataset name -> (module, function); several names may share a reader
ADAPTERS = MappingProxyType(
    {
        "kinetics": ("llava_star.datasets.kinetics", "adapt"),
        "kinetics400": ("llava_star.datasets.kinetics", "adapt"),
        "kinetics600": ("llava_star.datasets.kinetics", "adapt"),
        "kinetics700": ("llava_star.datasets.kinetics", "adapt"),
        "kinetics700_2020": ("llava_star.datasets.kinetics", "adapt"),
        "finediving": ("llava_star.datasets.finediving", "adapt"),
        "star": ("llava_star.datasets.star", "adapt"),
        "ssv2": ("llava_star.datasets.ssv2", "adapt"),
        "charades": ("llava_star.datasets.charades", "adapt"),
        "charades_sta": ("llava_star.datasets.charades", "adapt_sta"),
        "activitynet_captions": ("llava_star.datasets.activitynet", "adapt"),
        "generic": ("llava_star.datasets.generic", "adapt"),
    }
)


def get_adapter(dataset: str) -> Adapter:
    """The reader for a dataset name; ValueError lists the known names."""
    try:
        module_name, function_name = ADAPTERS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(ADAPTERS)}") from None
    return getattr(importlib.import_module(module_name), function_name)
