"""MkDocs hook: the reference pages are written from the code at build time, so they cannot drift
from it. `docs/cli.md` gets every sub-command's help from the CLI's own argparse parser;
`docs/parameters.md` gets the default `params.yaml`, comments and all. Each page holds its prose
and a marker line that this hook replaces."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI_MARKER = "<!-- the sub-commands' help, written by docs/hooks/cli_reference.py -->"
PARAMS_MARKER = "<!-- params.yaml, written by docs/hooks/cli_reference.py -->"


def _help(parser: argparse.ArgumentParser) -> str:
    # a fixed width, so the page is the same on every machine and terminal
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=88)
    return parser.format_help()


def cli_reference() -> str:
    from multimix.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["## multimix\n", "```text\n" + _help(parser) + "```\n"]
    for name, command in sub.choices.items():
        parts += [f"## multimix {name}\n", "```text\n" + _help(command) + "```\n"]
    return "\n".join(parts)


def params_reference() -> str:
    return "```yaml\n" + (ROOT / "params.yaml").read_text() + "```\n"


PAGES = {"cli.md": (CLI_MARKER, cli_reference), "parameters.md": (PARAMS_MARKER, params_reference)}


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri in PAGES:
        marker, write = PAGES[page.file.src_uri]
        if marker not in markdown:
            raise ValueError(f"docs/{page.file.src_uri}: the marker line {marker!r} is missing")
        return markdown.replace(marker, write())
    return markdown
