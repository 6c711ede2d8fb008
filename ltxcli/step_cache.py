"""Step caching: skip transformer work on denoising steps whose input barely changed (``--cache``).

Two rules, each attached to a loaded transformer for one denoising pass by :func:`attached` (the model's
``forward`` is replaced on the instance and put back afterwards; nothing else in the pipeline knows):

* **TeaCache** (``teacache[:THRESH]``, the published TeaCache4LTX-Video rule): block 0's modulated input
  ``norm1(x) * (1 + scale_msa) + shift_msa`` is compared with the previous step's; its relative L1 change,
  rescaled by the polynomial :data:`TEACACHE_LTX_COEFFICIENTS`, is accumulated, and the step is computed when
  the sum reaches the threshold (the sum then restarts at 0), the first and the last step always. A skipped
  step adds the last computed residual of the block stack (the output of the final norm and modulation minus
  the patchified input) to this step's patchified input and projects that.
* **First-block cache** (``fbcache[:THRESH]``, diffusers' ``FirstBlockCache`` semantics): block 0 always
  runs; when the mean absolute change of its output residual against the one of the last *computed* step,
  relative to that one's mean absolute value, is at most the threshold, blocks 1.. are skipped and the last
  computed residual of those blocks is added to block 0's output instead.

Choices:

* **State per guidance branch, decided per branch.** The reference (TeaCache4LTX-Video on diffusers'
  pipeline) keeps one state for the whole ``[uncond, cond]`` batch and averages the metric over it; here
  every branch (unconditional, conditional, perturbed) has its own previous input, residual and accumulator
  and takes its own decision, so a run with CFG and STG is three reference streams side by side and a
  single-branch run (distilled models) is the reference exactly. When branches disagree, only the branches
  to compute go through the blocks (a smaller batch). A branch is recognised across steps by the storage of
  its text-embedding row (the pipeline slices every step's text from one ``[negative, positive, positive]``
  tensor built once per generation, so a branch stays itself when the per-step guidance schedule drops
  another one) and by what STG perturbs in it (its column of the skip-layer mask: when a per-interval
  ``skip_block_list`` moves the perturbation, as the 13B dev presets' does, the STG branch is another function
  of the same input, and a residual computed with other blocks skipped must not stand in for it); a branch
  that did not run on the previous step starts afresh (computed). A caller that builds new text tensors every
  step gets fresh state every step: never a skip, never a wrong reuse.
* **Per-token timesteps** (conditioning) need nothing special: the modulated input is per token already.
* **Passes and windows**: state lives for one :func:`attached` block, which the pipeline opens per pass
  (multi-scale passes and long-video windows each start clean); :meth:`StepCache.reset` starts afresh
  inside a block.
* **Sequence parallel**: the rank's model sees a shard of the tokens. The metric's two sums (the change and
  the reference magnitude, padding tokens excluded) are summed over the sequence group in one all-reduce per
  step, so every rank of the group sees the same float values and takes the same decision (the reduction
  order of a collective is the same on every rank). With CFG-parallel, each group of ranks holds its own
  branches and decides for them alone. See ``ParallelTransformer.token_sums``.
* **Host sync**: a decision is a branch on a value computed on the device, so it costs one device-to-host
  transfer of ``2 x branches`` floats per step (as the reference's ``.item()`` does) on steps that need a
  metric; the first and last TeaCache steps, fresh branches and threshold 0 need none (an STG skip-layer mask
  is read once per pass: the pipeline builds one per set of blocks and reuses it). Deciding on the
  device without a sync (``torch.where`` over both results) would run every block every step and save
  nothing, so the one small sync is the price of skipping. The metric is summed in float32 whatever the
  compute dtype (``sum(dtype=float32)``; a bfloat16 mean over millions of values is too coarse for a
  threshold of 0.03).
* **Threshold 0 never skips** and computes exactly what the plain forward computes (bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .models.transformer import BlockInputs

#: numpy.poly1d coefficients (highest power first) that TeaCache4LTX-Video fits to LTX-Video's relative L1 change.
TEACACHE_LTX_COEFFICIENTS = (2.14700694e01, -1.28016453e01, 2.31279151e00, 7.92487521e-01, 9.69274326e-03)


def teacache_rescale(x: float) -> float:
    """The TeaCache LTX polynomial at ``x`` (Horner's rule, as ``numpy.poly1d`` evaluates it)."""
    y = 0.0
    for c in TEACACHE_LTX_COEFFICIENTS:
        y = y * x + c
    return y


def _local_sums(parts: Sequence[Tensor]) -> Tensor:
    """Per batch element of each ``[B, N, D]`` part, its float32 sum, concatenated (``[sum of B]``)."""
    return torch.cat([t.sum(dim=(1, 2), dtype=torch.float32) for t in parts])


@dataclass
class _Branch:
    step: int  # the last step this branch ran
    prev: Tensor  # teacache: modulated input of the last step; fbcache: block-0 residual of the last computed step
    residual: Tensor | None = None  # what a skipped step adds (see the module docstring)
    acc: float = 0.0  # teacache: accumulated rescaled change since the last computed step


@dataclass
class StepCache:
    """The state of one cached pass (:func:`attached`). ``calls`` / ``skipped`` count branch evaluations (one
    per guidance branch per step; with one branch, transformer calls), on this process; ``history`` records,
    per branch key, ``(step, metric or None, computed)`` for every evaluation (None: no metric was needed)."""

    mode: str
    threshold: float
    steps: int
    token_sums: Any = _local_sums  # ([t [B, n, D], ...]) -> float32 sums over the whole (maybe sharded) sequence
    share: Any = None  # () -> the fraction of a branch evaluation this process counts (1 / sequence degree)
    step: int = -1
    calls: float = 0.0
    skipped: float = 0.0
    history: dict[Any, list[tuple[int, float | None, bool]]] = field(default_factory=dict)
    _branches: dict[Any, _Branch] = field(default_factory=dict)
    _masks: dict[Any, tuple[Tensor, list[tuple[Any, ...]]]] = field(default_factory=dict)

    def begin_step(self) -> None:
        self.step += 1

    def reset(self) -> None:
        """Start afresh (a new window or pass): every branch's next step is computed and the step count restarts."""
        self._branches.clear()
        self.step = -1

    # --- the replacement forward ---------------------------------------------------------------------------------

    def forward(self, model: nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Tensor,
                **kwargs: Any) -> Tensor:
        """``model.forward`` with the cache: same arguments, same result when every branch computes."""
        if self.step < 0:
            self.step = 0  # called without begin_step (a bare model): count calls as steps
        x, inputs = model.prepare(hidden_states, encoder_hidden_states, timestep, **kwargs)
        perturbed = self._perturbations(kwargs.get("skip_layer_mask"), kwargs.get("skip_layer_strategy"), x.shape[0])
        keys = _branch_keys(encoder_hidden_states, x.shape[1], perturbed)
        states = [self._branches.get(k) for k in keys]
        live = [s if s is not None and s.step == self.step - 1 else None for s in states]
        if self.mode == "teacache":
            h = self._teacache(model, x, inputs, keys, live)
        else:
            h = self._fbcache(model, x, inputs, keys, live)
        # a branch that missed this step starts afresh anyway: its tensors need not wait for the end of the pass
        self._branches = {k: s for k, s in self._branches.items() if s.step == self.step}
        return model.project(h)

    def _perturbations(self, mask: Tensor | None, strategy: Any, batch: int) -> list[tuple[Any, ...]]:
        """Per batch element, what STG perturbs in it: ``()``, or its strategy and its column of ``mask``
        (``[num_layers, B]``, 1 keeps a block). Read once per mask, recognised by where it is stored (it is kept
        here, so that storage holds the same values for the whole pass)."""
        if mask is None or strategy is None:
            return [()] * batch
        where = (mask.data_ptr(), tuple(mask.shape), tuple(mask.stride()))
        if where not in self._masks:
            columns = [tuple(col) for col in mask.t().tolist()]
            self._masks[where] = (mask, [(str(strategy), col) if any(v != 1 for v in col) else () for col in columns])
        return self._masks[where][1]

    def _decide(self, rows: list[int], cur: Tensor, prev: list[Tensor]) -> list[float]:
        """The relative L1 change per row of ``rows`` between ``cur [B, n, D]`` (all rows) and ``prev`` (one
        ``[1, n, D]`` per row of ``rows``): one all-reduce (sequence parallel) and one host sync."""
        if not rows:
            return []
        index = torch.tensor(rows, device=cur.device)
        before = torch.cat(prev)
        sums = self.token_sums([(cur.index_select(0, index) - before).abs(), before.abs()])
        values = sums.tolist()  # the step's one device-to-host transfer
        k = len(rows)
        return [values[j] / values[k + j] if values[k + j] > 0 else math.inf for j in range(k)]

    def _log(self, keys: Sequence[Any], rows: list[int], metrics: list[float], compute: list[bool]) -> None:
        share = self.share() if self.share is not None else 1.0
        self.calls += len(keys) * share
        self.skipped += compute.count(False) * share
        for b, key in enumerate(keys):
            metric = metrics[rows.index(b)] if b in rows else None
            self.history.setdefault(key, []).append((self.step, metric, compute[b]))

    def _teacache(self, model: nn.Module, x: Tensor, inputs: BlockInputs, keys: Sequence[Any],
                  live: list[_Branch | None]) -> Tensor:
        batch = x.shape[0]
        mod = model.transformer_blocks[0].modulated_input(x, inputs.tmod)
        last = self.step >= self.steps - 1
        compute = [True] * batch
        rows = [b for b in range(batch) if live[b] is not None and not last and self.threshold > 0]
        metrics = self._decide(rows, mod, [live[b].prev for b in rows])  # type: ignore[union-attr]
        for b, metric in zip(rows, metrics, strict=True):
            state = live[b]
            assert state is not None
            state.acc += teacache_rescale(metric)
            if state.acc < self.threshold:
                compute[b] = False
            else:
                state.acc = 0.0
        self._log(keys, rows, metrics, compute)
        h, residual = self._run(x, compute, live, lambda xs, ins: model.final_norm(model.run_blocks(xs, ins),
                                                                                    ins.temb), inputs)
        for b, key in enumerate(keys):
            state = live[b]
            if state is None:
                state = self._branches[key] = _Branch(self.step, mod[b : b + 1])
            if b not in rows:
                state.acc = 0.0  # a first or last step (or threshold 0): computed, the sum restarts
            state.step, state.prev = self.step, mod[b : b + 1]
            if compute[b]:
                state.residual = residual[b : b + 1]
        return h

    def _fbcache(self, model: nn.Module, x: Tensor, inputs: BlockInputs, keys: Sequence[Any],
                 live: list[_Branch | None]) -> Tensor:
        batch = x.shape[0]
        y0 = model.run_blocks(x, inputs, 0, 1)
        r0 = y0 - x
        compute = [True] * batch
        rows = [b for b in range(batch) if live[b] is not None and self.threshold > 0]
        metrics = self._decide(rows, r0, [live[b].prev for b in rows])  # type: ignore[union-attr]
        for b, metric in zip(rows, metrics, strict=True):
            compute[b] = metric > self.threshold
        self._log(keys, rows, metrics, compute)
        y, tail = self._run(y0, compute, live, lambda ys, ins: model.run_blocks(ys, ins, 1), inputs)
        for b, key in enumerate(keys):
            state = live[b]
            if state is None:
                state = self._branches[key] = _Branch(self.step, r0[b : b + 1])
            state.step = self.step
            if compute[b]:
                state.prev, state.residual = r0[b : b + 1], tail[b : b + 1]
        return model.final_norm(y, inputs.temb)

    def _run(self, x: Tensor, compute: list[bool], live: list[_Branch | None], stack: Any,
             inputs: BlockInputs) -> tuple[Tensor, Tensor]:
        """``stack(x, inputs)`` for the rows to compute, ``x + residual`` for the others -> (output, output - x)
        (the second is only meaningful on computed rows)."""
        batch = x.shape[0]
        todo = [b for b in range(batch) if compute[b]]
        if len(todo) == batch:
            out = stack(x, inputs)  # the plain forward's arithmetic, on the plain forward's batch
            return out, out - x
        if todo:
            index = torch.tensor(todo, device=x.device)
            part = stack(x.index_select(0, index), inputs.rows(index))
        rows, j = [], 0
        for b in range(batch):
            if compute[b]:
                rows.append(part[j : j + 1])
                j += 1
            else:
                state = live[b]
                assert state is not None and state.residual is not None
                rows.append(x[b : b + 1] + state.residual)
        out = torch.cat(rows) if batch > 1 else rows[0]
        return out, out - x


def _branch_keys(text: Tensor, tokens: int, perturbed: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Per batch element, what identifies its guidance branch across the steps of a pass: where its text
    embedding row is stored (host metadata only, no sync: the pipeline slices every step's text from one
    ``[negative, positive, positive]`` tensor, so each branch has its own row), the local token count and what
    STG perturbs in it (:meth:`StepCache._perturbations`)."""
    return [(text.data_ptr() + b * text.stride(0) * text.element_size(), tokens, perturbed[b])
            for b in range(text.shape[0])]


def innermost(transformer: nn.Module) -> nn.Module:
    """The ``LTXVideoTransformer`` inside wrappers that keep it as ``.module`` (parallel, compile)."""
    model = transformer
    while isinstance(model._modules.get("module"), nn.Module):
        model = model._modules["module"]  # type: ignore[assignment]
    if not callable(getattr(model, "prepare", None)):
        raise TypeError(f"{type(transformer).__name__} is not an LTX-Video transformer: a step cache needs one")
    return model


@contextmanager
def attached(transformer: nn.Module, mode: str, threshold: float, steps: int) -> Iterator[StepCache | None]:
    """``transformer`` (an ``LTXVideoTransformer`` or a wrapper of one, e.g. ``ParallelTransformer``) with a step
    cache for one pass of ``steps`` steps; each call of ``transformer`` is one step. Yields the
    :class:`StepCache` (``None`` for ``mode="none"``, which changes nothing). On a normal exit under a
    parallel wrapper, the counts are summed over its processes (a collective every rank makes)."""
    if mode == "none":
        yield None
        return
    if mode not in ("teacache", "fbcache"):
        raise ValueError(f"unknown step cache {mode!r} (use none, teacache or fbcache)")
    model = innermost(transformer)
    if "forward" in model.__dict__:
        raise RuntimeError("this transformer already has a step cache attached")
    sums = getattr(transformer, "token_sums", None)
    degree = getattr(transformer, "sequence_degree", None)
    cache = StepCache(mode, float(threshold), steps, token_sums=sums or _local_sums,
                      share=(lambda: 1.0 / degree()) if degree is not None else None)
    hook = transformer.register_forward_pre_hook(lambda *_: cache.begin_step())

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        return cache.forward(model, *args, **kwargs)

    model.forward = forward
    model.__dict__["step_cache"] = cache  # for reset() by code that only holds the transformer
    try:
        yield cache
    finally:
        hook.remove()
        del model.__dict__["forward"], model.__dict__["step_cache"]
        cache._branches.clear()  # the cached tensors are not needed after the pass
        cache._masks.clear()
    world_sum = getattr(transformer, "world_sum", None)
    if world_sum is not None:
        cache.calls, cache.skipped = world_sum([cache.calls, cache.skipped])


def reset(transformer: nn.Module) -> bool:
    """Start the cache attached to ``transformer`` afresh (a long video's next window inside one pass: its
    tokens are not the previous window's); False when none is attached."""
    cache = innermost(transformer).__dict__.get("step_cache")
    if cache is None:
        return False
    cache.reset()
    return True


@dataclass
class Tally:
    """Branch evaluations over a whole generation (every pass): what the record's ``cache`` entry counts, and
    each cached pass's :attr:`StepCache.history`."""

    calls: int = 0
    skipped: int = 0
    histories: list[dict[Any, list[tuple[int, float | None, bool]]]] = field(default_factory=list)

    def add(self, cache: StepCache | None) -> None:
        if cache is not None:
            self.calls += round(cache.calls)
            self.skipped += round(cache.skipped)
            self.histories.append(cache.history)

    def record(self, mode: str) -> dict[str, int | None]:
        """``{"calls", "skipped"}`` for the record (``calls`` None without a cache: nothing counted them)."""
        return {"calls": None if mode == "none" else self.calls, "skipped": self.skipped}


__all__ = ["TEACACHE_LTX_COEFFICIENTS", "StepCache", "Tally", "attached", "innermost", "reset", "teacache_rescale"]
