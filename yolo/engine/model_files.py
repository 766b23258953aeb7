"""Reading model files safely: a checkpoint is loaded with `torch.load(..., weights_only=True)`, checked to be one
of this project's (its format, its weights, its config and the model that config describes), and anything else is
one ValueError naming the file and what is wrong with it, never a traceback from deep inside the command.
"""
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from loguru import logger

from ..config import DERIVED, BaseConfig, config_from_dict
from ..models.detector import build_model
from ..models.search_cell import OLDER_FORMATS, format_problem, genotype_format

# the layout of a checkpoint (checkpoint.py's docstring), saved as its "format"; a file without one is format 1. Bump it
# when a checkpoint changes so that older code would misread it (a key renamed, or given another meaning): older
# code then refuses the file in one line instead of building a wrong model from it
CHECKPOINT_FORMAT = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (PyTorch >= 1.6) ...
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # ... or, before, a pickled magic number
# checkpoints whose unknown config keys were warned about: a command reads a checkpoint's config several times (its
# checks, then the model), and says so once per file
WARNED_FILES = set()
# what a config that validates may still raise while its model is built (e.g. anchors that are not numbers)
BUILD_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError, ZeroDivisionError)


def load_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a plain pickle draws a protocol warning before it is refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, unsafe pickle ...
        raise ValueError(f"cannot load checkpoint {path}: {unreadable_reason(path, e)}") from None


def unreadable_reason(path, error):
    """Why torch.load could not read `path`, in one line: torch's own messages run over many lines, or are empty."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if size == 0:
        return "empty file (0 bytes): its save or copy did not happen; use another checkpoint"
    if not (head.startswith(ZIP_MAGIC) or head == LEGACY_MAGIC):
        return f"not a torch file ({size} bytes starting {head[:8]!r}); give a .pt file this project saved"
    if isinstance(error, EOFError) or head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return f"truncated ({size} bytes, its end is missing): its save or copy did not finish; use another checkpoint"
    if isinstance(error, pickle.UnpicklingError):
        return ("it holds Python objects other than tensors and plain values, which are never loaded (unpickling "
                "them could run code): not a checkpoint of this project")
    return f"damaged ({type(error).__name__}: {first_line(error)})"


def first_line(error):
    """The first line of an exception's message (its type's name when it has none): one line for an error report."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_model_checkpoint(path, needs=("model", "config")):
    """load_checkpoint of a file that must be one of this project's checkpoints: a dict holding `needs`, of a format
    this code reads, its contents sound (check_contents). Anything else (a plain state dict, alphas.pt, another
    project's file, a damaged or newer checkpoint) is a ValueError naming the file."""
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict):
        check_format(ckpt, path)
        check_contents(ckpt, path, weights_fit_config="config" in needs)
    missing = [key for key in needs if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a checkpoint of this project that can be used here: it has no "
                         f"{', '.join(repr(k) for k in missing)} (it holds {found})")
    return ckpt


def check_format(ckpt, path):
    version = ckpt.get("format", 1)  # checkpoints saved before the format was recorded are format 1
    if version == CHECKPOINT_FORMAT:
        return
    if isinstance(version, int) and version > CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {version}, newer than the format {CHECKPOINT_FORMAT} this "
                         f"code reads: a newer version of this project saved it; update this project to use it")
    raise ValueError(f"checkpoint {path} has format {version!r}, which this project never wrote (it writes format "
                     f"{CHECKPOINT_FORMAT}): not a checkpoint of this project, or a damaged one")


def checkpoint_config(ckpt, path):
    """The config a checkpoint was saved with, validated as a config file is; malformed: a ValueError naming the
    file (a field of the wrong type would otherwise be a TypeError deep inside whatever uses it)."""
    try:
        if not isinstance(ckpt["config"], dict):
            raise TypeError(f"it is a {type(ckpt['config']).__name__}, not a dict of fields")
        warn_unknown_fields(ckpt["config"], path)
        return config_from_dict(ckpt["config"], warn=False)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, FileNotFoundError) as e:
        raise ValueError(f"checkpoint {path} holds a malformed config: {first_line(e)}") from None


def warn_unknown_fields(stored, path):
    """One warning per checkpoint file naming the keys of its config that are no field of this version (ignored:
    the rest of the checkpoint still loads)."""
    fields = BaseConfig().to_dict()
    unknown = [k for k in stored if k not in fields and k not in DERIVED]
    key = Path(path).resolve()
    if unknown and key not in WARNED_FILES:
        WARNED_FILES.add(key)
        logger.warning(f"checkpoint {path}: config {'keys' if len(unknown) > 1 else 'key'} "
                       f"{', '.join(map(repr, unknown))} {'are' if len(unknown) > 1 else 'is'} not a config field "
                       f"of this version: ignored")


def check_contents(ckpt, path, weights_fit_config):
    """A checkpoint's `model` must be named tensors, its `config` must validate and describe a model this code can
    build, and with weights_fit_config (the command builds the model of that config) the weights must be that
    model's. The model is built on the meta device (shapes only: no memory, no compute), so every command checks a
    file before it builds or writes anything."""
    state = ckpt.get("model", {})
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = "a dict of other values" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(f"checkpoint {path} is damaged or not of this project: its 'model' is {what}, where a dict "
                         f"of tensors belongs")
    if "config" not in ckpt:
        return
    saved = checkpoint_config(ckpt, path)
    check_searched_head(saved, path)
    try:
        with torch.device("meta"):
            model = build_model(saved)
    except BUILD_ERRORS as e:
        raise ValueError(f"checkpoint {path} holds a malformed config: it describes no model this code can build "
                         f"({type(e).__name__}: {first_line(e)})") from None
    if weights_fit_config and "model" in ckpt:
        # assign: meta tensors hold no values to copy into. A copy of the dict: load_state_dict(assign=True) writes its
        # flag into the dict's _metadata, and a later load of the same dict into a real model would then replace
        # that model's parameters (those its optimizer holds) instead of copying into them
        load_weights(model, dict(state), path, assign=True)


def check_searched_head(saved, path):
    """A searched head is the cells of the genotype text its config carries, whose format line says what that text
    means: a text of another format (e.g. before the class tower's inputs were reordered) would rebuild another
    head under the same weights, so its checkpoint is refused in one line."""
    if saved.head != "searched" or not isinstance(saved.genotype, str):
        return
    version = genotype_format(saved.genotype)
    problem = format_problem(version)
    if problem:
        todo = ("train the head again with this code, on a genotype of a new search (python main.py --task "
                "search_head)" if version in OLDER_FORMATS else "update this project to use it")
        raise ValueError(f"checkpoint {path}: its searched head's genotype is {problem}; {todo}")


def load_weights(model, state, path, assign=False):
    """load_state_dict, with shapes or names that do not fit reported as one line naming the checkpoint."""
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError as e:  # a checkpoint of an older version of the model code, or an edited config
        lines = str(e).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(e)
        raise ValueError(f"checkpoint {path} does not fit the model its config describes ({first}); "
                         f"it was probably saved by another version of this code: retrain it") from None
