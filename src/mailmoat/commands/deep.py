"""`mailmoat train-deep`: retrain the tier-2 head (see mailmoat.ml.deep.train)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-deep")
    def train_deep(
        corpus: str = typer.Option("/tmp/corpus", help="folder with index-*.tsv files"),
        out: str = typer.Option("src/mailmoat/data/deep/head.npz", help="head file to write"),
        per_cell: int = typer.Option(700, help="messages sampled per (corpus, label)"),
        max_tokens: int = typer.Option(64, help="word pieces the encoder reads"),
        engine: str = typer.Option("onnx-int8", help="engine whose embeddings the head learns: "
                                   "onnx-int8, onnx-fp32 or numpy"),
        cache: str = typer.Option("/tmp/mldeep-cache", help="embedding cache folder"),
        cached_only: bool = typer.Option(False, help="use only messages already embedded"),
    ) -> None:
        """Train the deep model's head on a labelled corpus (grouped split, cached embeddings)."""
        from mailmoat.ml.deep.train import main

        args = ["--corpus", corpus, "--out", out, "--per-cell", str(per_cell),
                "--max-tokens", str(max_tokens), "--engine", engine, "--cache", cache]
        if cached_only:
            args.append("--cached-only")
        raise typer.Exit(main(args))
