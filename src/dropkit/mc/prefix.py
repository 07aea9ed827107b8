"""The ``prefix`` strategy: run the deterministic part of a model once, sample only the rest.

The model is traced with ``torch.fx`` (sampled modules are kept as leaves). A node is
*stochastic* when it is a sampled module, a random function or method (a name with ``drop``,
``rand``, ``bernoulli``, ``normal``, ``uniform``, ``gumbel``, ``rrelu``, ``multinomial``,
``poisson`` or ``attention`` in it), or depends on one; every other node is deterministic in MC
mode and computed once per batch, in the *prefix* graph. The *suffix* graph takes the values
that cross the cut:

* tensors computed from the input by tensor ops are replicated ``k`` times along dim 0
  (sample-major), after checking that their dim 0 is the batch;
* values that do not depend on the input (parameters, constants) are passed as they are;
* anything else that depends on the input (``x.size(0)``, ``torch.arange(x.shape[1])``) is
  recomputed in the suffix from replicated tensors, so shapes follow the replicated batch.

This is exact whenever the batched strategy is: it only removes ``T - 1`` evaluations of
deterministic nodes (peers.md (b)22; baal's ``MCCachingModule``, BatchBALD's
``deterministic_forward_impl``).

Tracing costs milliseconds, more than a whole ``predict`` of a small batch, so :func:`plan_for`
keeps the plan of each model (weakly: a collected model leaves no entry) and reuses it while
what the plan was built from is unchanged: the module tree (names, types, identities and any
``forward`` set on an instance), the identities of the parameters and buffers, the sampled
modules, and the input's dtype, number of dims and device. Failures are kept as well, so a
model that cannot be traced is not traced again on every call. Plain Python attributes that
``forward`` reads (and that tracing bakes into the graph) are not watched: after changing one,
call :func:`clear_plan_cache`.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

_RANDOM = re.compile(
    r"drop|rand|bernoulli|normal|uniform|gumbel|rrelu|multinomial|poisson|attention", re.I
)


class NoPrefixError(Exception):
    """The model cannot be split (the message says why); the caller falls back."""


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[int]) -> None:
        super().__init__()
        self._leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return id(m) in self._leaves or super().is_leaf_module(m, qualname)


def _tensor_like(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, tuple | list) and len(value) > 0 and all(map(_tensor_like, value))


def _leading(value: object) -> list[int | None]:
    if isinstance(value, torch.Tensor):
        return [value.shape[0] if value.dim() else None]
    return [d for v in value for d in _leading(v)]


def replicate(value, k: int):
    """``k`` copies of ``value`` stacked sample-major along dim 0 (always a fresh tensor)."""
    if isinstance(value, torch.Tensor):
        return value.repeat(k, *([1] * (value.dim() - 1)))
    return type(value)(replicate(v, k) for v in value)


@dataclass
class PrefixPlan:
    """The two graphs and, per crossing value, whether it is replicated."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    replicated: tuple[bool, ...]
    prefix_nodes: int
    first: tuple | None = None  # (x, values) of the batch the plan was built on

    def run_prefix(self, x: torch.Tensor) -> tuple:
        """The crossing values for batch ``x`` (computed once per batch)."""
        first, self.first = self.first, None
        values = first[1] if first is not None and first[0] is x else self.prefix(x)
        for value, rep in zip(values, self.replicated, strict=True):
            if rep and any(d != x.shape[0] for d in _leading(value)):
                raise NoPrefixError("a value crossing the cut has no batch dim 0 here")
        return values

    def run_suffix(self, values: Sequence, k: int):
        args = [replicate(v, k) if r else v for v, r in zip(values, self.replicated, strict=True)]
        return self.suffix(*args)


def _is_random(node: fx.Node, root: nn.Module, sampled: set[int]) -> bool:
    if node.op == "call_module":
        return id(root.get_submodule(node.target)) in sampled
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else node.target.__name__
        return bool(_RANDOM.search(name))
    return False


def _probe(gm: fx.GraphModule, nodes: list[fx.Node], x: torch.Tensor, keep: set) -> tuple:
    """Run the deterministic nodes once on ``x``: each value's kind and leading dims, and the
    values of the nodes in ``keep`` (the rest are freed after their last use)."""
    interp = fx.Interpreter(gm)
    interp.args_iter = iter([x])
    last = {}
    for i, node in enumerate(nodes):
        for arg in node.all_input_nodes:
            last[arg] = i
    meta, kept = {}, {}
    for i, node in enumerate(nodes):
        value = interp.run_node(node)
        meta[node] = _leading(value) if _tensor_like(value) else None
        interp.env[node] = value
        if node in keep:
            kept[node] = value
        for arg in [*node.all_input_nodes, node]:
            if last.get(arg, -1) <= i:
                interp.env.pop(arg, None)
    return meta, kept


def build_plan(
    model: nn.Module,
    sampled: Sequence[nn.Module],
    x: torch.Tensor,
    random_modules: Sequence[nn.Module] = (),
) -> PrefixPlan:
    """Trace ``model``, split it, and check the split on the batch ``x``; raises
    :class:`NoPrefixError` with the reason when the model cannot be split. ``random_modules``:
    modules whose forward runs a stochastic op in MC mode (found by
    :mod:`dropkit.mc.probe`, e.g. an ``nn.TransformerEncoder`` that fx keeps as one leaf);
    a call of one of them is never cached."""
    leaves = {id(m) for m in sampled}
    random_ids = leaves | {id(m) for m in random_modules}
    if id(model) in leaves:
        raise NoPrefixError("the root module itself is sampled")
    if "forward" in vars(model):  # fx would trace type(model).forward instead
        raise NoPrefixError("forward is replaced on the instance")
    try:
        graph = _Tracer(leaves).trace(model)
    except Exception as err:  # fx raises many kinds (TraceError, TypeError, ...)
        raise NoPrefixError(f"torch.fx cannot trace it ({type(err).__name__}: {err})") from err
    gm = fx.GraphModule(model, graph)
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if not placeholders:
        raise NoPrefixError("forward takes no input")
    stochastic: set[fx.Node] = set()
    depends: set[fx.Node] = {placeholders[0]}  # on the input
    for node in nodes:
        inputs = node.all_input_nodes
        if _is_random(node, gm, random_ids) or any(a in stochastic for a in inputs):
            stochastic.add(node)
        if any(a in depends for a in inputs):
            depends.add(node)
    if not stochastic:
        raise NoPrefixError("no sampled module or random op in the traced graph")
    fixed = [n for n in nodes if n not in stochastic and n.op != "output"]
    work = [n for n in fixed if n in depends and n.op.startswith("call_")]
    if not work:
        raise NoPrefixError("no deterministic prefix: the input goes straight to dropout")
    output = nodes[-1]
    todo = [n for n in fixed if any(u in stochastic or u is output for u in n.users)]
    meta, kept = _probe(gm, fixed, x, {placeholders[0], *todo})
    batched = {placeholders[0]}
    for node in fixed:
        if meta[node] is not None and any(a in batched for a in node.all_input_nodes):
            batched.add(node)
    kind: dict[fx.Node, str] = {}
    while todo:
        node = todo.pop()
        if node in kind:
            continue
        if node in batched:
            if any(d != x.shape[0] for d in meta[node]):
                raise NoPrefixError(f"{node.name} crosses the cut without batch dim 0")
            kind[node] = "replicate"
        elif node not in depends:
            kind[node] = "pass"
        else:
            kind[node] = "recompute"
            todo.extend(node.all_input_nodes)
    crossing = [n for n in fixed if kind.get(n) in ("replicate", "pass")]

    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in fixed:
        env[node] = head.node_copy(node, env.__getitem__)
    head.output(tuple(env[n] for n in crossing))
    tail = fx.Graph()
    env = {n: tail.placeholder(f"cross_{n.name}") for n in crossing}
    for node in nodes:
        if node in stochastic or node is output or kind.get(node) == "recompute":
            env[node] = tail.node_copy(node, env.__getitem__)
    prefix = fx.GraphModule(gm, head)
    prefix.graph.eliminate_dead_code()
    prefix.recompile()
    replicated = tuple(kind[n] == "replicate" for n in crossing)
    plan = PrefixPlan(prefix, fx.GraphModule(gm, tail), replicated, len(work))
    if all(n in kept for n in crossing):  # the probe's batch needs no second prefix run
        plan.first = (x, tuple(kept[n] for n in crossing))
    return plan


# model -> (key, plan or the reason it has none); one entry per model, so a model whose structure
# keeps changing cannot grow the cache. The values never refer to the model itself (only to its
# submodules and tensors), so the weak key is what keeps an entry alive.
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, PrefixPlan | str]] = (
    weakref.WeakKeyDictionary()
)


def model_signature(model: nn.Module, sampled_names: Sequence[str]) -> tuple:
    """What a plan is built from, on the model's side: a cheap value that changes when the
    plan would. Module identities (not only types) catch a module replaced by another of the
    same type, which the plan would otherwise keep calling; a ``forward`` set on an instance is
    traced in its place (the sampled modules' are predict's own wrappers, new on every call and
    never traced); tensor identities catch reassigned parameters and buffers (``.to()``
    replaces buffers), which ``get_attr`` nodes hold. In-place changes (new weights, a new
    dropout rate) need no new plan: the graphs call the live modules and read the live
    tensors."""
    skip = set(sampled_names)
    # one walk, reading each module's own tensors: half the time of parameters() and buffers(),
    # which walk the tree again (it is paid on every predict call)
    modules = tuple(
        (
            name, type(m), id(m), None if name in skip else id(vars(m).get("forward")),
            tuple(map(id, m._parameters.values())), tuple(map(id, m._buffers.values())),
        )
        for name, m in model.named_modules()
    )  # fmt: skip
    return modules, tuple(sampled_names)


def plan_for(
    model: nn.Module,
    sampled_names: Sequence[str],
    sampled: Sequence[nn.Module],
    x: torch.Tensor,
    *,
    signature: tuple | None = None,
    stochastic: Sequence[nn.Module] = (),
) -> PrefixPlan:
    """The cached :func:`build_plan` of ``model`` for the modules ``sampled`` (named
    ``sampled_names``) and inputs like ``x``; built and stored on a miss. Raises
    :class:`NoPrefixError` (also from the cache) when the model cannot be split.
    ``signature``: :func:`model_signature` when the caller has it already.

    A plan fresh from :func:`build_plan` carries the prefix values of ``x`` for its first
    :meth:`PrefixPlan.run_prefix`; the caller must drop them (``plan.first = None``) once the
    call is over, so the cache holds no batch."""
    if signature is None:
        signature = model_signature(model, sampled_names)
    key = (signature, x.dtype, x.dim(), x.device)
    entry = _PLANS.get(model)
    if entry is not None and entry[0] == key:
        if isinstance(entry[1], str):
            raise NoPrefixError(entry[1])
        return entry[1]
    try:
        plan = build_plan(model, sampled, x, stochastic)
    except NoPrefixError as why:
        # the message only: the exception's traceback holds frames that refer to the model
        _PLANS[model] = (key, str(why))
        raise
    _PLANS[model] = (key, plan)
    return plan


def clear_plan_cache(model: nn.Module | None = None) -> None:
    """Forget the cached plan of ``model`` (every model's with None), e.g. after changing a
    Python attribute that ``forward`` reads."""
    if model is None:
        _PLANS.clear()
    else:
        _PLANS.pop(model, None)
