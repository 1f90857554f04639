"""Checkpoint loading for the state dicts the UDA community shares:
wrappers and prefixes removed, model-specific layouts converted by the
model's ``convert_state_dict``, shape mismatches left as initialised."""

import os
import re
import sys

import torch
from torch import nn

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
_PREFIXES = ("module.", "Scale.", "model.")


def read_state_dict(source):
    """The tensors of a checkpoint file (or dict), unwrapped from
    ``{"state_dict": ...}`` and similar: ``(state, description)``."""
    return _read_state_dict(source)


def _read_state_dict(source):
    where = "the given state dict"
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        if os.path.isdir(where):
            raise FileNotFoundError(f"lse_fast.models.load_checkpoint: {where} is a directory, expected a checkpoint file")
        if not os.path.isfile(where):
            raise FileNotFoundError(f"lse_fast.models.load_checkpoint: checkpoint file not found: {where}")
        try:
            state = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise RuntimeError(f"lse_fast.models.load_checkpoint: cannot read {where} as a PyTorch state dict: "
                               + _load_failure(where, e)) from None
    else:
        state = source
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"lse_fast.models.load_checkpoint: {where} is not a state dict (a dict of tensors, possibly under "
            f"one of the keys {_WRAPPER_KEYS}); got {type(state).__name__}"
        )
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, where


def _load_failure(path, error):
    """Why torch.load failed, in one or two sentences (its own message on
    weights_only runs to a page)."""
    if os.path.getsize(path) == 0:
        return "it is an empty file (0 bytes)"
    text = str(error).strip()
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        detail = found.group(1).strip() if found else text.splitlines()[0]
        return (f"it holds Python objects besides tensors, which torch.load(weights_only=True) refuses ({detail}). "
                "If you trust the file, load it yourself with torch.load(path, weights_only=False) and pass "
                "the state dict")
    first = text.splitlines()[0] if text else type(error).__name__
    return (f"torch.load(weights_only=True) failed ({first}); the file is truncated, corrupt or not a "
            "PyTorch checkpoint")


def _strip_prefixes(state, model_keys):
    """Drops wrapper prefixes ('module.' from DataParallel, 'Scale.' from the
    converted caffe DeepLab weights) when the keys do not match as they are."""
    changed = True
    while changed:
        changed = False
        if sum(k in model_keys for k in state) > 0:
            break
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
                break
    return state


def _short(keys, limit=8):
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(model, path_or_state_dict, *, strict=False, verbose=True):
    """Loads a checkpoint (a path or a state dict) into `model`.

    Accepts the plain state dict, one wrapped as ``{"state_dict": ...}``
    (or "model", "model_state_dict"), keys prefixed with ``module.``
    (DataParallel) or ``Scale.`` (the converted caffe DeepLab weights), and
    model-specific layouts through ``model.convert_state_dict(state) ->
    (state, notes)`` (DeepLab-v2: AdaptSegNet/ADVENT single- and multi-level
    heads, and the early-return ASPP layout those were trained with; FCN-8s:
    torchvision VGG16 ImageNet weights, and the skip scaling of the caffe
    "at-once" checkpoints). A detected checkpoint family is reported with a
    ``RuntimeWarning`` saying which forward the model computes.

    Tensors whose shape differs from the model's (e.g. a 16-class head into
    a 19-class model) are not loaded. Returns ``(missing, unexpected)``: model
    keys left as initialised (shape mismatches included) and checkpoint keys
    not used. ``num_batches_tracked`` buffers, absent from old checkpoints,
    are never reported missing, nor the layout records a model lists in
    ``record_buffers`` (DeepLabV2's ``layer5.branches``, FCN8s's
    ``skip_scales``). With ``strict=True`` any missing, unexpected
    or mismatched key raises and the model is left unchanged; a checkpoint
    sharing no key with the model always raises. ``verbose`` prints a summary
    to stderr.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lse_fast.models.load_checkpoint: `model` must be a torch.nn.Module, got {type(model).__name__}")
    state, where = _read_state_dict(path_or_state_dict)
    target = model.state_dict()
    state = _strip_prefixes(state, target)
    notes = []
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert):
        state, notes = convert(state)
    loadable, mismatched = {}, []
    for k, v in state.items():
        if k in target:
            if tuple(v.shape) == tuple(target[k].shape):
                loadable[k] = v
            else:
                mismatched.append(f"{k} (checkpoint {list(v.shape)}, model {list(target[k].shape)})")
    if not loadable:
        raise RuntimeError(
            f"lse_fast.models.load_checkpoint: {where} shares no tensor with {type(model).__name__}: "
            f"checkpoint keys look like [{_short(sorted(state), 5)}], the model's like [{_short(list(target), 5)}]"
            + (f"; shape mismatches: {_short(mismatched, 5)}" if mismatched else "")
        )
    records = set(getattr(model, "record_buffers", ()))  # layout records: absent from community files
    missing = [k for k in target if k not in loadable and not k.endswith("num_batches_tracked") and k not in records]
    unexpected = [k for k in state if k not in target]
    if strict and (missing or unexpected or mismatched):
        raise RuntimeError(
            f"lse_fast.models.load_checkpoint: {where} does not match {type(model).__name__} exactly (strict=True): "
            f"missing {len(missing)} [{_short(missing)}], unexpected {len(unexpected)} [{_short(unexpected)}], "
            f"shape mismatches {len(mismatched)} [{_short(mismatched)}]"
        )
    with torch.no_grad():
        for k, v in loadable.items():
            target[k].copy_(v)
    loaded = getattr(model, "checkpoint_loaded", None)
    if callable(loaded):  # models whose forward depends on a loaded record (DeepLabV2's ASPP layout)
        loaded()
    if verbose:
        lines = [f"lse_fast.models.load_checkpoint: loaded {len(loadable)} of {len(target)} tensors from {where}"]
        lines += [f"  note: {n}" for n in notes]
        if mismatched:
            lines.append(f"  shape mismatch, left as initialised ({len(mismatched)}): {_short(mismatched)}")
        if missing:
            lines.append(f"  missing, left as initialised ({len(missing)}): {_short(missing)}")
        if unexpected:
            lines.append(f"  unexpected, ignored ({len(unexpected)}): {_short(unexpected)}")
        print("\n".join(lines), file=sys.stderr)
    return missing, unexpected
