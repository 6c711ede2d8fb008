"""``--model`` / ``--text-encoder`` / ``--upsampler`` -> :func:`ltxcli.spec.resolve_spec`, its errors as usage
errors naming the option, and the automatic download of registry weights rendered on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import EXIT_USAGE, CliError, Output

if TYPE_CHECKING:
    from ltxcli.spec import ModelSpec, Need

MODEL_ENV = "LTX_MODEL"
WEIGHTS_DIR_ENV = "LTX_WEIGHTS_DIR"
OPTIONS = {"model": "--model", "text_encoder": "--text-encoder", "upsampler": "--upsampler"}


def registry() -> Any:
    from ltxcli import weights

    return weights.load_registry()


def resolve(model: str | None, *, text_encoder: str | None = None, upsampler: str | None = None,
            weights_dir: str | None = None, need: Need = "generate", loras: list[Any] | None = None,
            temporal_upsampler: str | None = None) -> ModelSpec:
    """:func:`~ltxcli.spec.resolve_spec`, a name or path that resolves to nothing a usage error (exit 2) naming the
    option (an unknown name's did-you-mean error and a broken header keep their own exit codes)."""
    from ltxcli.spec import SpecError, resolve_spec

    try:
        return resolve_spec(model, text_encoder=text_encoder, upsampler=upsampler, weights_dir=weights_dir,
                            registry=registry(), need=need, loras=loras, temporal_upsampler=temporal_upsampler)
    except SpecError as e:
        raise CliError(f"{OPTIONS[e.argument]} {e}", EXIT_USAGE) from None


def ensure_downloaded(names: list[str], *, weights_dir: str | None, out: Output) -> None:
    """:func:`ltxcli.spec.ensure_weights` with a ``downloading``/``verifying`` line and progress bars per pull
    (offline and not on disk: exit 3)."""
    from ltxcli.spec import FetchStarted, ensure_weights

    from .progress import WeightsProgress

    bars: WeightsProgress | None = None  # the bars of the pull under way (the line is printed between pulls)

    def on_event(event: object) -> None:
        nonlocal bars
        if isinstance(event, FetchStarted):
            if bars is not None:
                bars.__exit__(None, None, None)
            out.info(f"{event.action} {event.name} in {event.location}")
            bars = WeightsProgress(out).__enter__()
        elif bars is not None:
            bars(event)  # type: ignore[arg-type]  # a weights.Event

    try:
        ensure_weights(names, weights_dir=weights_dir, registry=registry(), on_event=on_event)
    finally:
        if bars is not None:
            bars.__exit__(None, None, None)
