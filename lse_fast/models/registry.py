"""The model registry: ``register(name)`` for factories, ``build(spec)`` by
registered name or ``"package.module:factory"``, and the attributes every
lse_fast model carries (:func:`check_model`)."""

import importlib
import inspect

from torch import nn

_REGISTRY = {}
_NORMALIZATIONS = ("imagenet", "caffe")


def register(name):
    """Decorator registering ``factory(num_classes=19, **kwargs) -> nn.Module``
    under ``name`` for `build`."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"lse_fast.models.register: `name` must be a non-empty string without ':', got {name!r}")

    def decorator(factory):
        if not callable(factory):
            raise TypeError(f"lse_fast.models.register: factory for {name!r} must be callable")
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"lse_fast.models.register: the name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available():
    """Sorted list of registered model names."""
    return sorted(_REGISTRY)


def _resolve(spec):
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" not in spec:
        raise ValueError(
            f"lse_fast.models.build: unknown model {spec!r}; registered models: {', '.join(available())}; "
            "or pass 'package.module:factory' for your own network"
        )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"lse_fast.models.build: `spec` {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"lse_fast.models.build: cannot import module {module_name!r} of spec {spec!r}: {e} "
            "(is its package on PYTHONPATH?)"
        ) from e
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"lse_fast.models.build: module {module_name!r} has no attribute {attr!r} (spec {spec!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"lse_fast.models.build: {spec!r} is not callable")
    return factory


def factory_options(spec, options):
    """The entries of `options` (keyword arguments by name) that the
    factory of `spec` takes, so one set of run options serves every model
    (e.g. ``freeze_bn`` reaches DeepLab-v2, ``skip_scale`` FCN-8s). Raises
    ValueError for an unknown `spec`."""
    factory = _resolve(spec)
    try:
        takes = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        takes = set()
    return {k: v for k, v in options.items() if k in takes}


def check_model(model, spec="model"):
    """Checks the attributes every lse_fast model carries; returns the model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"lse_fast.models.build: {spec!r} returned {type(model).__name__}, expected a torch.nn.Module")
    stride = getattr(model, "output_stride", None)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(
            f"lse_fast.models.build: model from {spec!r} must have an int attribute `output_stride` >= 1 "
            f"(input size / logits size), got {stride!r}"
        )
    norm = getattr(model, "input_normalization", None)
    if norm not in _NORMALIZATIONS:
        raise ValueError(
            f"lse_fast.models.build: model from {spec!r} must have an attribute `input_normalization` in "
            f"{_NORMALIZATIONS} (the loader normalization its weights expect), got {norm!r}"
        )
    return model


def build(spec, num_classes=19, **kwargs):
    """Builds a registered model by name, or ``"package.module:factory"``
    (called as ``factory(num_classes=num_classes, **kwargs)``)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"lse_fast.models.build: `spec` must be a model name or 'package.module:factory', got {spec!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"lse_fast.models.build: `num_classes` must be a positive int, got {num_classes!r}")
    factory = _resolve(spec)
    return check_model(factory(num_classes=num_classes, **kwargs), spec)
