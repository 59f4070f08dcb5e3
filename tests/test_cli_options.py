"""Options built from config dataclasses (cli_options.py) and the part-file store (parts.py); the retry loop
(llm/ask.py) is tested against the fake provider in test_llm_failures.py."""

from dataclasses import dataclass, field

import pandas as pd
import typer
from typer.testing import CliRunner

from interp_eval.artifacts import RunDir
from interp_eval.catalog import EXPLAIN_PARTS, EXPLANATIONS
from interp_eval.cli_options import LLMOptions, config_options
from interp_eval.config_fields import NOT_AN_OPTION, field_docs, flags
from interp_eval.parts import PartedTable


@dataclass(frozen=True)
class _Demo:
    window_count: int = 3
    """Windows per latent."""
    names: tuple[str, ...] | None = field(default=None, metadata=flags("--name", "-n"))
    """Only these (repeatable)."""
    size: int | None = field(default=None, metadata=flags("--size", parser=lambda v: None if v == "all" else int(v)))
    """A number or all."""
    strict: bool = False
    """Fail early."""
    internal: int = field(default=7, metadata=NOT_AN_OPTION)
    """Set by the code."""


def _app(seen: list):
    @config_options
    def cmd(tag: str = typer.Option("x", "--tag"), *, cfg: _Demo, llm: LLMOptions) -> None:
        seen.append((tag, cfg, llm))

    app = typer.Typer()
    app.command()(cmd)
    return app


def test_field_docstrings_are_the_help_and_fields_the_options():
    assert field_docs(_Demo) == {"window_count": "Windows per latent.", "names": "Only these (repeatable).",
                                 "size": "A number or all.", "strict": "Fail early.", "internal": "Set by the code."}
    out = CliRunner().invoke(_app([]), ["--help"], terminal_width=200).output
    for text in ("--window-count", "Windows per latent.", "--name", "-n", "--size", "--strict", "--no-strict", "--model",
                 "--llm-cache", "--dry-run"):
        assert text in out, text
    assert "--internal" not in out


def test_parsed_options_build_the_configs():
    seen = []
    res = CliRunner().invoke(_app(seen), ["--tag", "t", "--window-count", "5", "-n", "a", "--name", "b", "--size", "all",
                                          "--strict", "--model", "claude", "--llm-cache", "c.sqlite", "--dry-run"])
    assert res.exit_code == 0, res.output
    tag, cfg, llm = seen[0]
    assert tag == "t" and cfg == _Demo(window_count=5, names=("a", "b"), size=None, strict=True)
    assert llm.dry_run and llm.config().model == "claude" and str(llm.config().cache_path) == "c.sqlite"
    CliRunner().invoke(_app(seen), ["--size", "4"])
    assert seen[1][1] == _Demo(size=4) and seen[1][2] == LLMOptions()


def test_parted_table_keeps_the_newest_rows_of_each_key(tmp_path):
    rd = RunDir(tmp_path)
    store = PartedTable(rd, EXPLANATIONS, ("coder", "latent", "explainer"), EXPLAIN_PARTS)
    row = dict(coder="c", explainer="llm", explainer_model="m", prompt_version="v", n_windows=1, parse_ok=True, failure=None,
               attempts=1, raw_answer=None, mine_config=None)
    store.add([{**row, "latent": 0, "explanation": "old"}, {**row, "latent": 1, "explanation": "one"}])
    store.add([{**row, "latent": 0, "explanation": "new"}])
    assert store.has_parts() and not rd.has(EXPLANATIONS)
    merged = store.read()
    assert dict(zip(merged["latent"], merged["explanation"])) == {0: "new", 1: "one"}
    store.write(merged)
    assert not store.has_parts() and not rd.path(EXPLAIN_PARTS).exists()
    pd.testing.assert_frame_equal(store.read(), merged)
