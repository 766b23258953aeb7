"""ONNX: write a detector to an .onnx file with everything needed to decode its outputs, and run such a file with
ONNX Runtime behind the detector's own interface.

The file holds the network only, from uint8 pixels to raw head logits (normalisation inside, as in the torch model):

    input   images              (B, 3, H, W) uint8 RGB 0..255, letterboxed to img_size; B is dynamic
    outputs task<k>_stride<s>   (B, A, H/s, W/s, 5 + C_k) raw logits (tx, ty, tw, th, objectness, classes), for every
                                task k and stride s in 8, 16, 32 (the layout of yolo/models/head.py)

Decoding and NMS stay in yolo/postprocess.py: `OnnxModel` returns the same list of tensors as `Detector` and carries
the same `.decoding`, read from the file's metadata (metadata_props, all JSON strings under METADATA_KEYS), so the
evaluator and predict take either. Exported with nms (export_nms), the file holds them too and has one (N, 7)
detection output per task instead (yolo/models/onnx_nms.py); its metadata's "nms" says so (null without). Exported
dynamic (export_dynamic), H and W may be any multiples of 32. Export uses the TorchScript-based exporter
(docs/export.md says why).
"""
import json
import os
import warnings

import numpy as np
import torch
from torch import nn

from .head import BoxDecoding
from .onnx_nms import DETECTION_COLUMNS, NMS_SETTINGS, EndToEndDetector, detection_output_names

OPSET = 17
FORMAT_NAME, FORMAT_VERSION = "yolo-detector-onnx", 3  # bump the version when the input, outputs or metadata
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"             # change meaning (2: source with its fingerprint, export;
READABLE = (f"{FORMAT_NAME}/2", FORMAT)                # 3: NMS inside or a dynamic size possible, "nms" key)
DECODING_FORMULA = ("centre = (cell + 0.5 + (2 * sigmoid(txy) - 1) * reach) * stride; "
                    "size = anchor * (2 * sigmoid(twh)) ** 2; reach null = the grid's largest side in cells; "
                    "score = sigmoid(objectness) * sigmoid(class)")
METADATA_KEYS = ("format", "decoding", "model_config", "num_tasks", "task_names", "class_names", "outputs", "input",
                 "source", "export", "nms")
OPTIONAL_KEYS = ("source", "nms")  # "nms": null for a file without NMS inside, absent from format 2


def output_names(num_tasks, strides):
    return [f"task{k}_stride{s}" for k in range(num_tasks) for s in strides]


class AllTaskOutputs(nn.Module):
    """The detector as export sees it: images -> a flat tuple of every task's per-scale outputs, in output_names
    order (an exporter needs tensors out, not nested lists)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        return tuple(out for task_outputs in self.detector(images, task=None) for out in task_outputs)


def export_onnx(model, path, example, model_config, task_names, source=None, options=None, nms=None, dynamic=False):
    """Write `model` (a Detector in eval mode, fused or not) to `path`. example: a (B, 3, H, W) uint8 batch fixing
    H and W unless dynamic; model_config: the checkpoint's MODEL_FIELDS as a dict; source: the checkpoint it comes
    from, as {"checkpoint": resolved path, "sha256": ..., "bytes": ...}; options: how it was made ({"fuse": ...,
    "opset": ...}); nms: None (raw outputs) or {"conf_thres", "nms_iou", "max_det", "pre_nms_topk"} for the
    post-processing inside the graph (onnx_nms.py). Returns the metadata written."""
    import onnx

    if nms:
        graph, names = EndToEndDetector(model, **nms).eval(), detection_output_names(model.num_tasks)
        axes = {name: {0: "detections"} for name in names}
    else:
        graph, names = AllTaskOutputs(model).eval(), output_names(model.num_tasks, model.decoding.strides)
        axes = {name: {0: "batch", **({2: f"height/{s}", 3: f"width/{s}"} if dynamic else {})}
                for name, s in zip(names, list(model.decoding.strides) * model.num_tasks)}
    axes["images"] = {0: "batch", **({2: "height", 3: "width"} if dynamic else {})}
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # onnx_nms: shapes traced as values, on purpose
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # a note on onnx_nms's slices, harmless
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["images"],
                          output_names=names, dynamic_axes=axes)
    meta = metadata(model, example, model_config, task_names, names, source, options, nms, dynamic)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return meta


def metadata(model, example, model_config, task_names, names, source, options, nms=None, dynamic=False):
    """metadata_props of the file (METADATA_KEYS), every value a JSON string."""
    decoding = model.decoding
    heads = model.heads
    if nms:
        outputs = [{"name": name, "task": k, "columns": list(DETECTION_COLUMNS), "num_classes": heads[k].num_classes}
                   for k, name in enumerate(names)]
        nms = {**nms, "multi_label": True, "columns": list(DETECTION_COLUMNS),
               "boxes": "x1, y1, x2, y2 in network-input pixels (the letterboxed image); rows of each image "
                        "together, best first; class indexes the task's class_names"}
    else:
        outputs = [{"name": name, "task": k, "stride": s, "num_anchors": heads[k].num_anchors,
                    "num_classes": heads[k].num_classes} for name, (k, s) in
                   zip(names, [(k, s) for k in range(model.num_tasks) for s in decoding.strides])]
    size = ["height", "width"] if dynamic else list(example.shape[2:])
    class_names = ([t.get("class_names", model_config["class_names"]) for t in model_config["tasks"]]
                   if model_config.get("tasks") else [model_config["class_names"]])
    values = {
        "format": FORMAT,
        "decoding": {"anchors": decoding.anchors.tolist(), "strides": list(decoding.strides), "reach": decoding.reach,
                     "label_assignment": model_config["label_assignment"], "formula": DECODING_FORMULA},
        "model_config": model_config,
        "num_tasks": model.num_tasks,
        "task_names": list(task_names),
        "class_names": class_names,
        "outputs": outputs,
        "input": {"name": "images", "shape": ["batch", 3, *size], "dtype": "uint8",
                  "layout": "RGB 0..255, letterboxed: longest side to img_size, padded with the ImageNet mean grey; "
                            "normalisation is inside the model" + ("; any height and width that are multiples of "
                                                                   "32" if dynamic else "")},
        "source": source or {},
        "export": options or {"opset": OPSET},
        "nms": nms or None,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def read_metadata(path):
    """The decoded metadata of an .onnx file written by export_onnx. Anything else is one ValueError naming the file,
    what it is and what to do: not an ONNX model at all (empty, cut off, random bytes), a foreign ONNX model (no
    format of this project), a file of another format version, or metadata that lacks a key or does not parse."""
    props = read_props(path)
    found = loads_or_none(props.get("format"))
    if not (isinstance(found, str) and found.startswith(f"{FORMAT_NAME}/")):
        raise ValueError(f"{path} is an ONNX model not written by `python main.py --task export` (its metadata has "
                         f"no '{FORMAT_NAME}' format; or the file is cut off), so its outputs cannot be decoded here; "
                         f"export a checkpoint of this project: python main.py --task export --ckpt_path CHECKPOINT")
    if found not in READABLE:
        version = found.split("/", 1)[1]
        newer = version.isdigit() and int(version) > FORMAT_VERSION
        again = f"python main.py --task export --ckpt_path {source_checkpoint(props) or 'CHECKPOINT'}"
        raise ValueError(f"{path} is an export of format {found}, this version of the project reads "
                         f"{' and '.join(READABLE)}: "
                         + (f"update the project (a newer version wrote it), or export again with this one: {again}"
                            if newer else f"export its checkpoint again: {again}"))
    meta = {}
    for key in METADATA_KEYS:
        meta[key] = loads_or_none(props.get(key))
        if meta[key] is None and key not in OPTIONAL_KEYS:
            raise ValueError(f"{path}: metadata {key!r} of format {found} is missing or not JSON; export its "
                             f"checkpoint again: python main.py --task export --ckpt_path "
                             f"{source_checkpoint(props) or 'CHECKPOINT'}")
    return meta


def read_props(path):
    """metadata_props of an ONNX file as {key: text}; a file that does not parse as an ONNX model is a ValueError."""
    import onnx

    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty, not an ONNX model; export the checkpoint again")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError for random bytes or a cut-off file, and whatever onnx adds
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot read {path} as an ONNX model ({reason}): a damaged or cut-off file? export the "
                         f"checkpoint again") from None
    return {p.key: p.value for p in proto.metadata_props}


def loads_or_none(text):
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def source_checkpoint(props):
    """The checkpoint path the metadata names (a plain string in format 1, a dict since), or None."""
    source = loads_or_none(props.get("source"))
    return source.get("checkpoint") if isinstance(source, dict) else source or None


def session_options(threads=None, level="all"):
    """ONNX Runtime options: every graph optimisation by default (level "all": constant folding, conv + activation
    fusion, and the layout changes that made it about 2x faster here than "basic", bench/predict.py), and as many
    intra-op threads as torch uses, so a comparison of the two is fair."""
    import onnxruntime as ort

    level_of = ort.GraphOptimizationLevel
    levels = {"basic": level_of.ORT_ENABLE_BASIC, "extended": level_of.ORT_ENABLE_EXTENDED,
              "all": level_of.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return options


class OnnxModel(nn.Module):
    """An exported .onnx file run by ONNX Runtime (CPU), called like Detector: forward(images, task=0) returns task's
    [(B, A, H/8, W/8, 5 + C), (.../16), (.../32)] logits as CPU tensors; task=None returns one such list per task.
    `.decoding`, `.num_tasks`, `.config` (the model's MODEL_FIELDS) come from the file's metadata.
    A file with NMS inside (`.end_to_end`, its settings in `.nms`) returns task's (N, 7) detections instead
    (onnx_nms.py; postprocess.split_detections makes them per-image tuples), a list of them for task=None."""

    def __init__(self, path, threads=None, level="all"):
        super().__init__()
        import onnxruntime as ort

        self.path = str(path)
        self.meta = read_metadata(path)
        try:
            self.session = ort.InferenceSession(self.path, session_options(threads, level),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own exception types (InvalidGraph, Fail ...): a graph damaged after export
            raise ValueError(f"ONNX Runtime cannot load {path} ({str(e).splitlines()[0] if str(e) else e!r}); "
                             f"export the checkpoint again") from None
        try:
            self.config = dict(self.meta["model_config"])
            self.num_tasks = int(self.meta["num_tasks"])
            self.input_hw = tuple(self.meta["input"]["shape"][2:])  # ("height", "width") when dynamic
            self.names = [o["name"] for o in self.meta["outputs"]]
            self.nms = self.meta.get("nms") or None
            missing = [key for key in NMS_SETTINGS if key not in self.nms] if self.nms else []
            if missing:
                raise ValueError(f"its 'nms' settings lack {missing}")
            self.end_to_end = self.nms is not None
            self.dynamic = not all(isinstance(side, int) for side in self.input_hw)
            d = self.meta["decoding"]
            self.register_buffer("anchors", torch.tensor(d["anchors"], dtype=torch.float32), persistent=False)
            self.strides, self.reach = tuple(d["strides"]), d["reach"]
        except (KeyError, TypeError, ValueError, IndexError) as e:  # well-formed JSON of the wrong shape
            raise ValueError(f"{path}: its metadata does not describe the model ({type(e).__name__}: {e}); export "
                             f"the checkpoint again") from None

    @property
    def decoding(self):
        return BoxDecoding(self.anchors, self.strides, self.reach)

    def forward(self, images, task=0):
        if isinstance(images, (list, tuple)):
            return [self.forward(batch, t) for t, batch in enumerate(images)]
        if self.dynamic and any(side % 32 for side in images.shape[2:]):
            raise ValueError(f"{self.path} takes images whose height and width are multiples of 32, got "
                             f"{tuple(images.shape)}")
        if not self.dynamic and tuple(images.shape[2:]) != self.input_hw:
            raise ValueError(f"{self.path} takes (B, 3, {self.input_hw[0]}, {self.input_hw[1]}) images, got "
                             f"{tuple(images.shape)}: set img_size to the exported size, or export with "
                             f"--export_dynamic true")
        if images.dtype != torch.uint8:  # the file takes uint8; float 0..255 input is rounded to it
            images = images.round().clamp(0, 255).to(torch.uint8)
        per = 1 if self.end_to_end else len(self.strides)  # outputs of one task
        wanted = self.names if task is None else self.names[per * task:per * (task + 1)]
        arrays = self.session.run(wanted, {"images": np.ascontiguousarray(images.cpu().numpy())})
        outputs = [torch.from_numpy(a) for a in arrays]
        per_task = [outputs[i] if self.end_to_end else outputs[i:i + per] for i in range(0, len(outputs), per)]
        return per_task if task is None else per_task[0]
