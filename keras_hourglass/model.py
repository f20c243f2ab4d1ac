"""Stacked Hourglass Network builder (Newell, Yang and Deng, ECCV 2016).

The functional graph is built here in one place, from Keras layers only, so
the model runs on any Keras backend, round-trips through `get_config` and
`.keras` files, and converts to TFLite without custom operators.

Architecture, following the paper and its reference Torch code
(`pose-hg-train`):

* residual module: pre-activation bottleneck BN-ReLU-conv1x1(f/2) ->
  BN-ReLU-conv3x3(f/2) -> BN-ReLU-conv1x1(f), added to the input; a 1x1 conv
  on the skip path only where input and output widths differ;
* stem: conv7x7/2 (64) with 3 pixels of zero padding on every side -> BN ->
  ReLU -> residual 64->128 -> max-pool 2 -> residual 128->128 -> residual
  128->filters (`stem_filters=(64, 128, 128)`; bearpaw/pytorch-pose's
  `hg` model widens the second residual: `(64, 128, 256)`). Keras' `padding="same"` would pad a stride-2 conv
  asymmetrically (2 pixels before, 3 after), shifting every prediction by
  half an input pixel and breaking weight compatibility with the reference
  checkpoints, hence the explicit `ZeroPadding2D`;
* hourglass of depth `depth`: upper branch a residual; lower branch
  max-pool 2 -> residual -> next level (a residual at the bottom) ->
  residual -> nearest-neighbour upsampling x2; the branches are added;
* head of each stack: residual -> conv1x1-BN-ReLU -> conv1x1 to heatmaps;
  between stacks the next input is `input + conv1x1(features) +
  conv1x1(heatmaps)`.

The multi-person model of Associative Embedding (Newell, Huang and Deng,
NIPS 2017; princeton-vl/pose-ae-train's `models/posenet.py`) is the same
network with other blocks, built by the same function with `block="conv"`,
`width_increase=128` and `batch_norm=False` (`VARIANTS["associative_embedding"]`):

* conv block: conv3x3 (with bias) -> ReLU [-> BN, after the ReLU as in the
  reference's `Conv`, when `batch_norm`], in place of every residual;
* stem: conv7x7/2 -> ReLU -> conv 128 -> max-pool 2 -> conv 128 -> conv
  `filters` (the reference's `pre`, no BatchNorm);
* hourglass: each level down widens by `width_increase` (256, 384, 512, 640,
  768 at depth 4), and the block that comes back up narrows to the level's
  width again (the reference's `low3`, never with BatchNorm). The reference
  passes its `increase` to the outermost level only, the inner ones taking
  their default of 128; for its published model (128) the two agree, and here
  every level takes `width_increase`;
* head: two conv blocks (never with BatchNorm), then the 1x1 output; the
  merges between stacks are the single-person model's.

BatchNorm uses epsilon 1e-5 and momentum 0.9 (PyTorch's momentum 0.1), the
reference checkpoints' settings.

Inputs are RGB images, float32 in `[0, 1]`, `[batch, height, width, 3]`.
A model whose weights expect another normalisation (pytorch-pose's
checkpoints subtract the MPII mean colour) carries it inside, as the first
layer (`input_mean`), so that every model takes the same input.
Outputs are one heatmap tensor per stack, `[batch, height / 4, width / 4,
num_keypoints]`, named `heatmaps_stack0`, `heatmaps_stack1`, ...; the last one
is the final prediction and the others exist for intermediate supervision.
Keras returns a lone tensor, not a list of one, from a one-stack model;
`stack_outputs` gives a list in every case.
"""

from __future__ import annotations

import inspect
import numbers

import keras
from keras import layers

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# The stem downsamples by 2 (strided conv) and by 2 (max-pool).
STEM_STRIDE = 4
INPUT_CHANNELS = 3

# Named variants. The paper's models use 256 filters at 256x256 input; the
# small one trains on a CPU in minutes (see `bench/model_speed.py`).
VARIANTS = {
    "hourglass_2stack": dict(num_stacks=2, filters=256, depth=4, stem_filters=(64, 128), image_size=(256, 256)),
    "hourglass_8stack": dict(num_stacks=8, filters=256, depth=4, stem_filters=(64, 128), image_size=(256, 256)),
    "hourglass_small": dict(num_stacks=2, filters=64, depth=3, stem_filters=(32, 64), image_size=(128, 128)),
    # pose-ae-train's COCO model: 68 output channels, 17 joint heatmaps then 17 tag maps (and 34 unused).
    "associative_embedding": dict(num_stacks=4, filters=256, depth=4, stem_filters=(64, 128, 128),
                                  image_size=(512, 512), block="conv", width_increase=128, batch_norm=False),
    # Its blocks at CPU size, for the synthetic multi-person preset (`synthetic-people`).
    "associative_embedding_small": dict(num_stacks=2, filters=64, depth=3, stem_filters=(32, 64, 64),
                                        image_size=(128, 128), block="conv", width_increase=32, batch_norm=False),
}
BLOCKS = ("residual", "conv")


def _is_positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_even_width(value, argument: str) -> int:
    if not _is_positive_int(value) or value % 2:
        raise ValueError(
            f"{argument} must be a positive even integer (the bottleneck halves it), got {value!r}."
        )
    return int(value)


def _check_blocks(block, width_increase, batch_norm) -> tuple[str, int, bool]:
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}.")
    if isinstance(width_increase, bool) or not isinstance(width_increase, numbers.Integral) or width_increase < 0 \
            or width_increase % 2:
        raise ValueError(f"width_increase must be a non-negative even integer, got {width_increase!r}.")
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}.")
    return block, int(width_increase), batch_norm


def _check_arguments(num_stacks, num_keypoints, filters, image_size, depth, stem_filters, input_mean):
    if not _is_positive_int(num_stacks):
        raise ValueError(f"num_stacks must be a positive integer, got {num_stacks!r}.")
    if not _is_positive_int(num_keypoints):
        raise ValueError(f"num_keypoints must be a positive integer, got {num_keypoints!r}.")
    if not _is_positive_int(depth):
        raise ValueError(f"depth must be a positive integer, got {depth!r}.")
    filters = _check_even_width(filters, "filters")
    try:
        stem_filters = tuple(stem_filters)
    except TypeError:
        stem_filters = ()
    if len(stem_filters) not in (2, 3):
        raise ValueError(f"stem_filters must be two or three even widths like (64, 128) or (64, 128, 256), "
                         f"got {stem_filters!r}.")
    stem_filters = tuple(_check_even_width(w, "stem_filters") for w in stem_filters)
    if len(stem_filters) == 2:
        stem_filters = (*stem_filters, stem_filters[1])
    if input_mean is not None:
        try:
            input_mean = tuple(float(v) for v in input_mean)
        except (TypeError, ValueError):
            input_mean = ()
        if len(input_mean) != INPUT_CHANNELS:
            raise ValueError(f"input_mean must be {INPUT_CHANNELS} values (R, G, B in [0, 1]) or None, "
                             f"got {input_mean!r}.")
    try:
        image_size = tuple(image_size)
    except TypeError:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}.") from None
    if len(image_size) != 2 or not all(_is_positive_int(s) for s in image_size):
        raise ValueError(f"image_size must be (height, width) of positive integers, got {image_size!r}.")
    divisor = 2 ** (depth + 2)
    if any(s % divisor for s in image_size):
        suggestion = tuple(max(divisor, round(s / divisor) * divisor) for s in image_size)
        raise ValueError(
            f"image_size {image_size} must be divisible by 2^(depth + 2) = {divisor} for depth={depth} "
            f"(the stem halves it twice and every hourglass level once more); "
            f"use e.g. image_size={suggestion} or a smaller depth."
        )
    return (int(num_stacks), int(num_keypoints), filters, tuple(int(s) for s in image_size), int(depth), stem_filters,
            input_mean)


def _batch_norm(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _maybe_batch_norm(x, name, enabled: bool):
    return _batch_norm(name)(x) if enabled else x


class _Blocks:
    """What a builder's choices (`block`, `batch_norm`) make of each block of the network."""

    def __init__(self, block: str = "residual", batch_norm: bool = True):
        self.kind, self.batch_norm = block, batch_norm
        self.suffix = "res" if block == "residual" else "block"  # of the blocks' layer names

    def norm(self, x, name):
        return _maybe_batch_norm(x, name, self.batch_norm)

    def conv(self, x, filters, name, kernel_size=3, batch_norm=None):
        """conv (same padding, bias) -> ReLU [-> BN]: the reference's `Conv` of pose-ae-train; `batch_norm=False`
        leaves the BN out whatever the network's choice."""
        x = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        return _maybe_batch_norm(x, f"{name}_bn", self.batch_norm and batch_norm is not False)

    def block(self, x, filters, name, batch_norm=None):
        """The network's building block from `x`'s width to `filters`."""
        if self.kind == "conv":
            return self.conv(x, filters, name, batch_norm=batch_norm)
        return residual(x, filters, name, self.batch_norm)


def residual(x, filters, name, batch_norm: bool = True):
    """Pre-activation bottleneck residual module.

    Args:
        x: `[batch, height, width, in_filters]`.
        filters: output width (even).
        name: layer name prefix, e.g. `"stack0_hourglass_down1_res"`.
        batch_norm: False leaves out its three BatchNormalization layers.

    Returns:
        `[batch, height, width, filters]`.
    """
    in_filters = x.shape[-1]
    half = filters // 2
    y = _maybe_batch_norm(x, f"{name}_bn1", batch_norm)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(half, 1, name=f"{name}_conv1")(y)
    y = _maybe_batch_norm(y, f"{name}_bn2", batch_norm)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(half, 3, padding="same", name=f"{name}_conv2")(y)
    y = _maybe_batch_norm(y, f"{name}_bn3", batch_norm)
    y = layers.ReLU(name=f"{name}_relu3")(y)
    y = layers.Conv2D(filters, 1, name=f"{name}_conv3")(y)
    skip = x if in_filters == filters else layers.Conv2D(filters, 1, name=f"{name}_skip")(x)
    return layers.Add(name=f"{name}_add")([skip, y])


def hourglass(x, depth, filters, name, blocks: _Blocks | None = None, width_increase: int = 0):
    """One hourglass of `depth` levels, recursively: level `depth` is outermost.

    Args:
        x: `[batch, height, width, filters]`, height and width divisible by
            `2**depth`.
        depth: number of levels.
        filters: width of this level (every level's, when `width_increase` is 0).
        name: layer name prefix, e.g. `"stack0_hourglass"`.
        blocks: the block kind (default: residual modules with BatchNorm).
        width_increase: each level down is this much wider than the one above.

    Returns:
        `[batch, height, width, filters]`.
    """
    blocks = blocks or _Blocks()
    suffix = blocks.suffix
    inner = filters + width_increase
    up = blocks.block(x, filters, f"{name}_up{depth}_{suffix}")
    low = layers.MaxPooling2D(2, name=f"{name}_down{depth}_pool")(x)
    low = blocks.block(low, inner, f"{name}_down{depth}_{suffix}")
    if depth > 1:
        low = hourglass(low, depth - 1, inner, name, blocks, width_increase)
    else:
        low = blocks.block(low, inner, f"{name}_bottom_{suffix}")
    # The reference's conv hourglass never normalises the block coming back up (its `low3`).
    low = blocks.block(low, filters, f"{name}_up{depth}_low_{suffix}", batch_norm=False if blocks.kind == "conv" else None)
    low = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up{depth}_upsample")(low)
    return layers.Add(name=f"{name}_up{depth}_add")([up, low])


def build_stacked_hourglass(
    num_stacks: int,
    num_keypoints: int,
    filters: int = 256,
    image_size: tuple[int, int] = (256, 256),
    depth: int = 4,
    stem_filters: tuple[int, ...] = (64, 128),
    input_mean: tuple[float, float, float] | None = None,
    name: str = "stacked_hourglass",
    block: str = "residual",
    width_increase: int = 0,
    batch_norm: bool = True,
) -> keras.Model:
    """Builds an uncompiled Stacked Hourglass Network.

    Args:
        num_stacks: number of hourglasses; each one has its own output.
        num_keypoints: heatmap channels per output.
        filters: width of the hourglasses (even).
        image_size: input `(height, width)`, divisible by `2**(depth + 2)`.
        depth: levels per hourglass (4 in the paper: 64x64 down to 4x4).
        stem_filters: widths of the stem's 7x7 conv, first residual and
            second residual, `(64, 128, 128)` in the paper and princeton-vl's
            PyTorch port, `(64, 128, 256)` in bearpaw/pytorch-pose; two values
            `(a, b)` mean `(a, b, b)`. The third residual widens to `filters`.
        input_mean: RGB values subtracted from the `[0, 1]` input by the
            model's first layer (`input_normalization`), for weights trained
            on mean-subtracted images; None (the default) adds no layer.
        name: model name.
        block: `"residual"` (the paper's bottleneck residual modules) or
            `"conv"` (Associative Embedding's conv3x3-ReLU blocks, also in the
            stem and the head; see the module docstring).
        width_increase: extra width of each hourglass level over the level
            above (128 in Associative Embedding; 0: every level `filters` wide).
        batch_norm: False leaves out every BatchNormalization layer.

    Returns:
        A functional `keras.Model` mapping images `[batch, height, width, 3]`
        (float, RGB in `[0, 1]`) to a list of `num_stacks` heatmap tensors
        `[batch, height / 4, width / 4, num_keypoints]`, the output layers
        named `heatmaps_stack0`, `heatmaps_stack1`, ...

    Raises:
        ValueError: on an invalid argument, saying what was passed.
    """
    num_stacks, num_keypoints, filters, image_size, depth, stem_filters, input_mean = _check_arguments(
        num_stacks, num_keypoints, filters, image_size, depth, stem_filters, input_mean
    )
    block, width_increase, batch_norm = _check_blocks(block, width_increase, batch_norm)
    blocks = _Blocks(block, batch_norm)
    inputs = keras.Input(shape=(*image_size, INPUT_CHANNELS), name="images")

    x = inputs
    if input_mean is not None:
        # (x - mean) / sqrt(1): a built-in layer, so the model converts to TFLite as it is.
        x = layers.Normalization(mean=input_mean, variance=(1.0,) * INPUT_CHANNELS, name="input_normalization")(x)
    x = layers.ZeroPadding2D(3, name="stem_pad")(x)
    x = layers.Conv2D(stem_filters[0], 7, strides=2, name="stem_conv")(x)
    if block == "conv":  # the reference's Conv: ReLU, then BN
        x = layers.ReLU(name="stem_relu")(x)
        x = blocks.norm(x, "stem_bn")
    else:
        x = blocks.norm(x, "stem_bn")
        x = layers.ReLU(name="stem_relu")(x)
    suffix = blocks.suffix
    x = blocks.block(x, stem_filters[1], f"stem_{suffix}1")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    x = blocks.block(x, stem_filters[2], f"stem_{suffix}2")
    x = blocks.block(x, filters, f"stem_{suffix}3")

    outputs = []
    for stack in range(num_stacks):
        prefix = f"stack{stack}"
        features = hourglass(x, depth, filters, f"{prefix}_hourglass", blocks, width_increase)
        if block == "conv":  # two conv blocks, never normalised (pose-ae-train's `features`)
            features = blocks.conv(features, filters, f"{prefix}_head_block1", batch_norm=False)
            features = blocks.conv(features, filters, f"{prefix}_head_block2", batch_norm=False)
        else:
            features = residual(features, filters, f"{prefix}_head_res", batch_norm)
            features = layers.Conv2D(filters, 1, name=f"{prefix}_head_conv")(features)
            features = blocks.norm(features, f"{prefix}_head_bn")
            features = layers.ReLU(name=f"{prefix}_head_relu")(features)
        # float32 output so that the loss stays exact under mixed precision.
        heatmaps = layers.Conv2D(num_keypoints, 1, dtype="float32", name=f"heatmaps_stack{stack}")(features)
        outputs.append(heatmaps)
        if stack < num_stacks - 1:
            remap_features = layers.Conv2D(filters, 1, name=f"{prefix}_remap_features")(features)
            remap_heatmaps = layers.Conv2D(filters, 1, name=f"{prefix}_remap_heatmaps")(heatmaps)
            x = layers.Add(name=f"{prefix}_merge")([x, remap_features, remap_heatmaps])
    return keras.Model(inputs, outputs, name=name)


def build_variant(variant: str, num_keypoints: int, **overrides) -> keras.Model:
    """Builds a named variant from `VARIANTS`, with any argument overridden.

    Example: `build_variant("hourglass_8stack", 16)` is the paper's MPII model.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}.")
    allowed = set(inspect.signature(build_stacked_hourglass).parameters) - {"num_keypoints"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"Unknown override(s) {sorted(unknown)} for build_variant; expected some of {sorted(allowed)}.")
    kwargs = {**VARIANTS[variant], "name": variant, **overrides}
    return build_stacked_hourglass(num_keypoints=num_keypoints, **kwargs)


def stack_outputs(outputs) -> list:
    """The model's outputs as a list in stack order (a one-stack model returns a tensor)."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
