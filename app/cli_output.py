"""How the CLI commands print rows: a plain aligned table, or JSON."""
from __future__ import annotations

import json
from typing import Any, Sequence

import click


def echo_rows(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Print rows as JSON (every key) or as a table of `columns` ("-" for empty)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [[str(r[c]) if r[c] is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for t in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
