"""The published PyTorch hourglass checkpoints as Keras models, tensor for tensor.

Two reference implementations publish trained MPII models; both are this
project's network with different tensor names:

* princeton-vl/pytorch_stacked_hourglass (the paper's authors' port):
  `{'state_dict', 'optimizer', 'epoch'}`, keys `model.module.pre.*`,
  `model.module.hgs.*`, ...; stem widths `(64, 128, 128)`; input RGB in
  `[0, 1]`, as here. Its `Residual` creates a 1x1 `skip_layer` even where
  input and output widths are equal and never uses it there: those tensors
  are recognised and skipped.
* bearpaw/pytorch-pose (`hg` with one block per stack): `{'epoch', 'arch',
  'state_dict', 'best_acc', 'optimizer'}`, keys `module.conv1.*`,
  `module.hg.*`, ...; stem widths `(64, 128, 256)`; it was trained on
  images minus the MPII mean colour (`PYTORCH_POSE_MEAN`, no division by a
  standard deviation), which the imported model subtracts in its first layer.
  Checkpoints with more blocks per stack (`hg_s2_b2`) have no equivalent in
  the builder and are refused.

A third, the authors' multi-person Associative Embedding model, publishes a
trained COCO model:

* princeton-vl/pose-ae-train: `{'state_dict', 'optimizer', 'epoch'}`, keys
  `model.module.pre.*`, `model.module.features.<stack>.0.up1.*`, ...; the
  builder's `block="conv"` network (see `keras_hourglass.model`), its widths
  growing by `width_increase` at each hourglass level, without BatchNorm; 68
  output channels (17 joint heatmaps, 17 tags, 34 unused); input RGB in
  `[0, 1]`.

The number of stacks, joints, widths and the hourglass depth come from the
tensor shapes. Every tensor of the model must be matched by exactly one
tensor of the right shape, and every tensor of the file must be used (or be
one of the known unused ones): anything else is a `ValueError` naming the key
and both shapes, so a model is never returned with weights left at random.

Layouts: PyTorch convolution weights `[out, in, kh, kw]` become Keras kernels
`[kh, kw, in, out]`; BatchNorm `weight, bias, running_mean, running_var`
become `gamma, beta, moving_mean, moving_variance` (`num_batches_tracked`
is not needed). Both references use epsilon 1e-5, as the builder does.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from keras_hourglass.torch_files import load_torch_file

if TYPE_CHECKING:  # keras is imported where a model is built, so that reading a checkpoint stays light
    import keras

PRINCETON_VL = "princeton-vl"
PYTORCH_POSE = "pytorch-pose"
POSE_AE = "pose-ae-train"
FORMATS = (PRINCETON_VL, PYTORCH_POSE, POSE_AE)
# Our conv blocks inside an hourglass level -> pose-ae-train's attributes.
AE_HOURGLASS_PARTS = (
    (r"stack(\d+)_hourglass_up(\d+)_block", "up1"),
    (r"stack(\d+)_hourglass_down(\d+)_block", "low1"),
    (r"stack(\d+)_hourglass_up(\d+)_low_block", "low3"),
    (r"stack(\d+)_hourglass_bottom_block()", "low2"),
)
# MPII mean RGB in [0, 1] that pytorch-pose subtracts from its inputs: the float32 values of its
# data/mpii/mean.pth.tar ('mean'; the file's 'std' is not used by its color_normalize).
PYTORCH_POSE_MEAN = (0.440442830324173, 0.4440267086029053, 0.4326828420162201)
PREFIXES = ("model.module.", "module.", "model.")
BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
# Our residuals inside an hourglass level -> the reference's (princeton-vl attribute, pytorch-pose list index).
HOURGLASS_PARTS = (
    (r"stack(\d+)_hourglass_up(\d+)_res", {PRINCETON_VL: "up1", PYTORCH_POSE: "0.0"}),
    (r"stack(\d+)_hourglass_down(\d+)_res", {PRINCETON_VL: "low1", PYTORCH_POSE: "1.0"}),
    (r"stack(\d+)_hourglass_up(\d+)_low_res", {PRINCETON_VL: "low3", PYTORCH_POSE: "2.0"}),
    (r"stack(\d+)_hourglass_bottom_res()", {PRINCETON_VL: "low2", PYTORCH_POSE: "3.0"}),
)


@dataclasses.dataclass
class ReferenceCheckpoint:
    """A reference checkpoint's tensors and what they say about the network.

    Attributes:
        source: the file.
        format: `PRINCETON_VL` or `PYTORCH_POSE`.
        state_dict: `{key without the DataParallel prefix: array}`.
        num_stacks, num_keypoints, filters, depth: from the shapes.
        stem_filters: `(conv, residual1, residual2)` widths.
        input_mean: RGB mean the network expects subtracted, or None.
        block, width_increase, batch_norm: the builder's options for this network.
        info: what else the file holds (`epoch`, `best_acc`, `arch`).
        mapped_groups: after `build`, `(group, tensors, values)` per group.
    """

    source: str
    format: str
    state_dict: dict
    num_stacks: int
    num_keypoints: int
    filters: int
    depth: int
    stem_filters: tuple
    input_mean: tuple | None
    info: dict
    mapped_groups: list = dataclasses.field(default_factory=list)
    block: str = "residual"
    width_increase: int = 0
    batch_norm: bool = True

    def build(self, image_size=(256, 256), name: str | None = None) -> keras.Model:
        """Our builder's model with this checkpoint's weights (see `load_weights`); `mapped_groups` says what went where."""
        model = self.build_network(image_size, name)
        self.load_into(model)
        return model

    def build_network(self, image_size=(256, 256), name: str | None = None) -> keras.Model:
        """Our builder's network of this checkpoint's size, with its initial weights."""
        from keras_hourglass.model import build_stacked_hourglass

        return build_stacked_hourglass(self.num_stacks, self.num_keypoints, filters=self.filters,
                                       image_size=tuple(image_size), depth=self.depth,
                                       stem_filters=self.stem_filters, input_mean=self.input_mean,
                                       name=name or f"hourglass_{self.num_stacks}stack_{self.format}",
                                       block=self.block, width_increase=self.width_increase,
                                       batch_norm=self.batch_norm)

    def load_into(self, model: keras.Model) -> None:
        """Fills `model` (from `build_network`) with this checkpoint's weights; sets `mapped_groups`."""
        self.mapped_groups = load_weights(model, self)


def _strip_prefix(state_dict: dict) -> dict:
    keys = list(state_dict)
    for prefix in PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _shape(state_dict: dict, key: str, source: str, axis: int = 0) -> int:
    if key not in state_dict:
        raise ValueError(f"{source}: missing key {key!r}, needed to infer the network's size.")
    shape = np.shape(state_dict[key])
    if len(shape) <= axis:
        raise ValueError(f"{source}: {key} has shape {shape}; a weight of at least {axis + 1} dimensions was expected.")
    return int(shape[axis])


def _count(state_dict: dict, pattern: str) -> int:
    found = {m.group(1) for k in state_dict if (m := re.match(pattern, k))}
    return len(found)


def detect_format(state_dict: dict, source: str) -> str:
    if any(k.startswith("features.0.0.up1.") for k in state_dict):  # pre.* as princeton-vl, no hgs.*
        return POSE_AE
    if any(k.startswith("pre.0.") for k in state_dict) or any(k.startswith("hgs.") for k in state_dict):
        return PRINCETON_VL
    if any(k.startswith("conv1.") for k in state_dict) and any(k.startswith("hg.") for k in state_dict):
        return PYTORCH_POSE
    sample = ", ".join(repr(key)[:60] for key in list(state_dict)[:3])
    raise ValueError(f"{source}: not a princeton-vl, pytorch-pose or pose-ae-train hourglass state dict (first keys: {sample}); "
                     f"pass --format to force one of {', '.join(FORMATS)}.")


def _detected_or_none(state_dict: dict, source: str) -> str | None:
    try:
        return detect_format(state_dict, source)
    except ValueError:
        return None


def read_checkpoint(path: str, format: str | None = None) -> ReferenceCheckpoint:
    """Reads a reference checkpoint (`.pth`/`.pt`/`.pth.tar`, either torch format, or `.safetensors`).

    Args:
        path: the file.
        format: `PRINCETON_VL` or `PYTORCH_POSE`; detected from the key names when None.
    """
    path = os.fspath(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; expected one of {', '.join(FORMATS)}.")
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such checkpoint file.")
        import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy, so that bf16 files load (TensorFlow's dependency)
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            content = {"state_dict": load_file(path)}
        except SafetensorError as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error}).") from None
        except TypeError as error:  # a dtype NumPy has not: bfloat16
            raise ValueError(f"{path}: holds tensors of a type NumPy cannot read ({str(error)[:80]}); save them as "
                             "float32.") from None
    else:
        content = load_torch_file(path)
    if isinstance(content, dict) and "state_dict" in content:
        state_dict = content["state_dict"]
    elif isinstance(content, dict) and content and all(isinstance(v, np.ndarray) for v in content.values()):
        state_dict = content  # a bare state dict
    elif isinstance(content, dict):
        found = ", ".join(repr(key)[:40] for key in list(content)[:6])
        raise ValueError(f"{path}: no 'state_dict' in the checkpoint (found {found}).")
    else:
        raise ValueError(f"{path}: the checkpoint holds a {type(content).__name__}, not a dict with a 'state_dict'.")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: its state_dict is a {type(state_dict).__name__}, not a dict of tensors.")
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: a state_dict key is a {type(key).__name__}, not a tensor name.")
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: state_dict entry {key!r:.80} is a {type(value).__name__}, not a tensor.")
        if value.size == 0:  # no weights, but a shape the network's size would be read from
            raise ValueError(f"{path}: state_dict entry {key!r:.80} has shape {value.shape} and holds no values.")
    state_dict = _strip_prefix(state_dict)
    detected = detect_format(state_dict, path) if format is None else _detected_or_none(state_dict, path)
    if format is not None and detected not in (None, format):
        raise ValueError(f"{path}: --format {format} was given, but the key names are {detected}'s "
                         f"(first key {next(iter(state_dict))!r}); leave --format out to detect it.")
    format = format or detected
    info = {k: _plain(content[k]) for k in ("epoch", "arch", "best_acc") if isinstance(content, dict) and k in content}
    s = state_dict
    options = {}
    if format == POSE_AE:
        if any(".bn." in k for k in s):
            raise ValueError(f"{path}: a pose-ae-train network with BatchNorm (bn=True); the published model and "
                             "the one imported here have none.")
        num_stacks, depth, stem, filters, num_keypoints = _authors_layout(s, path, "outs", "features", "conv")
        widths = [_shape(s, "features.0.0" + ".low2" * level + ".low1.conv.weight", path) for level in range(depth)]
        growth = {b - a for a, b in zip([filters, *widths], widths)}
        if len(growth) != 1:
            raise ValueError(f"{path}: its hourglass widths {[filters, *widths]} do not grow by the same step at "
                             "every level; the builder's width_increase cannot make that network.")
        options = dict(block="conv", width_increase=growth.pop(), batch_norm=False)
        input_mean = None
    elif format == PRINCETON_VL:
        num_stacks, depth, stem, filters, num_keypoints = _authors_layout(s, path, "hgs", "hgs", "conv3.conv")
        input_mean = None
    else:
        blocks = _count(s, r"hg\.0\.hg\.0\.0\.(\d+)\.")
        if blocks != 1:
            raise ValueError(f"{path}: a pytorch-pose model with {blocks} residual blocks per stack; only the "
                             "one-block 'hg' models (hg_s2_b1, hg_s8_b1) have an equivalent in this builder.")
        num_stacks = _count(s, r"hg\.(\d+)\.")
        depth = _count(s, r"hg\.0\.hg\.(\d+)\.")
        stem = (_shape(s, "conv1.weight", path), _shape(s, "layer1.0.conv3.weight", path),
                _shape(s, "layer2.0.conv3.weight", path))
        filters = _shape(s, "layer3.0.conv3.weight", path)
        num_keypoints = _shape(s, "score.0.weight", path)
        input_mean = PYTORCH_POSE_MEAN
    if num_stacks < 1 or depth < 1:
        raise ValueError(f"{path}: found {num_stacks} stacks of depth {depth} in the {format} key names; "
                         "the file is not a complete hourglass network.")
    return ReferenceCheckpoint(path, format, state_dict, num_stacks, num_keypoints, filters, depth, stem,
                               input_mean, info, **options)


def _authors_layout(s: dict, path: str, stacks: str, hourglasses: str, block_conv: str) -> tuple:
    """`(num_stacks, depth, stem widths, filters, output channels)` of the hourglass authors' two layouts
    (princeton-vl's and pose-ae-train's): a `pre.*` stem, hourglasses nested through `low2`, `outs.*`.

    Args:
        stacks: the module list with one entry per stack (`hgs`, `outs`).
        hourglasses: the module list whose entries start with the hourglass (`<name>.<stack>.0`).
        block_conv: the convolution inside a stem block (`conv3.conv` of a residual, `conv` of a conv block).
    """
    num_stacks = _count(s, rf"{stacks}\.(\d+)\.")
    nested = re.compile(rf"{hourglasses}\.0\.0\.(low2\.)*up1\.")
    depth = 1 + max((k.count("low2.") for k in s if nested.match(k)), default=-1)
    stem = (_shape(s, "pre.0.conv.weight", path), _shape(s, f"pre.1.{block_conv}.weight", path),
            _shape(s, f"pre.3.{block_conv}.weight", path))
    return num_stacks, depth, stem, _shape(s, f"pre.4.{block_conv}.weight", path), _shape(s, "outs.0.conv.weight", path)


def _plain(value):
    """An `epoch`/`best_acc`/`arch` entry as a Python number or a short string (pytorch-pose stores a 0-d tensor);
    anything else is described by its type only (a hostile value's text can be huge)."""
    if isinstance(value, np.ndarray) and value.size == 1 or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):  # compared, never turned into text: a 20,000-digit number stays a number
        return value if abs(value) < 10 ** 18 else "<a very large int>"
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)  # JSON has no NaN or inf
    if isinstance(value, str):
        return value[:200]
    return f"<a {type(value).__name__}>"


# Our layer names -> the reference's module paths ------------------------------


def _residual_path(name: str, format: str, depth: int) -> str | None:
    """The reference module of one of our residual prefixes, e.g. `stack1_hourglass_down3_res`."""
    if m := re.fullmatch(r"stem_res([123])", name):
        return {PRINCETON_VL: {"1": "pre.1", "2": "pre.3", "3": "pre.4"},
                PYTORCH_POSE: {"1": "layer1.0", "2": "layer2.0", "3": "layer3.0"}}[format][m.group(1)]
    if m := re.fullmatch(r"stack(\d+)_head_res", name):
        return f"features.{m.group(1)}.0" if format == PRINCETON_VL else f"res.{m.group(1)}.0"
    for pattern, part in HOURGLASS_PARTS:
        if m := re.fullmatch(pattern, name):
            stack, level = m.group(1), int(m.group(2) or 1)
            if format == PRINCETON_VL:  # nested modules: level d is `.low2` (depth - d) times inside
                return f"hgs.{stack}.0" + ".low2" * (depth - level) + "." + part[PRINCETON_VL]
            return f"hg.{stack}.hg.{level - 1}.{part[PYTORCH_POSE]}"  # a list per level, innermost first
    return None


def _pose_ae_module(layer_name: str, depth: int) -> str:
    """pose-ae-train's module for one of our layers of the `block="conv"` network."""
    if m := re.fullmatch(r"stem_block([123])_conv", layer_name):
        return {"1": "pre.1", "2": "pre.3", "3": "pre.4"}[m.group(1)] + ".conv"
    if m := re.fullmatch(r"stack(\d+)_head_block([12])_conv", layer_name):
        return f"features.{m.group(1)}.{m.group(2)}.conv"
    for pattern, part in AE_HOURGLASS_PARTS:
        if m := re.fullmatch(pattern + "_conv", layer_name):
            stack, level = m.group(1), int(m.group(2) or 1)
            return f"features.{stack}.0" + ".low2" * (depth - level) + f".{part}.conv"
    m = re.fullmatch(r"stack(\d+)_(remap_features|remap_heatmaps)|heatmaps_stack(\d+)|stem_conv", layer_name)
    if not m:
        raise ValueError(f"no {POSE_AE} tensor corresponds to the layer {layer_name!r}.")
    if layer_name == "stem_conv":
        return "pre.0.conv"
    if m.group(3):
        return f"outs.{m.group(3)}.conv"
    return f"{'merge_features' if m.group(2) == 'remap_features' else 'merge_preds'}.{m.group(1)}.conv.conv"


def torch_module(layer_name: str, format: str, depth: int) -> str:
    """The reference module path whose tensors fill our layer `layer_name`."""
    if format == POSE_AE:
        return _pose_ae_module(layer_name, depth)
    if m := re.fullmatch(r"(.+)_(bn1|conv1|bn2|conv2|bn3|conv3|skip)", layer_name):
        residual = _residual_path(m.group(1), format, depth)
        if residual is not None:
            sub = m.group(2)
            if format == PRINCETON_VL:
                return f"{residual}.{'skip_layer' if sub == 'skip' else sub}" + (".conv" if "conv" in sub or sub == "skip"
                                                                                 else "")
            return f"{residual}.{'downsample.0' if sub == 'skip' else sub}"
    m = re.fullmatch(r"stack(\d+)_(head_conv|head_bn|remap_features|remap_heatmaps)|heatmaps_stack(\d+)|stem_(conv|bn)",
                     layer_name)
    if not m:
        raise ValueError(f"no {format} tensor corresponds to the layer {layer_name!r}.")
    stack = m.group(1) or m.group(3)
    part = m.group(2) or ("heatmaps" if m.group(3) else f"stem_{m.group(4)}")
    table = {
        PRINCETON_VL: {"stem_conv": "pre.0.conv", "stem_bn": "pre.0.bn", "head_conv": "features.{}.1.conv",
                       "head_bn": "features.{}.1.bn", "heatmaps": "outs.{}.conv",
                       "remap_features": "merge_features.{}.conv.conv", "remap_heatmaps": "merge_preds.{}.conv.conv"},
        PYTORCH_POSE: {"stem_conv": "conv1", "stem_bn": "bn1", "head_conv": "fc.{}.0", "head_bn": "fc.{}.1",
                       "heatmaps": "score.{}", "remap_features": "fc_.{}", "remap_heatmaps": "score_.{}"},
    }[format]
    return table[part].format(stack)


def _is_unused(key: str, checkpoint: ReferenceCheckpoint) -> bool:
    """Tensors the reference creates but never uses: princeton-vl's skip convs of equal-width residuals."""
    if key.endswith(".num_batches_tracked"):
        return True
    if checkpoint.format != PRINCETON_VL or ".skip_layer." not in key:
        return False
    weight = checkpoint.state_dict.get(key.rsplit(".", 1)[0] + ".weight")
    return weight is not None and weight.ndim == 4 and weight.shape[0] == weight.shape[1]


def float32_weights(value: np.ndarray, key: str, source: str) -> np.ndarray:
    """A weight tensor as float32, refusing what float32 would change: integer types, non-finite values,
    values beyond float32's range."""
    if value.dtype.name == "bfloat16":  # ml_dtypes' type: exact in float32
        value = value.astype(np.float32)
    if value.dtype.kind != "f":
        raise ValueError(f"{source}: {key} holds {value.dtype} values; weights are floating-point numbers.")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{source}: {key} holds {int(np.size(value) - np.isfinite(value).sum())} non-finite "
                         "values (inf or NaN); the file is damaged or not a trained model.")
    if value.size and float(np.abs(value).max()) > float(np.finfo(np.float32).max):
        raise ValueError(f"{source}: {key} holds values beyond float32's range (largest magnitude "
                         f"{float(np.abs(value).max()):.3g}); the file is damaged or not a trained model.")
    return np.asarray(value, np.float32)


def load_weights(model: keras.Model, checkpoint: ReferenceCheckpoint) -> list[tuple[str, int, int]]:
    """Fills every weight of `model` from `checkpoint`; returns `(group, tensors, parameters)` per group.

    Groups are the stem, each stack's hourglass, each stack's head (and the
    merge into the next stack). Raises `ValueError` on a missing key, a
    shape mismatch or a tensor of the file that nothing uses.
    """
    import keras

    state, source = checkpoint.state_dict, checkpoint.source
    used, groups = set(), defaultdict(lambda: [0, 0])
    for layer in model.layers:
        if not layer.weights or isinstance(layer, keras.layers.Normalization):
            continue
        module = torch_module(layer.name, checkpoint.format, checkpoint.depth)
        if isinstance(layer, keras.layers.BatchNormalization):
            keys = [f"{module}.{t}" for t in BATCH_NORM_TENSORS]
            expected = [tuple(v.shape) for v in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)]
            convert = [lambda a: a] * 4
        elif isinstance(layer, keras.layers.Conv2D):
            keys = [f"{module}.weight", f"{module}.bias"]
            kh, kw, cin, cout = layer.kernel.shape
            expected = [(cout, cin, kh, kw), (cout,)]
            convert = [lambda a: np.transpose(a, (2, 3, 1, 0)), lambda a: a]
        else:
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no reference counterpart.")
        values = []
        for key, shape, fn in zip(keys, expected, convert):
            if key not in state:
                raise ValueError(f"{source}: missing key {key!r} for layer {layer.name} (expected shape {shape}).")
            if tuple(state[key].shape) != shape:
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}, but layer {layer.name} needs "
                                 f"{shape}.")
            values.append(fn(float32_weights(state[key], key, source)))
            used.add(key)
        layer.set_weights(values)
        group = _group(layer.name)
        groups[group][0] += len(values)
        groups[group][1] += sum(v.size for v in values)
    unexpected = sorted(k for k in state if k not in used and not _is_unused(k, checkpoint))
    if unexpected:
        key = unexpected[0]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"{source}: unexpected key {key!r} of shape {tuple(state[key].shape)}{more}: nothing in the "
                         f"{checkpoint.format} network of {checkpoint.num_stacks} stacks uses it.")
    return [(name, count, size) for name, (count, size) in groups.items()]


def _group(layer_name: str) -> str:
    if layer_name.startswith("stem"):
        return "stem"
    m = re.match(r"stack(\d+)_hourglass|stack(\d+)_|heatmaps_stack(\d+)", layer_name)
    if m and m.group(1):
        return f"stack{m.group(1)} hourglass"
    return f"stack{m.group(2) or m.group(3)} head and merge"


def unused_keys(checkpoint: ReferenceCheckpoint) -> list[str]:
    """The keys skipped on purpose (never-used convolutions, BatchNorm step counters)."""
    return sorted(k for k in checkpoint.state_dict if _is_unused(k, checkpoint))


def reference_state_dict(model: keras.Model, format: str, depth: int) -> dict:
    """`model`'s weights under the reference's key names and PyTorch layouts: the inverse of `load_weights`.

    What a reference checkpoint of this network holds (without the step
    counters and never-used convolutions), e.g. to write a full-size file
    for the import benchmark (`bench.startup`) without downloading one.
    """
    import keras

    state = {}
    for layer in model.layers:
        if not layer.weights or isinstance(layer, keras.layers.Normalization):
            continue
        module = torch_module(layer.name, format, depth)
        if isinstance(layer, keras.layers.BatchNormalization):
            for tensor, variable in zip(BATCH_NORM_TENSORS, (layer.gamma, layer.beta, layer.moving_mean,
                                                             layer.moving_variance)):
                state[f"{module}.{tensor}"] = np.asarray(variable, np.float32)
        else:
            state[f"{module}.weight"] = np.ascontiguousarray(np.transpose(np.asarray(layer.kernel), (3, 2, 0, 1)))
            state[f"{module}.bias"] = np.asarray(layer.bias, np.float32)
    return state
