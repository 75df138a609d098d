"""LLaVA-1.5 "pad" image preprocessing, tolerant of the image formats users actually have.

Pad to a square with the mean colour, resize, centre-crop, normalise (LLaVA-1.5's `image_aspect_ratio="pad"`).
Part of the remote-code bundle: imports only torch, transformers and their dependencies (numpy, PIL).
"""

import io
import os

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .transformers_imports import BaseImageProcessor, BatchFeature

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def load_image(image, index: int = 0) -> Image.Image:
    """Any supported image (PIL, numpy, torch, path, bytes) as an RGB PIL image; ValueError naming what is wrong."""
    if isinstance(image, (str, os.PathLike, bytes)):
        source = io.BytesIO(image) if isinstance(image, bytes) else image
        name = "bytes" if isinstance(image, bytes) else os.fspath(image)
        # Some libraries (e.g. lmms-eval) switch PIL to padding truncated files silently for the whole process;
        # decode strictly here so a truncated file is an error, not a partly grey image.
        lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            with Image.open(source) as opened:
                opened.load()  # decode now: a truncated file fails here, not later mid-batch
                image = ImageOps.exif_transpose(opened)
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise ValueError(f"Image {index} ({name}) could not be decoded: {error}") from error
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    elif isinstance(image, torch.Tensor):
        image = array_to_pil(image.detach().cpu().numpy(), index)
    elif isinstance(image, np.ndarray):
        image = array_to_pil(image, index)
    elif not isinstance(image, Image.Image):
        raise ValueError(
            f"Image {index} has unsupported type {type(image).__name__}: pass a PIL image, a numpy array, a torch "
            "tensor, a file path or encoded bytes."
        )
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image {index} has zero size ({image.width}x{image.height}).")
    return to_rgb(image)


def array_to_pil(array: np.ndarray, index: int = 0) -> Image.Image:
    """HWC or CHW arrays, 1/3/4 channels; uint8 as is, 16-bit scaled, floats read as [0, 1] (or [0, 255] if above 1)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"Image {index} has shape {array.shape}; expected (H, W), (H, W, C) or (C, H, W), C in 1/3/4.")
    if 0 in array.shape:
        raise ValueError(f"Image {index} has zero size (shape {array.shape}).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype in (np.uint16, np.int32, np.int64, np.uint32):
        array = np.clip(array, 0, 65535) / 257 if array.max() > 255 else array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"Image {index} contains NaN or infinite values.")
        array = array * 255 if array.max() <= 1.0 else array
    return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any PIL mode: transparency is composited on white, 16-bit and float modes are rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = array_to_pil(np.asarray(image), 0)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB") if image.mode != "RGB" else image


class MatryoshkaLlavaImageProcessor(BaseImageProcessor):
    r"""
    LLaVA-1.5 image preprocessing: pad to a square with the mean colour, resize the shortest edge, centre-crop,
    rescale to [0, 1] and normalise. Accepts PIL images, numpy arrays, torch tensors, file paths and bytes; L, LA,
    P, RGBA, CMYK and 16-bit images are converted to RGB.

    Args:
        do_pad (`bool`, defaults to `True`): pad to a square first (LLaVA's `image_aspect_ratio="pad"`).
        size (`dict`, defaults to `{"shortest_edge": 336}`): resize target of the shortest edge.
        crop_size (`dict`, defaults to `{"height": 336, "width": 336}`): centre-crop size.
        resample (`int`, defaults to bicubic): PIL resampling filter.
        rescale_factor (`float`, defaults to 1/255).
        image_mean, image_std (`list[float]`): CLIP normalisation; the padding colour is the mean in 0..255.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_pad: bool = True,
        size: dict | None = None,
        crop_size: dict | None = None,
        resample: int = Image.Resampling.BICUBIC,
        rescale_factor: float = 1 / 255,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.do_pad = do_pad
        self.size = size if size is not None else {"shortest_edge": 336}
        self.crop_size = crop_size if crop_size is not None else {"height": 336, "width": 336}
        self.resample = int(resample)
        self.rescale_factor = rescale_factor
        self.image_mean = list(image_mean) if image_mean is not None else list(CLIP_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(CLIP_STD)

    @property
    def pad_color(self) -> tuple[int, ...]:
        return tuple(int(mean * 255) for mean in self.image_mean)

    def preprocess_one(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> (3, crop_h, crop_w) float32 array."""
        if self.do_pad and image.width != image.height:
            side = max(image.width, image.height)
            square = Image.new("RGB", (side, side), self.pad_color)
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            image = square
        return crop_and_normalize(image, self.size, self.crop_size, self.resample, self.rescale_factor,
                                  self.image_mean, self.image_std)

    def __call__(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors)

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        images = flatten_images(images)
        pixel_values = [self.preprocess_one(load_image(image, index)) for index, image in enumerate(images)]
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


def shortest_edge(size: dict) -> int:
    return size["shortest_edge"] if "shortest_edge" in size else min(size.values())


def crop_and_normalize(image: Image.Image, size: dict, crop_size: dict, resample: int, rescale_factor: float,
                       image_mean: list[float], image_std: list[float]) -> np.ndarray:
    """The CLIP steps both image processors share: resize the shortest edge, centre-crop, rescale, normalise.

    An RGB PIL image -> a (3, crop height, crop width) float32 array (resize and crop are no-ops at the target size).
    """
    shortest = shortest_edge(size)
    scale = shortest / min(image.width, image.height)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample=resample)
    crop_height, crop_width = crop_size["height"], crop_size["width"]
    left, top = (image.width - crop_width) // 2, (image.height - crop_height) // 2
    image = image.crop((left, top, left + crop_width, top + crop_height))
    array = np.asarray(image, dtype=np.float32) * rescale_factor
    array = (array - np.asarray(image_mean, dtype=np.float32)) / np.asarray(image_std, dtype=np.float32)
    return array.transpose(2, 0, 1)


def flatten_images(images) -> list:
    """A single image, a sequence of images, or a list of per-sample lists -> one flat list in order."""
    if images is None:
        return []
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, dict)) or not hasattr(images, "__iter__"):
        return [images]
    # lists, tuples and other sequences (e.g. a `datasets` image column), possibly one list per sample
    return [image for item in images for image in flatten_images(item)]


__all__ = ["MatryoshkaLlavaImageProcessor", "load_image"]
