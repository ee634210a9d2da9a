"""The model card of a trained model: ``README.md`` in its directory, as the Hugging Face Hub shows
one — what the model is (family, task, parameters), how to use it, how it was trained (the run's
recipe, steps, why it stopped) and its test scores. Exports carry it along
(:func:`transformerkit.interop.convert.export_model_dir`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from transformerkit.checkpoint import read_model_config


def model_card(model_dir: Path, recipe: dict[str, Any], steps: int, stopped_because: str,
               scores: dict[str, Any] | None) -> str:
    kind = read_model_config(model_dir)
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        parameters = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    scored = (f"```json\n{json.dumps(scores, indent=2, ensure_ascii=False)}\n```" if scores is not None
              else "No test set was given (`data.test`).")
    return f"""# {model_dir.resolve().parent.name}: a {kind.task} model

- family: `{kind.model_class.model_type}`, {parameters:,} parameters (tied tensors stored once)
- task: `{kind.task}` (the verbs and endpoints that use it follow from it)
- trained with transformerkit for {steps:,} steps (stopped: {stopped_because})

## Use

```bash
transformerkit --help                                    # the verbs of the {kind.task} task
transformerkit serve --model {model_dir}                 # HTTP API and a page to try it
transformerkit export --model {model_dir} --format hf --out {model_dir}-hf   # for transformers
```

## Test scores

{scored}

## Recipe (`run.yaml`)

```yaml
{yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()}
```
"""


def write_model_card(model_dir: Path, recipe: dict[str, Any], steps: int, stopped_because: str,
                     scores: dict[str, Any] | None) -> None:
    (model_dir / "README.md").write_text(model_card(model_dir, recipe, steps, stopped_because, scores),
                                         encoding="utf-8")
