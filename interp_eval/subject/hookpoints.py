"""Hookpoints: where in the subject model a coder reads its activations, under every common naming scheme.

A hookpoint names one capture site: a module of the base model and a side of it (its input or its output). One
table per model (`site_table`) maps each name to its site:

| site         | ours / sparsify (module path)       | TransformerLens (as SAELens metadata writes it) | tensor                          |
|--------------|-------------------------------------|--------------------------------------------------|---------------------------------|
| resid_pre    | -                                   | blocks.N.hook_resid_pre                          | block N's input                 |
| resid_mid    | -                                   | blocks.N.hook_resid_mid                          | input of the norm before the MLP|
| attn_z       | -                                   | blocks.N.attn.hook_z                             | input of attention's out proj   |
| attn_out     | layers.N.self_attn (attn, attention)| blocks.N.hook_attn_out                           | attention's output              |
| mlp_in       | (layers.N.mlp, input side)          | blocks.N.hook_mlp_in, blocks.N.ln2.hook_normalized| MLP input                      |
| mlp_out      | layers.N.mlp                        | blocks.N.hook_mlp_out                            | MLP output                      |
| resid_post   | layers.N (sparsify's default)       | blocks.N.hook_resid_post                         | block N's output                |

A module path names the module's output unless a coder's metadata says `hook_site: input` (our transcoders read
`layers.N.mlp` on its input side). Families are recognised by their module layout, never by a list of model names:
the blocks are the ModuleList called `layers` (llama, SmolLM2, Mistral, Qwen 2/3, Gemma 2/3, GPT-NeoX) or `h`
(GPT-2); attention is the block's `self_attn`, `attn` or `attention`, its output projection `o_proj`, `c_proj` or
`dense`. Where the family normalises a sublayer's output before adding it to the residual (Gemma 2/3's
`post_attention_layernorm` and `post_feedforward_layernorm`), TransformerLens's hook_attn_out and hook_mlp_out are
that norm's output, as in TransformerLens; our module paths stay the raw module outputs. A model with a parallel
residual (GPT-NeoX's use_parallel_residual) has no resid_mid.

One forward pass captures the input and output of every requested site's module and stops right after the last of
them has run, so the rest of the network and the vocabulary-sized logits are never computed.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import UserError
from .model import SubjectModel

SIDES = ("input", "output")
_BLOCK_LISTS = ("layers", "h")
_ATTENTION = ("self_attn", "attn", "attention")
_ATTN_PROJ = ("o_proj", "c_proj", "dense", "out_proj")
_PRE_MLP_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2")
# where each kind of site sits inside a block, in execution order (for sorting hookpoints)
_RANK = {"resid_pre": 0, "attn_z": 1, "attn_out": 2, "attn_out_normed": 3, "resid_mid": 4, "mlp_in": 5, "mlp_out": 6,
         "mlp_out_normed": 7, "resid_post": 8}


@dataclass(frozen=True)
class Site:
    """One capture site: `side` of the module at `module` (a path under the base model)."""

    module: str
    side: str
    kind: str
    layer: int

    @property
    def order(self) -> tuple[int, int]:
        return self.layer, _RANK[self.kind]


@dataclass(frozen=True)
class Layout:
    """A model family's module layout, read from the model itself."""

    blocks: str  # path of the blocks' ModuleList under the base model
    n_layers: int
    attention: str
    attn_proj: str
    mlp: str
    pre_mlp_norm: str | None  # None: a parallel residual, so no resid_mid
    attn_post_norm: str | None
    mlp_post_norm: str | None


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Module)), None)


def layout(model: nn.Module) -> Layout:
    """The module layout of a transformers causal LM (its base model's blocks, attention, MLP and norms)."""
    base = model.base_model
    for path, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and path.rsplit(".", 1)[-1] in _BLOCK_LISTS and len(mod) and _child(mod[0], _ATTENTION):
            block = mod[0]
            attention = _child(block, _ATTENTION)
            proj = _child(getattr(block, attention), _ATTN_PROJ)
            if proj is None or not isinstance(getattr(block, "mlp", None), nn.Module):
                break
            parallel = bool(getattr(model.config, "use_parallel_residual", False))
            pre_norm = None if parallel else _child(block, _PRE_MLP_NORMS)
            sandwich = hasattr(block, "pre_feedforward_layernorm")  # Gemma 2/3: sublayer outputs are normalised too
            return Layout(
                blocks=path, n_layers=len(mod), attention=attention, attn_proj=proj, mlp="mlp", pre_mlp_norm=pre_norm,
                attn_post_norm="post_attention_layernorm" if sandwich else None,
                mlp_post_norm=_child(block, ("post_feedforward_layernorm",)) if sandwich else None,
            )
    raise UserError(
        f"{type(model).__name__}: model layout not recognised (blocks in a ModuleList `layers` or `h`, each with "
        "self_attn/attn/attention holding o_proj/c_proj/dense, and mlp): hookpoints cannot be placed"
    )


_TABLES: "weakref.WeakKeyDictionary[nn.Module, dict[str, Site]]" = weakref.WeakKeyDictionary()


def site_table(subject: SubjectModel) -> dict[str, Site]:
    """Every valid hookpoint name of `subject` -> its site (built once per model)."""
    if subject.model not in _TABLES:
        _TABLES[subject.model] = _build_table(layout(subject.model))
    return _TABLES[subject.model]


def _build_table(lay: Layout) -> dict[str, Site]:
    table: dict[str, Site] = {}
    for n in range(lay.n_layers):
        block = f"{lay.blocks}.{n}"
        attn, mlp = f"{block}.{lay.attention}", f"{block}.{lay.mlp}"
        tl = f"blocks.{n}"
        attn_out = Site(attn, "output", "attn_out", n)
        mlp_out = Site(mlp, "output", "mlp_out", n)
        entries = {
            f"{tl}.hook_resid_pre": Site(block, "input", "resid_pre", n),
            f"{tl}.attn.hook_z": Site(f"{attn}.{lay.attn_proj}", "input", "attn_z", n),
            attn: attn_out,
        }
        if lay.attn_post_norm:
            attn_out = Site(f"{block}.{lay.attn_post_norm}", "output", "attn_out_normed", n)
            entries[attn_out.module] = attn_out
        entries[f"{tl}.hook_attn_out"] = attn_out
        if lay.pre_mlp_norm:
            entries[f"{tl}.hook_resid_mid"] = Site(f"{block}.{lay.pre_mlp_norm}", "input", "resid_mid", n)
        entries[f"{tl}.hook_mlp_in"] = entries[f"{tl}.ln2.hook_normalized"] = Site(mlp, "input", "mlp_in", n)
        entries[mlp] = mlp_out
        if lay.mlp_post_norm:
            mlp_out = Site(f"{block}.{lay.mlp_post_norm}", "output", "mlp_out_normed", n)
            entries[mlp_out.module] = mlp_out
        entries[f"{tl}.hook_mlp_out"] = mlp_out
        entries[block] = entries[f"{tl}.hook_resid_post"] = Site(block, "output", "resid_post", n)
        table.update(entries)
    return table


def _valid_names(subject: SubjectModel, table: dict[str, Site]) -> str:
    """The valid names of `subject` in one line, with the layer as N."""
    lay = layout(subject.model)
    forms = []
    for name, site in table.items():
        if site.layer == 0:
            form = name.replace(f"{lay.blocks}.0", f"{lay.blocks}.N", 1).replace("blocks.0.", "blocks.N.", 1)
            forms.append(form)
    return f"{', '.join(forms)} (N = 0..{lay.n_layers - 1})"


def resolve_site(subject: SubjectModel, name: str, side: str | None = None) -> Site:
    """The site a hookpoint name names. `side` (a coder's hook_site) picks the input side of a module path; a
    TransformerLens name fixes its own side."""
    table = site_table(subject)
    if name not in table:
        raise UserError(f"unknown hookpoint {name!r} for {subject.name}: valid ones are {_valid_names(subject, table)}")
    site = table[name]
    if side is not None and side not in SIDES:
        raise UserError(f"hookpoint {name}: hook_site {side!r} is not 'input' or 'output'")
    if side and side != site.side and name == site.module:  # e.g. our transcoders: layers.N.mlp on its input side
        flipped = {"mlp_out": "mlp_in", "resid_post": "resid_pre"}.get(site.kind, site.kind)
        site = Site(site.module, side, flipped, site.layer)
    return site


def canonical(subject: SubjectModel, name: str, side: str | None = None) -> tuple[str, Site]:
    """(the name in our naming, its site): the module path where the site is a module's input or output that our
    naming has (blocks.9.hook_mlp_out -> layers.9.mlp, blocks.9.hook_resid_pre -> layers.9 on its input side), else
    the name as given (blocks.9.attn.hook_z), so one site gets one name across coders named in either scheme."""
    site = resolve_site(subject, name, side)
    return (site.module if site.module in site_table(subject) else name), site


def resolve(subject: SubjectModel, hookpoint: str) -> nn.Module:
    """The module a hookpoint name's site is on (validating the name)."""
    return subject.model.base_model.get_submodule(resolve_site(subject, hookpoint).module)


def valid_hookpoints(subject: SubjectModel) -> list[str]:
    """Every valid hookpoint name of `subject`, in execution order."""
    table = site_table(subject)
    return sorted(table, key=lambda n: table[n].order)


def site_dim(subject: SubjectModel, site: Site) -> int:
    """The width of the site's tensor: the model width, or the heads' concatenated width at attention's out proj."""
    if site.kind == "attn_z":
        proj = subject.model.base_model.get_submodule(site.module)
        if isinstance(proj, nn.Linear):
            return int(proj.in_features)
        return int(proj.weight.shape[0])  # GPT-2's Conv1D: weight [in, out]
    return subject.d_model


class _StopForward(Exception):
    pass


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs.get("hidden_states", next(v for v in kwargs.values() if isinstance(v, torch.Tensor)))


def _main(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@dataclass
class Captured:
    """Per requested hookpoint name: the input and output of its site's module, each [batch, seq, d]."""

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def read(self, name: str, side: str) -> torch.Tensor:
        return (self.inputs if side == "input" else self.outputs)[name]


@torch.no_grad()
def capture(subject: SubjectModel, input_ids: torch.Tensor, hookpoints: list[str]) -> Captured:
    """Run the model on `input_ids` and return each hookpoint's module input and output, stopping once every hooked
    module has run (after the last of them)."""
    return _capture_sites(subject, input_ids, {hp: resolve_site(subject, hp) for hp in hookpoints})


def capture_site(subject: SubjectModel, input_ids: torch.Tensor, site: Site) -> torch.Tensor:
    """The tensor at `site` (its module's input or output side) on `input_ids`, [batch, seq, d] in fp32; the forward
    stops once the module has run."""
    return _capture_sites(subject, input_ids, {"site": site}).read("site", site.side)


@torch.no_grad()
def _capture_sites(subject: SubjectModel, input_ids: torch.Tensor, sites: dict[str, Site]) -> Captured:
    """capture() of sites under any keys: each key's module input and output, the forward stopped after the last."""
    by_module: dict[str, list[str]] = {}
    for hp, site in sites.items():
        by_module.setdefault(site.module, []).append(hp)
    out = Captured()
    done: set[str] = set()
    handles = []

    def make_hook(module: str) -> Callable:
        def hook(_module, args, kwargs, output):
            x, y = _first_tensor(args, kwargs).float(), _main(output).float()
            for hp in by_module[module]:
                out.inputs[hp], out.outputs[hp] = x, y
            done.add(module)
            if len(done) == len(by_module):
                raise _StopForward

        return hook

    base = subject.model.base_model
    for module in by_module:
        handles.append(base.get_submodule(module).register_forward_hook(make_hook(module), with_kwargs=True))
    try:
        with subject.autocast:
            base(input_ids=input_ids.to(subject.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


@contextmanager
def _hooked(handle) -> Iterator[None]:
    """Keep a registered hook for the `with` block, then remove it."""
    try:
        yield
    finally:
        handle.remove()


def splice_output(subject: SubjectModel, module: str, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """A context within which the output of `module` is replaced by replace(its input, its output)."""

    def hook(_module, args, kwargs, output):
        new = replace(_first_tensor(args, kwargs), _main(output)).to(_main(output).dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return _hooked(subject.model.base_model.get_submodule(module).register_forward_hook(hook, with_kwargs=True))


def splice_input(subject: SubjectModel, module: str, replace: Callable[[torch.Tensor], torch.Tensor]):
    """A context within which the input of `module` (its first tensor argument) is replaced by replace(input)."""

    def hook(_module, args, kwargs):
        if args:
            return (replace(args[0]).to(args[0].dtype), *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        return args, {**kwargs, key: replace(kwargs[key]).to(kwargs[key].dtype)}

    return _hooked(subject.model.base_model.get_submodule(module).register_forward_pre_hook(hook, with_kwargs=True))


def splice_mlp(subject: SubjectModel, hookpoint: str, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """A context within which the MLP output at `hookpoint` is replaced by replace(mlp_in, mlp_out)."""
    return splice_output(subject, resolve_site(subject, hookpoint).module, replace)
