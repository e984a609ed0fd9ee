#!/bin/bash
# Run real public Lightning code on fulmen, only the imports aliased (docs/conformance.md):
#   scripts/conformance/run_projects.sh PYTHON LIGHTNING_SRC HYDRA_TEMPLATE_SRC WORK
# PYTHON: a venv with torch, fulmen, pytest, hydra-core, hydra-colorlog, omegaconf, rootutils, rich, sh,
#   jsonargparse[signatures], torchmetrics, tensorboard, pillow (never lightning). LIGHTNING_SRC: a Lightning 2.6
#   source tree (examples/pytorch). HYDRA_TEMPLATE_SRC: ashleve/lightning-hydra-template. Both are copied to WORK;
#   nothing is downloaded: torchvision and Lightning's data-downloading demos are synthetic stand-ins.
# Set FULMEN_ALIAS_NOOP_NAMES=cli_lightning_logo (comma list) to see what a script does after a missing name.
set -u
PY=$1; LSRC=$2; HSRC=$3; WORK=$4
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
export PATH="$(dirname "$PY"):$PATH"  # the template's sweep tests run `python` from PATH
export PYTHONPATH="$HERE/autoalias:$HERE/synthetic"
export FULMEN_ALIAS_SYNTHETIC_DEMOS=1

# Lightning's examples: CPU, one short epoch (the GAN and transformer scripts hard-code their Trainer)
rm -rf "$WORK/examples" && cp -r "$LSRC/examples/pytorch" "$WORK/examples"
sed -i 's/Trainer(accelerator="gpu", devices=1)/Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=10, limit_val_batches=2)/' \
  "$WORK/examples/domain_templates/generative_adversarial_net.py"
sed -i 's/L.Trainer(gradient_clip_val=0.25, max_epochs=20)/L.Trainer(gradient_clip_val=0.25, max_epochs=1, limit_train_batches=10, limit_val_batches=2, limit_test_batches=2)/' \
  "$WORK/examples/basics/transformer.py"
LIM="--trainer.max_epochs 1 --trainer.limit_train_batches 5 --trainer.limit_val_batches 2 --trainer.limit_test_batches 2 --trainer.limit_predict_batches 2 --trainer.accelerator cpu"
export FULMEN_ALIAS_CALLERS="$WORK/examples"
# fulmen's WikiText2 reads data/wikitext-2.txt (it never downloads): a synthetic corpus for the transformer
mkdir -p "$WORK/out/transformer/data"
"$PY" -c "
import random
random.seed(0)
with open('$WORK/out/transformer/data/wikitext-2.txt', 'w') as f:
    for _ in range(4500):
        s = random.randrange(120)
        f.write(' '.join(f'w{(s + j) % 120}' for j in range(40)) + '\n')
"
run() {
  local name=$1; shift
  mkdir -p "$WORK/out/$name"
  (cd "$WORK/out/$name" && timeout 900 "$PY" "$@" > out.txt 2>&1; echo "example $name: exit $?")
}
run autoencoder "$WORK/examples/basics/autoencoder.py" $LIM
run backbone_image_classifier "$WORK/examples/basics/backbone_image_classifier.py" $LIM
run transformer "$WORK/examples/basics/transformer.py"
run gan "$WORK/examples/domain_templates/generative_adversarial_net.py"
run fine_tuning "$WORK/examples/domain_templates/computer_vision_fine_tuning.py" fit $LIM --data.batch_size 8 --finetuning.milestones "[1, 2]"

# the Hydra template's own test suite (its slow tests included)
rm -rf "$WORK/hydra" && cp -r "$HSRC" "$WORK/hydra"
export FULMEN_ALIAS_CALLERS="$WORK/hydra"
(cd "$WORK/hydra" && timeout 3000 "$PY" -m pytest tests -p no:cacheprovider -q -rA --color=no > "$WORK/out/hydra.txt" 2>&1; \
  echo "hydra template tests: exit $?"; grep -E "^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed" "$WORK/out/hydra.txt" | tail -20)
