"""``hydra embeddings install``: put the offline embedding model where Hydra reads it."""

from __future__ import annotations

from pathlib import Path

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, print_json
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="The offline embedding model behind semantic search.", no_args_is_help=True)


@app.command("install")
def install(
    source: Path = typer.Option(None, "--source", help="A folder holding model.onnx and tokenizer.json to copy."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Install all-MiniLM-L6-v2 (ONNX) into HYDRA_EMBEDDING_MODEL_DIR: copied from --source, else
    downloaded the way Chroma does. Does nothing when it is already there."""
    from hydra_sandbox.model_install import install_model

    result = install_model(load_settings().embedding_model_dir, source=source)
    if as_json:
        print_json(result)
        return
    said = {"present": "already in", "copied": "copied into", "downloaded": "downloaded into"}[result.how]
    origin = "" if result.how == "present" else f" from {result.source}"
    console.print(f"embedding model {said} {result.directory}{origin}", markup=False, highlight=False)
