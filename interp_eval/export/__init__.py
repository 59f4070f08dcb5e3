"""`interp-eval export`: a run's coders and results in the layouts other tools read.

| format      | module          | what it writes                                                      |
| sparsify    | sparsify.py     | one sparsify folder per coder (cfg.json + sae.safetensors)           |
| neuronpedia | neuronpedia.py  | Neuronpedia's feature / activation / explanation files              |
| delphi      | delphi.py       | delphi's results layout (explanations/, scores/<scorer>/, log/)      |

Each module defines `export(run: RunDir, out: Path) -> ExportSummary`; `FORMATS` maps names to them.
"""
