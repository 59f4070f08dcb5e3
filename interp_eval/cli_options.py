"""Command-line options built from config dataclasses, so that adding a stage option is one dataclass field.

A command declares the configs it takes as parameters annotated with their dataclass
(`cfg: MineConfig`); `@config_options` replaces each such parameter by one Typer option per field
and builds the dataclass from the parsed values when the command runs. Per field:

- the option is `--field-name`; `flags(...)` in the field's metadata names it otherwise (e.g.
  `--coder` for a `coders` field), with any aliases;
- its help text is the field's docstring: the string literal right below the field, as sparsify
  and simple_parsing read it;
- `X | None` gives an option that may be left out, `tuple[X, ...]` a repeatable one, `bool` an
  on/off switch (`--name/--no-name` unless `flags` names it otherwise);
- `flags(parser=f)` reads the value as text and converts it with `f` (e.g. `all` or a number);
- `NOT_AN_OPTION` keeps a field off the command line (the code sets it, not the user).

The field markers live in config_fields.py, which the stage modules import without importing Typer.

`LLMOptions` is the one set of options of every command that calls an LLM (explain, score, reproduce).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import typer

from .config_fields import FLAGS, HELP, HIDDEN, PARSER, field_docs, flags
from .llm import LLMConfig

@dataclass(frozen=True)
class _Option:
    """One field of one config as a Typer parameter."""

    config: str  # the command parameter the field belongs to
    name: str
    annotation: Any
    default: Any
    repeated: bool
    parser: Callable[[str], Any] | None

    def value(self, raw: Any) -> Any:
        if self.parser is not None and raw is not None:
            return self.parser(raw)
        if self.repeated:
            return tuple(raw) if raw else (None if self.default is None else ())
        return raw


def _option(config: str, cls: type, f: dataclasses.Field, hint: Any) -> tuple[_Option, typer.models.OptionInfo]:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    repeated = typing.get_origin(inner) is tuple
    parser = f.metadata.get(PARSER)
    if parser is not None:
        annotation = Optional[str]
    elif repeated:
        annotation = Optional[List[typing.get_args(inner)[0]]] if optional else List[typing.get_args(inner)[0]]
    else:
        annotation = Optional[inner] if optional else inner
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    names = f.metadata.get(FLAGS) or ()
    if not names:
        dashed = "--" + f.name.replace("_", "-")
        names = (f"{dashed}/--no-{dashed[2:]}",) if inner is bool else (dashed,)
    shown = list(default) if repeated and default is not None else default
    help_text = f.metadata[HELP]() if f.metadata.get(HELP) else field_docs(cls).get(f.name)
    info = typer.Option(shown, *names, help=help_text)
    return _Option(config, f.name, annotation, default, repeated, parser), info


def config_options(fn: Callable) -> Callable:
    """Expand every parameter of `fn` annotated with a dataclass into one option per field (see the module)."""
    hints = typing.get_type_hints(fn)
    params: list[inspect.Parameter] = []
    options: list[_Option] = []
    configs: dict[str, type] = {}
    for p in inspect.signature(fn).parameters.values():
        cls = hints.get(p.name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
            continue
        configs[p.name] = cls
        field_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.metadata.get(HIDDEN):
                continue
            opt, info = _option(p.name, cls, f, field_hints[f.name])
            options.append(opt)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=opt.annotation))
    names = [p.name for p in params]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TypeError(f"{fn.__name__}: option(s) {', '.join(clash)} come from two configs or parameters")

    @functools.wraps(fn)
    def command(**kw: Any) -> Any:
        values: dict[str, dict[str, Any]] = {name: {} for name in configs}
        for opt in options:
            values[opt.config][opt.name] = opt.value(kw.pop(opt.name))
        return fn(**kw, **{name: configs[name](**v) for name, v in values.items()})

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def run_option(help: str) -> Any:
    """The run directory option of every command (under torchrun write --run-dir: torchrun claims --run)."""
    return typer.Option(..., "--run", "--run-dir", "-r", help=help)


@dataclass(frozen=True)
class LLMOptions:
    """The options of every command that calls an LLM (explain, score, reproduce); `config()` is the LLMConfig."""

    model: str | None = None
    """claude (alias), any Claude or OpenAI model id, a model on --base-url, 'local' or a .gguf path. Default: the
    offline local model."""
    base_url: str | None = None
    """An OpenAI-compatible server (vLLM, llama.cpp server, Ollama, OpenRouter)."""
    backend: str | None = None
    """Force anthropic | openai | local (normally read from --model)."""
    concurrency: int = LLMConfig.concurrency
    """Requests in flight at once."""
    rpm: float | None = None
    """Requests-per-minute limit."""
    tpm: float | None = None
    """Tokens-per-minute limit."""
    timeout: float = LLMConfig.timeout
    """Seconds one API request may take; a slower one is cut off and tried again (hosted models only)."""
    max_attempts: int = LLMConfig.max_attempts
    """Tries per request (rate limits, 5xx, timeouts) before it counts as a provider error; a re-run asks those
    again."""
    batch: bool = field(default=LLMConfig.batch, metadata=flags("--batch"))
    """Use the provider's batch API (half price; resumable)."""
    dry_run: bool = field(default=False, metadata=flags("--dry-run"))
    """Print calls, tokens and dollars; send nothing."""
    llm_cache: str | None = None
    """SQLite response cache (default: the user cache dir)."""

    def config(self) -> LLMConfig:
        return LLMConfig(model=self.model, base_url=self.base_url, backend=self.backend, concurrency=self.concurrency,
                         rpm=self.rpm, tpm=self.tpm, timeout=self.timeout, max_attempts=self.max_attempts, batch=self.batch,
                         cache_path=self.llm_cache)


__all__ = ["LLMOptions", "config_options", "run_option"]
