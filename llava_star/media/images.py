"""Still images of LLaVA instruction data (LLaVA-665K's ``image`` records), decoded to RGB arrays.

Video-STaR trains on its own video data mixed with image instruction data; the image
records name a file relative to an image folder (LLaVA's ``--image_folder``). Decoding
happens in the training DataLoader workers, so a bad file is an :class:`ImageError` that
names it, which the dataset reports and skips like an unreadable video.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from llava_star.errors import ImageError
from llava_star.media.limits import check_image_size


def resolve_image_path(image_root: str | os.PathLike[str], image: str) -> Path:
    """``image_root / image``, refusing names that would leave the root (``..``, absolute, symlinks out).

    >>> resolve_image_path("/data/coco", "train2017/000000033471.jpg").as_posix()
    '/data/coco/train2017/000000033471.jpg'
    """
    pure = PurePath(image)
    if not image or pure.is_absolute() or image.startswith(("/", "\\")) or ".." in image.replace("\\", "/").split("/"):
        raise ImageError(f"image {image!r}: expected a path inside the image root {image_root}")
    joined = Path(image_root) / pure
    real_root = Path(image_root).resolve()
    if not joined.resolve().is_relative_to(real_root):
        raise ImageError(f"image {image!r}: resolves to {joined.resolve()}, outside the image root {real_root}")
    return joined


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as ``uint8 [height, width, 3]`` RGB (grey, palette and alpha converted).

    The whole file is decoded here, so a truncated file fails now, naming it, rather than
    inside the processor.
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    # lmms-eval 0.7.3 sets PIL's process-wide LOAD_TRUNCATED_IMAGES = True when imported
    # (lmms_eval/api/task.py), which would make a cut-off file decode as a half-grey image.
    # Decode strictly whatever else the process imported, then put the flag back.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():  # the cap below decides, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            check_image_size(Path(path), image, ImageError)
            image.load()
            return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: cannot decode the image: {error}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def pad_to_square(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``image`` centred on a square of ``colour``, its side the longer side, as LLaVA's
    ``expand2square`` (``--image_aspect_ratio pad``): the processor then resizes the whole
    picture instead of cropping its sides away.

    >>> pad_to_square(np.zeros((2, 4, 3), np.uint8), (122, 116, 104))[:, 0].tolist()
    [[122, 116, 104], [0, 0, 0], [0, 0, 0], [122, 116, 104]]
    """
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    square = np.empty((side, side, 3), dtype=image.dtype)
    square[:] = np.asarray(colour, dtype=image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = image
    return square


def pad_colour(image_mean: Any) -> tuple[int, int, int]:
    """The fill of :func:`pad_to_square` from a processor's ``image_mean`` (0-1 floats), as
    LLaVA computes it: ``int(x * 255)`` per channel.

    >>> pad_colour([0.48145466, 0.4578275, 0.40821073])
    (122, 116, 104)
    """
    values = [float(x) for x in (image_mean if isinstance(image_mean, (list, tuple)) else [image_mean] * 3)]
    if len(values) != 3:
        raise ImageError(f"image_mean: expected 3 channels, got {values}")
    return tuple(int(x * 255) for x in values)  # type: ignore[return-value]
