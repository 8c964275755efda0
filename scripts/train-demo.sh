#!/usr/bin/env bash
# Rebuild the bundled demo model (lbdeploy/data/demo.pt) and sample image (lbdeploy/data/sample.jpg).
#
#   scripts/train-demo.sh [RUN_DIR]    (default RUN_DIR: runs/demo; must not hold a run yet)
#
# Trains a small LBRN-S (1 stack, 1 module, 64 features, 128x128 input, 20 epochs of 2000
# augmented samples) on the procedural synthetic pose set, fine-tunes it (--init) for 6 more epochs
# on 3000 people (1000 of them new), copies the best checkpoint to lbdeploy/data/demo.pt and renders
# a held-out synthetic person (validation split, never seen in training) as sample.jpg.
# docs/training.md gives the time and the PCKh it reached.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:-runs/demo}"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
"$python" -m lbdeploy.cli train --arch lbrn-s --data synthetic:2000,200 --stacks 1 --modules 1 --feats 64 \
  --input-size 128x128 --sigma 1 --epochs 20 --batch-size 16 --lr 1e-3 --lr-drops 16 \
  --workers 1 --threads 1 --seed 0 -o "$run"
"$python" -m lbdeploy.cli train --init "$run/best.pt" --arch lbrn-s --data synthetic:3000,200 --stacks 1 --modules 1 \
  --feats 64 --input-size 128x128 --sigma 1 --epochs 6 --batch-size 16 --lr 5e-4 --lr-drops 5 \
  --workers 1 --threads 1 --seed 0 -o "$run-finetune"
cp "$run-finetune/best.pt" lbdeploy/data/demo.pt
"$python" - <<'PY'
from PIL import Image

from lbdeploy.data.synthetic import SyntheticPoses, person_image

# A held-out person: validation sample 0, the first whose padded box lies inside its image
# (the run trained on the train split only).
Image.fromarray(person_image(SyntheticPoses("val", size=200, seed=0), 0, 256)).save(
    "lbdeploy/data/sample.jpg", quality=92)
PY
"$python" -m lbdeploy.cli eval lbdeploy/data/demo.pt --data synthetic:2000,200
