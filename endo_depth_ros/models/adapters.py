"""Merge low-rank adapters into plain weights, so an adapted network is an ordinary one.

Fine-tuned foundation models (EndoDAC, EndoDAV, ...) ship the frozen base weights plus
small adapter tensors next to each adapted linear layer. Merging them once at load time
gives a state dict of the base architecture: no adapter code at run time, and the same
ONNX/TensorRT export as any other network.

Key patterns (``P`` is the prefix of an adapted ``nn.Linear``, e.g.
``encoder.blocks.3.mlp.fc1``):

===========  =====================================  =====================================
adapter      tensors next to ``P.weight`` (out, in)  merged ``P.weight``
===========  =====================================  =====================================
LoRA         ``P.lora_A`` (r, in), ``P.lora_B``      ``W + s * B @ A``
             (out, r)
DV-LoRA      LoRA + ``P.lora_U`` (r, 1),             ``W + s * (B * V) @ (A * U)``
             ``P.lora_V`` (out, 1)
SSB          ``P.lora_A`` (in, 1), ``P.lora_B``      ``B * W * A^T`` (a scale per output
             (out, 1)                                and per input channel)
Dash         LoRA + ``P.lora_index`` (k,),           ``W + s * B @ A + Ut @ diag(i) @ Vt``
             ``P.weight_u_top`` (out, k),
             ``P.weight_vt_top`` (k, in)
===========  =====================================  =====================================

``s`` is the adapter's scaling (``lora_alpha / r`` in the reference LoRA code). It is not
stored in checkpoints, so the caller states it per family (``scaling``). DV-LoRA is
EndoDAC's "dynamic vector" LoRA: the forward pass ``x (A*U)^T (B*V)^T`` is the product
above, so merging is exact up to float rounding.

SSB (EndoDAV's scale-shift-bias adapter) and Dash (LoRA plus a learned re-weighting of
the base weight's top-k singular directions, EndoDAV) are EndoDAV's variants; SSB shares
LoRA's tensor names, so the caller chooses its rules (``ENDODAV_RULES`` or ``(SSB,)``)
from the tensor shapes (``is_ssb``). Dash's merged weight is its forward pass after the
warm-up (the trained state), with the stored top-k directions.

Other adapter kinds (e.g. scale-shift or per-head variants) plug in through
``merge_adapters(..., rules=...)``: a rule names the suffixes it consumes and computes
the merged weight from the base weight and those tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from endo_depth_ros.errors import ModelLoadError

#: ``scaling(prefix, rank) -> s``: the factor of each adapter's low-rank product.
Scaling = Callable[[str, int], float]
#: ``shapes(weight, tensors) -> {suffix: expected shape}`` of one adapter kind.
ShapeRule = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class AdapterRule:
    """One adapter kind: which tensors it adds to a layer and how they merge.

    Attributes:
        name: kind reported in errors and by ``find_adapters`` (``'lora'``, ``'dv-lora'``).
        suffixes: tensor names after ``'<prefix>.'`` that all must be present.
        merge: ``(weight, tensors, scale) -> merged weight``; ``tensors`` maps each suffix
            to its tensor; ``scale`` is the caller's scaling for this layer.
    """

    name: str
    suffixes: tuple[str, ...]
    merge: Callable[[torch.Tensor, Mapping[str, torch.Tensor], float], torch.Tensor]
    #: ``(weight, tensors) -> {suffix: expected shape}``; None: LoRA's shapes.
    shapes: ShapeRule | None = None
    #: Tensors a checkpoint may carry next to the adapter that carry no weight (dropped).
    extras: tuple[str, ...] = ()


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * B @ A``: the weight update of a LoRA with ``A`` (r, in), ``B`` (out, r)."""
    return (b.double() @ a.double()) * scale


def _merge_lora(weight: torch.Tensor, t: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    delta = lora_delta(t['lora_A'], t['lora_B'], scale)
    return (weight.double() + delta).to(weight.dtype)


def _merge_dv_lora(
    weight: torch.Tensor, t: Mapping[str, torch.Tensor], scale: float,
) -> torch.Tensor:
    a = t['lora_A'].double() * t['lora_U'].double()  # (r, in) * (r, 1)
    b = t['lora_B'].double() * t['lora_V'].double()  # (out, r) * (out, 1)
    return (weight.double() + (b @ a) * scale).to(weight.dtype)


def _merge_ssb(weight: torch.Tensor, t: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    # The forward pass multiplies W[o, i] by A[i] and B[o]; ``scale`` does not apply.
    a = t['lora_A'].double().reshape(1, -1)  # (1, in)
    b = t['lora_B'].double().reshape(-1, 1)  # (out, 1)
    return (b * weight.double() * a).to(weight.dtype)


def _ssb_shapes(
    weight: torch.Tensor, t: Mapping[str, torch.Tensor],
) -> dict[str, tuple[int, ...]]:
    return {'lora_A': (int(weight.shape[1]), 1), 'lora_B': (int(weight.shape[0]), 1)}


def _merge_dash(weight: torch.Tensor, t: Mapping[str, torch.Tensor], scale: float) -> torch.Tensor:
    top = (t['weight_u_top'].double() * t['lora_index'].double()) @ t['weight_vt_top'].double()
    delta = lora_delta(t['lora_A'], t['lora_B'], scale) + top
    return (weight.double() + delta).to(weight.dtype)


def _dash_shapes(
    weight: torch.Tensor, t: Mapping[str, torch.Tensor],
) -> dict[str, tuple[int, ...]]:
    out_features, in_features = int(weight.shape[0]), int(weight.shape[1])
    rank, k = int(t['lora_A'].shape[0]), int(t['lora_index'].shape[0])
    return {'lora_A': (rank, in_features), 'lora_B': (out_features, rank), 'lora_index': (k,),
            'weight_u_top': (out_features, k), 'weight_vt_top': (k, in_features)}


LORA = AdapterRule('lora', ('lora_A', 'lora_B'), _merge_lora)
DV_LORA = AdapterRule('dv-lora', ('lora_A', 'lora_B', 'lora_U', 'lora_V'), _merge_dv_lora)
SSB = AdapterRule('ssb', ('lora_A', 'lora_B'), _merge_ssb, _ssb_shapes)
DASH = AdapterRule(
    'dash', ('lora_A', 'lora_B', 'lora_index', 'weight_u_top', 'weight_vt_top'), _merge_dash,
    _dash_shapes, extras=('lora_change_a', 'lora_change_bb'))
#: EndoDAV's low-rank kinds (Dash and DV-LoRA before LoRA, whose suffixes they include).
ENDODAV_RULES: tuple[AdapterRule, ...] = (DASH, DV_LORA, LORA)
#: Rules tried in order; the first whose suffixes are all present wins (DV-LoRA before
#: LoRA, as its suffixes include LoRA's).
DEFAULT_RULES: tuple[AdapterRule, ...] = (DV_LORA, LORA)
_ADAPTER_SUFFIXES = ('lora_A', 'lora_B', 'lora_U', 'lora_V')


def is_ssb(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the adapters are SSB (``lora_A`` of shape (in, 1) next to a 2-D weight).

    SSB and LoRA store tensors of the same names; only the shapes tell them apart (a
    rank-1 LoRA's ``lora_A`` is (1, in)).
    """
    for key, value in state_dict.items():
        prefix, _, suffix = key.rpartition('.')
        weight = state_dict.get(f'{prefix}.weight')
        if suffix == 'lora_A' and weight is not None and weight.ndim == 2:
            return tuple(value.shape) == (int(weight.shape[1]), 1) and weight.shape[1] != 1
    return False


def find_adapters(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[AdapterRule] = DEFAULT_RULES,
) -> dict[str, str]:
    """Adapted layers of a state dict: ``{prefix: rule name}``, in key order.

    A prefix counts as adapted when any tensor ``<prefix>.<suffix>`` of any rule exists;
    the rule is the first whose suffixes are all present (``'?'`` if none is complete).
    """
    suffixes = {s for rule in rules for s in rule.suffixes} | set(_ADAPTER_SUFFIXES)
    prefixes: dict[str, None] = {}
    for key in state_dict:
        prefix, _, suffix = key.rpartition('.')
        if suffix in suffixes:
            prefixes[prefix] = None
    found = {}
    for prefix in prefixes:
        rule = _rule_for(state_dict, prefix, rules)
        found[prefix] = rule.name if rule is not None else '?'
    return found


def _rule_for(
    state_dict: Mapping[str, torch.Tensor], prefix: str, rules: Sequence[AdapterRule],
) -> AdapterRule | None:
    for rule in rules:
        if all(f'{prefix}.{s}' in state_dict for s in rule.suffixes):
            return rule
    return None


def merge_adapters(
    state_dict: Mapping[str, torch.Tensor],
    *,
    scaling: float | Scaling,
    rules: Sequence[AdapterRule] = DEFAULT_RULES,
    source: str = 'checkpoint',
) -> dict[str, torch.Tensor]:
    """Fold every adapter into its layer's weight; return a state dict without adapters.

    Args:
        state_dict: tensors by name, base weights and adapters side by side (not modified).
        scaling: the adapters' scaling ``s``, a number or ``scaling(prefix, rank)``; the
            rank ``r`` is the first dimension of ``lora_A``.
        rules: adapter kinds to recognise (default: DV-LoRA, LoRA).
        source: what to call the state dict in error messages (e.g. its file name).

    Returns:
        A new dict: same keys minus the adapter tensors, adapted ``weight`` tensors
        replaced by merged ones (same dtype; computed in float64). Unadapted tensors are
        the caller's objects, not copies.

    Raises:
        ModelLoadError: an adapter without all its tensors, without a base ``weight``,
            or with shapes that do not fit that weight.
    """
    merged = dict(state_dict)
    for prefix, kind in find_adapters(state_dict, rules).items():
        rule = _rule_for(state_dict, prefix, rules)
        if rule is None:
            present = sorted(k.rpartition('.')[2] for k in state_dict
                             if k.rpartition('.')[0] == prefix)
            raise ModelLoadError(
                f'{source}: incomplete adapter at {prefix!r} (has {", ".join(present)}); '
                f'expected one of: {"; ".join(", ".join(r.suffixes) for r in rules)}.')
        weight = state_dict.get(f'{prefix}.weight')
        if weight is None:
            raise ModelLoadError(f'{source}: adapter {kind} at {prefix!r} has no {prefix}.weight.')
        tensors = {s: state_dict[f'{prefix}.{s}'] for s in rule.suffixes}
        _check_shapes(source, prefix, kind, weight, tensors, rule.shapes)
        rank = int(tensors['lora_A'].shape[0]) if 'lora_A' in tensors else 0
        scale = scaling(prefix, rank) if callable(scaling) else float(scaling)
        merged[f'{prefix}.weight'] = rule.merge(weight, tensors, scale)
        for suffix in _ADAPTER_SUFFIXES + rule.suffixes + rule.extras:
            merged.pop(f'{prefix}.{suffix}', None)
    return merged


def _check_shapes(
    source: str, prefix: str, kind: str, weight: torch.Tensor,
    tensors: Mapping[str, torch.Tensor],
    shapes: ShapeRule | None = None,
) -> None:
    if 'lora_A' not in tensors or 'lora_B' not in tensors:
        return  # a custom rule: it checks its own tensors
    out_features, in_features = (weight.shape[0], weight.shape[1]) if weight.ndim == 2 else (0, 0)
    rank = tensors['lora_A'].shape[0] if tensors['lora_A'].ndim == 2 else -1
    expected: dict[str, tuple[int, ...]] = {
        'lora_A': (rank, in_features), 'lora_B': (out_features, rank),
        'lora_U': (rank, 1), 'lora_V': (out_features, 1)}
    if shapes is not None and weight.ndim == 2 and tensors['lora_A'].ndim >= 1:
        expected = shapes(weight, tensors)
    wrong = [f'{s} {tuple(t.shape)} (expected {expected[s]})' for s, t in tensors.items()
             if s in expected and tuple(t.shape) != expected[s]]
    if weight.ndim != 2 or rank < 1 or wrong:
        raise ModelLoadError(
            f'{source}: {kind} adapter at {prefix!r} does not fit its weight '
            f'{tuple(weight.shape)}: {", ".join(wrong) or "rank 0 or not a linear layer"}.')
