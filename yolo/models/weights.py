"""Pretrained backbone weights from local files (nothing is ever downloaded), and partial checkpoint loading.

Formats:
  * ResNet / MobileNetV3: a torchvision state_dict saved with torch.save (e.g. resnet18-f37072fd.pth). Our backbones
    keep torchvision's parameter names, so keys match one to one; the classifier (fc.*, classifier.*) is ignored.
  * Darknet-53: the original darknet binary (darknet53.conv.74): header int32 major, minor, revision, then `seen`
    (int64 for format versions >= 0.2, else int32), then for every conv in forward order: BN bias, BN weight,
    running mean, running var, conv weights (out, in, k, k), all little-endian float32.

Width < 1: each tensor is initialised from the leading slice of the pretrained one, `pretrained[:out, :in, ...]`.
That is a sensible start because the first `out` filters of a trained layer, reading only the first `in` input
channels, are themselves a trained (if truncated) smaller layer: every slim layer receives exactly the channels its
sliced filters were trained to read, since the previous layer was sliced the same way. BN weight/bias/mean/var are
sliced with the same channel indices, so each kept channel is still normalised with its own statistics. The
dropped input channels make the pre-BN activations drift, which BN re-estimates within a few hundred steps of
fine-tuning; it is far better than a random init, not a substitute for training the slim network.
"""

from pathlib import Path

import numpy as np
import torch
from loguru import logger
from torch import nn

from yolo.models.backbones import ConvBNLeaky, darknet53_conv_shapes

CLASSIFIER_PREFIXES = ("fc.", "classifier.")  # torchvision's ImageNet classifiers, not part of our backbones


def load_backbone_weights(backbone: nn.Module, name: str, path: str) -> None:
    """Initialise `backbone` (built by build_backbone(name, width)) in place from the local file `path`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if name == "darknet53":
        _load_darknet(backbone, path)
    else:
        _load_torchvision(backbone, path)


def load_matching_state(model: nn.Module, state_dict: dict) -> tuple[list[str], list[str]]:
    """Load every tensor whose name and shape match the model; report the rest instead of failing.

    Used to fine-tune from a checkpoint whose heads predict another number of classes. Returns
    (loaded_names, skipped) where skipped holds "name: reason" for checkpoint tensors that were not loaded and
    for model tensors the checkpoint lacks (these keep their initial values).
    """
    own = model.state_dict()
    loaded, skipped, matching = [], [], {}
    for key, value in state_dict.items():
        if key not in own:
            skipped.append(f"{key}: not in model")
        elif not isinstance(value, torch.Tensor):
            skipped.append(f"{key}: checkpoint value is a {type(value).__name__}, not a tensor")
        elif value.shape != own[key].shape:
            skipped.append(f"{key}: shape {tuple(value.shape)} in checkpoint vs {tuple(own[key].shape)} in model")
        else:
            matching[key] = value
            loaded.append(key)
    skipped += [f"{key}: not in checkpoint, kept initial value" for key in own if key not in state_dict]
    model.load_state_dict(matching, strict=False)
    return loaded, skipped


def load_fitting_state(model: nn.Module, state_dict: dict, source: str) -> tuple[list[str], list[str]]:
    """load_matching_state of a file the user named (config init_ckpt), said loudly: a WARNING with the counts and
    the first names when anything is skipped, and a ValueError naming `source` when none of its weights fits (a
    file of another model: training would silently start from scratch)."""
    loaded, skipped = load_matching_state(model, state_dict)
    kernels = {name for name, p in model.named_parameters() if p.dim() > 1}  # conv weights: what a model learned
    if not kernels.intersection(loaded):  # buffers (BN counters, anchors) and head biases fit any width: no start
        raise ValueError(f"{source}: none of its weights fits this model ({len(state_dict)} tensors, e.g. "
                         f"{'; '.join(skipped[:2])}); it is a checkpoint of another model (backbone, width, "
                         f"branching ...): start from a checkpoint of this config's model, or leave init_ckpt out")
    if skipped:
        logger.warning(f"{source}: {len(loaded)} tensors loaded, {len(skipped)} skipped (those layers start from "
                       f"their initial values), e.g. {'; '.join(skipped[:3])}")
    return loaded, skipped


def write_darknet_weights(backbone: nn.Module, path: str, version: tuple[int, int, int] = (0, 2, 0)) -> None:
    """Write a Darknet-53 backbone in the darknet binary format (for tests, and to share converted weights)."""
    convs = _darknet_convs(backbone, path)
    major, minor, revision = version
    with open(path, "wb") as f:
        np.array(version, dtype="<i4").tofile(f)
        np.array([0], dtype="<i8" if _seen_is_int64(major, minor) else "<i4").tofile(f)  # images seen
        for layer in convs:
            bn = layer.bn
            for tensor in (bn.bias, bn.weight, bn.running_mean, bn.running_var, layer.conv.weight):
                tensor.detach().cpu().numpy().astype("<f4").tofile(f)


# ----------------------------------------------------------------------------------------------------------------


def _seen_is_int64(major: int, minor: int) -> bool:
    # darknet's own rule (parser.c): files from format 0.2 on store the images-seen counter as 64 bits
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def _darknet_convs(backbone: nn.Module, path: str) -> list[ConvBNLeaky]:
    convs = [m for m in backbone.modules() if isinstance(m, ConvBNLeaky)]  # registration order = forward order
    if len(convs) != len(darknet53_conv_shapes()):
        raise ValueError(f"{path}: darknet weights need a Darknet-53 backbone ({len(darknet53_conv_shapes())} "
                         f"conv layers), got {type(backbone).__name__} with {len(convs)}")
    return convs


def _num_floats(shapes) -> int:
    return sum(4 * c_out + c_out * c_in * k * k for c_in, c_out, k in shapes)  # 4 BN vectors + conv weights


def _load_darknet(backbone: nn.Module, path: str) -> None:
    convs = _darknet_convs(backbone, path)
    data = Path(path).read_bytes()
    if len(data) < 12:
        raise ValueError(f"{path}: darknet weights need a 12-byte version header, file has {len(data)} bytes")
    major, minor, _ = np.frombuffer(data, dtype="<i4", count=3)
    header_bytes = 12 + (8 if _seen_is_int64(int(major), int(minor)) else 4)
    floats = np.frombuffer(data, dtype="<f4", offset=header_bytes, count=max(0, len(data) - header_bytes) // 4)

    # The published file holds the full-width network; a file written from a slim model by write_darknet_weights
    # holds exactly that model's width. Extra floats after the 52 convs (e.g. yolov3.weights' detection layers)
    # are ignored, so the backbone part of a full darknet model file loads too.
    file_shapes = darknet53_conv_shapes(1.0)
    if len(floats) < _num_floats(file_shapes):
        own_shapes = darknet53_conv_shapes(backbone.width)
        if len(floats) != _num_floats(own_shapes):
            raise ValueError(f"{path}: too few float32 values for Darknet-53 (format {major}.{minor}): expected "
                             f"{_num_floats(file_shapes)} after the {header_bytes}-byte header, found {len(floats)}")
        file_shapes = own_shapes

    offset = 0

    def take(shape):  # next tensor of the given shape from the file
        nonlocal offset
        n = int(np.prod(shape))
        tensor = torch.from_numpy(floats[offset:offset + n].copy()).reshape(shape)
        offset += n
        return tensor

    with torch.no_grad():
        for i, (layer, (c_in, c_out, k)) in enumerate(zip(convs, file_shapes)):
            bn = layer.bn
            for target in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                target.copy_(_leading_slice(take((c_out,)), target.shape, f"{path}: conv {i} BN"))
            layer.conv.weight.copy_(_leading_slice(take((c_out, c_in, k, k)), layer.conv.weight.shape,
                                                   f"{path}: conv {i} weight"))


def _load_torchvision(backbone: nn.Module, path: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated zip, pickled code objects ...
        raise ValueError(f"{path}: not a readable torch state_dict file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (dict of name -> tensor), found {type(state).__name__}")

    own = backbone.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise ValueError(f"{path}: state_dict does not fit {type(backbone).__name__}: {len(missing)} of its "
                         f"{len(own)} tensors are missing, e.g. {missing[:3]}; found keys like {list(state)[:3]}")
    # anything beyond the classifier means another architecture (e.g. resnet34 keys are a superset of resnet18's)
    unexpected = [key for key in state if key not in own and not key.startswith(CLASSIFIER_PREFIXES)]
    if unexpected:
        raise ValueError(f"{path}: state_dict does not fit {type(backbone).__name__}: {len(unexpected)} unexpected "
                         f"tensors, e.g. {unexpected[:3]} (wrong architecture for this backbone name?)")
    sliced = {key: _leading_slice(state[key], target.shape, f"{path}: {key}") for key, target in own.items()}
    backbone.load_state_dict(sliced)


def _leading_slice(pretrained: torch.Tensor, shape: torch.Size, where: str) -> torch.Tensor:
    """pretrained[:out, :in, ...] for a (possibly slimmer) target; kernel sizes must match exactly."""
    shape = tuple(shape)
    fits = (pretrained.dim() == len(shape)
            and all(want <= have for want, have in zip(shape[:2], pretrained.shape[:2]))
            and shape[2:] == tuple(pretrained.shape[2:]))
    if not fits:
        raise ValueError(f"{where}: expected shape {shape} (or a larger one in the channel dims), "
                         f"found {tuple(pretrained.shape)}")
    return pretrained[tuple(slice(0, n) for n in shape)]
