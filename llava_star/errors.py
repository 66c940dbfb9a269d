"""Exception types raised at stage boundaries.

Every error says what value was wrong and where it came from (file and line, sample id,
config key), so a user can fix the input without reading the code.
"""

from __future__ import annotations


class LlavaStarError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class RecordError(LlavaStarError):
    """A malformed JSONL/JSON record, e.g. ``samples.jsonl:12: labels[0].type: unknown 'colour'``."""


class NothingToExport(RecordError):
    """No generation passed the export's filters (``--direct-only``, ``--drop-ungrounded``): an
    export refuses to write an empty training file; the cycle skips that cycle's training."""


class LabelError(RecordError):
    """A label of an unknown type, or whose value has the wrong shape for its type."""


class AnnotationError(LlavaStarError):
    """A dataset annotation file (CSV, JSON, pickle) that cannot be read as its format says."""


class VideoError(LlavaStarError):
    """A video that is missing, corrupt, truncated or has no frames. Names the file."""


class ImageError(LlavaStarError):
    """An image that is missing, truncated or not an image. Names the file."""


class OutputError(LlavaStarError):
    """An output that cannot be written (disk full, read-only, no permission). Names the file;
    what was written before stays."""


class ConfigError(LlavaStarError):
    """A config key that is unknown or has a bad value. Names the key."""


class MissingDependencyError(LlavaStarError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class EvaluationError(LlavaStarError):
    """An lmms-eval run that failed or wrote no result for a requested task (names the log)."""
