"""The `mailmoat` command. Each area registers its own sub-commands in `commands/<area>.py`,
so the CLI grows without one file that every change has to touch."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES: tuple[str, ...] = (
    "mailmoat.commands.serve",       # serve: SMTP intake, delivery workers, web console
    "mailmoat.commands.doctor",      # doctor: is every configured component there?
    "mailmoat.commands.scan",        # scan: offline scanning of .eml, folders and mbox
    "mailmoat.commands.quarantine",  # quarantine list/show/release/delete/purge
    "mailmoat.commands.auth",        # dkim keygen
    "mailmoat.commands.ml",          # train, learn, evaluate
    "mailmoat.commands.web",         # user add/list, token
    "mailmoat.commands.deep",        # train-deep: the tier-2 head
    "mailmoat.commands.account",     # account list/show/suspend/release, incidents
    "mailmoat.commands.recall",      # recall [--restore]: delivered mail out of mailboxes
    "mailmoat.commands.intel",       # intel feeds/poll/list/hunt: threat-intelligence feeds
)

app = typer.Typer(help="mailmoat: an email security gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.command()
def version() -> None:
    """Print the version."""
    from mailmoat import __version__

    typer.echo(__version__)


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def main() -> None:
    app()
