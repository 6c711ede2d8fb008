"""``ltx weights list|pull|verify|path|rm``: the weights.toml registry and the local copies."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import Output, exit_codes_epilog, guarded, human_bytes
from .resolve import WEIGHTS_DIR_ENV, registry

app = typer.Typer(
    help="List, download, verify and remove the weights named in weights.toml.",
    epilog=exit_codes_epilog(), no_args_is_help=True,
)

WeightsDirOpt = Annotated[str | None, typer.Option(
    envvar=WEIGHTS_DIR_ENV, show_default=False,
    help="Plain folder for weights instead of the Hugging Face cache.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per entry on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or messages on stderr.")]
NamesArg = Annotated[list[str] | None, typer.Argument(show_default=False, help="weights.toml names.")]


@app.command("list")
@guarded
def list_(weights_dir: WeightsDirOpt = None, json_: JsonOpt = False) -> None:
    """Every known entry with its state (downloaded, partial, missing, builtin) and size on disk. No network."""
    out = Output(json_mode=json_)
    reg = registry()
    from ltxcli import weights

    rows = [weights.status_record(e.name, weights_dir=weights_dir, registry=reg) for e in reg]
    if json_:
        for row in rows:
            out.json(row)
        return
    import shutil
    import sys

    # on a terminal each description is cut to its width
    room = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in weights.table_lines(rows, room):
        out.data(line)
    if rows:
        out.info(f"* default model; weights location: {rows[0]['location']} ({rows[0]['location_kind']})")


@app.command()
@guarded
def pull(
    names: NamesArg = None,
    deps: Annotated[bool, typer.Option(help="Also pull what each model needs (text encoder, upsampler).")] = True,
    with_enhancer: Annotated[bool, typer.Option(help="Also pull its prompt enhancer models (LLM, captioner).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be downloaded, and where.")] = False,
    weights_dir: WeightsDirOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download and verify weights (default: the default model and what it needs)."""
    from ltxcli import weights
    from ltxcli.spec import names_to_pull

    from .progress import WeightsProgress

    out = Output(json_mode=json_, quiet=quiet)
    reg = registry()
    for name in names_to_pull(names, deps=deps, with_enhancer=with_enhancer, registry=reg):
        entry = reg[name]
        if entry.is_builtin:
            out.info(f"{name} is built in: nothing to download")
            if json_:
                out.json({"name": name, "status": "builtin", "paths": []})
            continue
        if dry_run:
            planned = weights.plan(name, weights_dir=weights_dir, registry=reg)
            todo = sum(p.size or 0 for p in planned if not p.present)
            files = [{"path": p.path, "local_path": str(p.local_path), "size": p.size, "present": p.present}
                     for p in planned]
            if json_:
                out.json({"name": name, "status": "dry-run", "files": files, "download_bytes": todo})
            else:
                for p in planned:
                    mark = "present" if p.present else human_bytes(p.size)
                    out.data(f"{name}\t{p.local_path}\t{mark}")
            continue
        out.info(f"pulling {name} ({entry.repo}) into {weights.weights_location(weights_dir)}")
        with WeightsProgress(out) as bars:
            paths = weights.pull(name, weights_dir=weights_dir, on_event=bars, registry=reg)
        if json_:
            out.json({"name": name, "status": "ok", "paths": [str(p) for p in paths]})
        else:
            for p in paths:
                out.data(str(p))


@app.command()
@guarded
def verify(
    names: NamesArg = None,
    weights_dir: WeightsDirOpt = None,
    json_: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Re-hash downloaded files and compare with the known sha256 (default: everything on disk). Exit 4 on a mismatch."""
    from ltxcli import weights

    from .progress import WeightsProgress

    out = Output(json_mode=json_, quiet=quiet)
    reg = registry()
    todo, unfinished = weights.verify_targets(names, weights_dir=weights_dir, registry=reg)
    for n in unfinished:
        out.info(f"{n} is partly downloaded, not verified: run `ltx weights pull {n}` to finish it")
    if not todo:
        out.info("nothing downloaded to verify")
    for name in todo:
        if reg[name].is_builtin:  # its random weights are made in memory: no file to hash (verify returns none)
            out.info(f"{name} is built in: nothing to verify")
        with WeightsProgress(out) as bars:
            files = weights.verify(name, weights_dir=weights_dir, on_event=bars, registry=reg)
        if json_:
            out.json({"name": name, "status": "builtin" if reg[name].is_builtin else "ok", "files": [
                {"path": f.path, "local_path": str(f.local_path), "digest": f.digest, "source": f.source} for f in files]})
            continue
        for f in files:
            state = f"ok ({f.source})" if f.digest else "unchecked (no known hash)"
            out.data(f"{name}\t{f.path}\t{state}")


@app.command()
@guarded
def path(name: Annotated[str, typer.Argument(help="A weights.toml name.")], weights_dir: WeightsDirOpt = None, json_: JsonOpt = False) -> None:
    """Print the local path of downloaded weights (exit 3 if they are not downloaded)."""
    from ltxcli import weights

    local, out = str(weights.resolve(name, weights_dir=weights_dir, registry=registry())), Output(json_mode=json_)
    out.json({"name": name, "path": local}) if json_ else out.data(local)


@app.command()
@guarded
def rm(
    names: Annotated[list[str], typer.Argument(show_default=False, help="weights.toml names.")],
    weights_dir: WeightsDirOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete the local files of these entries (only theirs: files shared with other entries stay)."""
    from ltxcli import weights

    out, reg = Output(json_mode=json_, quiet=quiet), registry()
    for name in [reg[n].name for n in names]:  # unknown names fail before anything is deleted
        removed = weights.rm(name, weights_dir=weights_dir, registry=reg)
        out.info(f"{name}: removed {len(removed)} file(s)")
        if json_:  # a status as pull's and verify's
            out.json({"name": name, "status": "builtin" if reg[name].is_builtin else "ok",
                      "removed": [str(p) for p in removed]})
        else:
            for p in removed:
                out.data(str(p))
