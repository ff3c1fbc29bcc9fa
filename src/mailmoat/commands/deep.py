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

    @app.command("finetune-deep")
    def finetune_deep(
        out: str = typer.Option(..., help="head file to write; point the deep section's "
                                "head_path at it"),
        ham: list[str] = typer.Option([], help="folder or mbox of legitimate mail (repeatable)"),
        spam: list[str] = typer.Option([], help="folder or mbox of spam (repeatable)"),
        phish: list[str] = typer.Option([], help="folder or mbox of phishing (repeatable)"),
        corpus: str = typer.Option("", help="instead of folders: a folder with index-*.tsv"),
        epochs: int = typer.Option(3, help="passes over the training mail"),
        validate: bool = typer.Option(True, help="first train on four fifths (by group) and "
                                      "report on the rest, then train on everything"),
        workers: int = typer.Option(2, help="processes that parse the mail"),
    ) -> None:
        """Fine-tune the deep model (tier 2) on labelled mail: low-rank adapters of the
        encoder and a new head, written as one head file (needs the `finetune` extra)."""
        import json
        from pathlib import Path

        from mailmoat.ml.deep.finetune import finetune

        if not corpus and not (ham and (spam or phish)):
            raise typer.BadParameter("give --ham and --spam/--phish folders, or --corpus")
        sources = {k: v for k, v in (("ham", ham), ("spam", spam), ("phish", phish)) if v}
        meta = finetune(Path(out), corpus=Path(corpus) if corpus else None,
                        sources=None if corpus else sources, epochs=epochs, validate=validate,
                        workers=workers)
        typer.echo(json.dumps({k: meta[k] for k in ("train_messages", "held_out", "engine_check")
                               if k in meta}, indent=2))
        typer.echo(f"wrote {out}; set [deep] head_path = \"{out}\" to use it")

