"""What a config dataclass field says about its command-line option, without importing the CLI.

Stage configs live in the stage modules, which must not depend on Typer; they mark their fields
with `flags(...)` or `NOT_AN_OPTION` from here, and document each field with a docstring (the
string literal right below it, as sparsify and simple_parsing read it). cli_options.py turns
the fields into Typer options.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
from typing import Any, Callable

FLAGS, PARSER, HELP, HIDDEN = "cli_flags", "cli_parser", "cli_help", "cli_hidden"
NOT_AN_OPTION = types.MappingProxyType({HIDDEN: True})


def flags(*names: str, parser: Callable[[str], Any] | None = None, help: Callable[[], str] | None = None) -> dict:
    """Field metadata: the option's names (when not `--field-name`); a parser of its text when the field is
    not typed as the user writes it (e.g. `all` or a number); `help()` in place of the docstring when the
    text depends on the installation (e.g. the registered scorers)."""
    return {FLAGS: names, PARSER: parser, HELP: help}


def count_or_all(value: str) -> int | None:
    """The text of a `--latents`-like option: `all` -> None (every one); a positive integer otherwise."""
    from .errors import UserError

    if value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise UserError(f"--latents {value}: give a positive number of latents or 'all'")
    return int(value)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of a dataclass and its dataclass bases, read from the class source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


__all__ = ["NOT_AN_OPTION", "field_docs", "flags"]
