"""`mailmoat train`, `mailmoat learn`, `mailmoat evaluate`: build, teach and measure the model."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from mailmoat.errors import MailmoatError


def _samples(corpus: Path | None, ham: list[Path], spam: list[Path], phish: list[Path],
             corpora: str | None = None):  # type: ignore[no-untyped-def]
    from mailmoat.ml.corpus import load_index, load_labelled

    samples = []
    if corpus is not None:
        wanted = [c.strip() for c in corpora.split(",")] if corpora else None
        samples += load_index(corpus, wanted)
    srcs = {k: [str(p) for p in v] for k, v in (("ham", ham), ("spam", spam), ("phish", phish)) if v}
    if srcs:
        samples += load_labelled(srcs)
    if not samples:
        raise typer.BadParameter("give --corpus DIR or at least one of --ham/--spam/--phish")
    return samples


def _progress(total: int, what: str):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    task = prog.add_task(what, total=total)
    return prog, (lambda n: prog.advance(task, n))


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        corpus: Path | None = typer.Option(None, help="folder with index-*.tsv (an extracted shared corpus)"),
        ham: list[Path] = typer.Option([], help="folder or mbox of ham (repeatable)"),
        spam: list[Path] = typer.Option([], help="folder or mbox of spam (repeatable)"),
        phish: list[Path] = typer.Option([], help="folder or mbox of phishing (repeatable)"),
        corpora: str | None = typer.Option(None, help="only these corpora of --corpus, comma-separated"),
        out: Path = typer.Option(Path("content-model.npz"), help="where to write the model"),
        validate: bool = typer.Option(True, help="report on a grouped 20% hold-out first"),
        workers: int = typer.Option(1, help="processes that parse mail"),
        alpha: float = typer.Option(1e-6, help="L2 regularisation strength"),
        cache: Path | None = typer.Option(None, help="token cache folder (default /tmp/mlfast-cache; 'none' for no cache)"),
    ) -> None:
        """Train the tier-1 content model and print a validation report."""
        from mailmoat.ml.evaluate import format_table, format_tradeoff
        from mailmoat.ml.train import DEFAULT_CACHE, TrainParams
        from mailmoat.ml.train import train as do_train

        try:
            samples = _samples(corpus, ham, spam, phish, corpora)
        except MailmoatError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        cache_dir = None if cache is not None and str(cache) == "none" else (cache or DEFAULT_CACHE)
        counts: dict[str, int] = {}
        for s in samples:
            counts[s.label] = counts.get(s.label, 0) + 1
        typer.echo("training on " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        prog, advance = _progress(len(samples), "parsing + features")
        with prog:
            model, report = do_train(samples, TrainParams(alpha=alpha), validate=validate, workers=workers,
                                     cache_dir=cache_dir, progress=advance,
                                     status=lambda m: prog.console.print(m))
        model.meta["command"] = "mailmoat " + " ".join(sys.argv[1:])
        path = model.save(out)
        if report is not None:
            typer.echo("\nValidation on a grouped 20% hold-out (default thresholds 5/10/15):\n")
            typer.echo(format_table(report))
            typer.echo("\nThreshold trade-off:\n")
            typer.echo(format_tradeoff(report["tradeoff"]))
        typer.echo(f"\nmodel written to {path} ({path.stat().st_size / 1e6:.1f} MB)")

    @app.command()
    def learn(
        files: list[Path] = typer.Argument(..., help=".eml files (or mbox) to learn from"),
        ham: bool = typer.Option(False, "--ham", help="the files are legitimate mail"),
        spam: bool = typer.Option(False, "--spam", help="the files are spam"),
        phish: bool = typer.Option(False, "--phish", help="the files are phishing"),
        domain: str | None = typer.Option(None, help="learn for this recipient domain only"),
        actor: str = typer.Option("cli", help="who teaches (recorded in the audit)"),
        config: Path | None = typer.Option(None, "--config", "-c", help="mailmoat.toml"),
    ) -> None:
        """Teach the content model (online) that FILES are ham, spam or phishing."""
        from mailmoat.config import load_config
        from mailmoat.ml.corpus import load_labelled, read_sample
        from mailmoat.ml.learn import audit_path
        from mailmoat.ml.learn import learn as do_learn

        chosen = [n for n, f in (("ham", ham), ("spam", spam), ("phish", phish)) if f]
        if len(chosen) != 1:
            typer.echo("error: give exactly one of --ham, --spam, --phish", err=True)
            raise typer.Exit(2)
        label = chosen[0]
        try:
            cfg = load_config(config)
            samples = load_labelled({label: [str(f) for f in files]})
            for s in samples:
                r = do_learn(cfg, read_sample(s), label, actor=actor, domain=domain)
                typer.echo(f"{s.path}: P({label}) {r.before[label]:.3f} -> {r.after[label]:.3f} "
                           f"({r.steps} steps; sha256 {r.sha256})")
                if r.taught:
                    typer.echo("  taught: " + "; ".join(f"{k} {w}" for k, w, _ in r.taught))
        except (MailmoatError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        typer.echo(f"learned {len(samples)} message(s) as {label}; audit: {audit_path(cfg)} "
                   "(`mailmoat unlearn SHA256` takes a lesson back)")

    @app.command()
    def unlearn(
        sha256: list[str] = typer.Argument(None, help="sha256 of a learned message, as `learn` "
                                           "printed it and the audit records it"),
        taught_by: str | None = typer.Option(None, help="only (or all) lessons this actor taught"),
        taught_before: str | None = typer.Option(None, help="only (or all) lessons taught before "
                                                 "this UTC date or time (ISO 8601)"),
        domain: str | None = typer.Option(None, help="the lessons' recipient domain (per-domain lessons)"),
        actor: str = typer.Option("cli", help="who takes them back (recorded in the audit)"),
        config: Path | None = typer.Option(None, "--config", "-c", help="mailmoat.toml"),
    ) -> None:
        """Take back what `learn` (or the console's report/release) taught: the lessons about
        the messages SHA256..., or all taught by an actor, or before a time (criteria
        combine). Their weight changes and lesson-memory entries go; the audit records it."""
        from mailmoat.config import load_config
        from mailmoat.ml.learn import LessonFilter
        from mailmoat.ml.learn import unlearn as do_unlearn

        try:
            cfg = load_config(config)
            filters = [LessonFilter(sha, taught_by, taught_before) for sha in sha256 or []] \
                or [LessonFilter(None, taught_by, taught_before)]
            for f in filters:
                r = do_unlearn(cfg, f, actor=actor, domain=domain)
                typer.echo(f"lessons {f.describe()}: {r.changes} weight change(s) over {r.rows} "
                           f"row(s) taken back, {r.lessons} lesson-memory entr"
                           f"{'y' if r.lessons == 1 else 'ies'} dropped "
                           f"({len(r.messages)} message(s))")
        except (MailmoatError, ValueError, LookupError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)

    @app.command()
    def evaluate(
        corpus: Path | None = typer.Option(None, help="folder with index-*.tsv"),
        ham: list[Path] = typer.Option([], help="folder or mbox of ham (repeatable)"),
        spam: list[Path] = typer.Option([], help="folder or mbox of spam (repeatable)"),
        phish: list[Path] = typer.Option([], help="folder or mbox of phishing (repeatable)"),
        corpora: str | None = typer.Option(None, help="only these corpora, comma-separated"),
        config: Path | None = typer.Option(None, "--config", "-c", help="mailmoat.toml"),
        tier1_only: bool = typer.Option(False, "--tier1-only", help="only the content model"),
        strip_path_headers: bool = typer.Option(False, help="remove Received/X-*/ARC-*/… first"),
        limit: int = typer.Option(0, help="at most this many messages (a seeded sample)"),
        json_out: Path | None = typer.Option(None, "--json", help="also write the results as JSON"),
    ) -> None:
        """Measure verdicts on labelled mail with the full local scanner (or tier 1 only)."""
        import random

        from mailmoat.config import load_config
        from mailmoat.ml.evaluate import format_table, format_tradeoff, run_scanner_eval
        from mailmoat.scan.base import BuildContext
        from mailmoat.scan.engine import Scanner

        try:
            cfg = load_config(config)
            samples = _samples(corpus, ham, spam, phish, corpora)
        except MailmoatError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        if limit and len(samples) > limit:
            samples = random.Random(0).sample(samples, limit)
        if tier1_only:
            from mailmoat.scan.content import build as build_content
            from mailmoat.scan.pipeline import Pipeline

            ctx = BuildContext(config=cfg, network=False)
            scanner = Scanner(ctx, Pipeline(build_content(ctx), cfg.policy.scores))
        else:
            scanner = Scanner(BuildContext(config=cfg, network=False))
        names = ", ".join(c.name for c in scanner.pipeline.checks)
        typer.echo(f"evaluating {len(samples)} messages with checks: {names}")
        prog, advance = _progress(len(samples), "scanning")
        t0 = time.perf_counter()
        with prog:
            res = run_scanner_eval(samples, scanner, strip=strip_path_headers, progress=advance)
        wall = time.perf_counter() - t0
        t = res["thresholds"]
        typer.echo(f"\nthresholds: tag {t[0]:g}, quarantine {t[1]:g}, reject {t[2]:g}; "
                   f"a false positive is ham with any action other than accept\n")
        typer.echo(format_table(res))
        typer.echo("\nThreshold trade-off (flag when the score reaches):\n")
        typer.echo(format_tradeoff(res["tradeoff"]))
        mps = res["messages_per_second"]
        typer.echo(f"\n{mps:.0f} messages/second (parse + scan, one process; "
                   f"{len(samples) / wall:.0f}/s including reading files)" if mps else "")
        if json_out:
            json_out.write_text(json.dumps(res, indent=2), encoding="utf-8")
