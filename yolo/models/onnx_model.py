"""ONNX: write a detector to an .onnx file with everything needed to decode its outputs, and run such a file with
ONNX Runtime behind the detector's own interface.

The file holds the network only, from uint8 pixels to raw head logits (normalisation inside, as in the torch model):

    input   images              (B, 3, H, W) uint8 RGB 0..255, letterboxed to img_size; B is dynamic
    outputs task<k>_stride<s>   (B, A, H/s, W/s, 5 + C_k) raw logits (tx, ty, tw, th, objectness, classes), for every
                                task k and stride s in 8, 16, 32 (the layout of yolo/models/head.py)

Decoding and NMS stay in yolo/postprocess.py: `OnnxModel` returns the same list of tensors as `Detector` and carries
the same `.decoding`, read from the file's metadata (metadata_props, all JSON strings under METADATA_KEYS), so the
evaluator and predict take either. Export uses the TorchScript-based exporter (docs/export.md says why).
"""
import json
import warnings

import numpy as np
import torch
from torch import nn

from .head import BoxDecoding

OPSET = 17
FORMAT = "yolo-detector-onnx/1"  # bump when the input, outputs or metadata change meaning
DECODING_FORMULA = ("centre = (cell + 0.5 + (2 * sigmoid(txy) - 1) * reach) * stride; "
                    "size = anchor * (2 * sigmoid(twh)) ** 2; reach null = the grid's largest side in cells; "
                    "score = sigmoid(objectness) * sigmoid(class)")
METADATA_KEYS = ("format", "decoding", "model_config", "num_tasks", "task_names", "class_names", "outputs", "input",
                 "source")


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


def export_onnx(model, path, example, model_config, task_names, source=""):
    """Write `model` (a Detector in eval mode, fused or not) to `path`. example: a (B, 3, H, W) uint8 batch fixing
    H and W; model_config: the checkpoint's MODEL_FIELDS as a dict. Returns the metadata written."""
    import onnx

    decoding = model.decoding
    names = output_names(model.num_tasks, decoding.strides)
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(AllTaskOutputs(model).eval(), (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=names,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *names]})
    meta = metadata(model, example, model_config, task_names, names, source)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return meta


def metadata(model, example, model_config, task_names, names, source):
    """metadata_props of the file (METADATA_KEYS), every value a JSON string."""
    decoding = model.decoding
    heads = model.heads
    outputs = [{"name": name, "task": k, "stride": s, "num_anchors": heads[k].num_anchors,
                "num_classes": heads[k].num_classes} for name, (k, s) in
               zip(names, [(k, s) for k in range(model.num_tasks) for s in decoding.strides])]
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
        "input": {"name": "images", "shape": ["batch", 3, *example.shape[2:]], "dtype": "uint8",
                  "layout": "RGB 0..255, letterboxed: longest side to img_size, padded with the ImageNet mean grey; "
                            "normalisation is inside the model"},
        "source": source,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def read_metadata(path):
    """The decoded metadata of an .onnx file written by export_onnx. Raises ValueError naming the file otherwise."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if props.get("format") != json.dumps(FORMAT):
        raise ValueError(f"{path} was not written by `python main.py --task export` (metadata 'format' is "
                         f"{props.get('format')!r}, expected {FORMAT!r}): export the checkpoint again")
    return {key: json.loads(props[key]) for key in METADATA_KEYS}


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
    `.decoding`, `.num_tasks`, `.config` (the model's MODEL_FIELDS) come from the file's metadata."""

    def __init__(self, path, threads=None, level="all"):
        super().__init__()
        import onnxruntime as ort

        self.path = str(path)
        self.meta = read_metadata(path)
        self.session = ort.InferenceSession(self.path, session_options(threads, level),
                                            providers=["CPUExecutionProvider"])
        self.config = self.meta["model_config"]
        self.num_tasks = self.meta["num_tasks"]
        self.input_hw = tuple(self.meta["input"]["shape"][2:])
        self.names = [o["name"] for o in self.meta["outputs"]]
        d = self.meta["decoding"]
        self.register_buffer("anchors", torch.tensor(d["anchors"], dtype=torch.float32), persistent=False)
        self.strides, self.reach = tuple(d["strides"]), d["reach"]

    @property
    def decoding(self):
        return BoxDecoding(self.anchors, self.strides, self.reach)

    def forward(self, images, task=0):
        if isinstance(images, (list, tuple)):
            return [self.forward(batch, t) for t, batch in enumerate(images)]
        if tuple(images.shape[2:]) != self.input_hw:
            raise ValueError(f"{self.path} takes (B, 3, {self.input_hw[0]}, {self.input_hw[1]}) images, got "
                             f"{tuple(images.shape)}: set img_size to the exported size")
        if images.dtype != torch.uint8:  # the file takes uint8; float 0..255 input is rounded to it
            images = images.round().clamp(0, 255).to(torch.uint8)
        scales = len(self.strides)
        wanted = self.names if task is None else self.names[scales * task:scales * (task + 1)]
        arrays = self.session.run(wanted, {"images": np.ascontiguousarray(images.cpu().numpy())})
        outputs = [torch.from_numpy(a) for a in arrays]
        per_task = [outputs[i:i + scales] for i in range(0, len(outputs), scales)]
        return per_task if task is None else per_task[0]
