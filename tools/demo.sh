#!/usr/bin/env bash
# Offline end-to-end demo: generate a small MVTec-layout data set with synthetic defects, train and
# evaluate PatchCore, export the static graph, score the test images through the exported model
# (--runtime auto: the fastest runtime installed, named on infer.py's first line) and one image with the
# dynamic graph. Heat maps land in output/demo/.
#   bash tools/demo.sh                      # random-init ResNet18 (no download needed)
#   PATCHCORE_WEIGHTS=mnv2.pdparams PATCHCORE_ARCH=mobilenet_v2 bash tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
ARCH=${PATCHCORE_ARCH:-resnet18}
WEIGHTS=${PATCHCORE_WEIGHTS:-none}
DATA=data/demo
OUT=output/demo
export PYTHONWARNINGS=ignore

echo "== 1/5 generating demo data in $DATA"
$PY tools/make_demo_data.py --out "$DATA"
echo "== 2/5 training + evaluating ($ARCH, weights: $WEIGHTS)"
$PY train.py --data_path "$DATA" --category all --arch "$ARCH" --pretrained "$WEIGHTS" --resize 128 --crop_size 128 \
    --k 10 --eval --eval_PRO --save_path "$OUT" --no_progress
echo "== 3/5 exporting synthetic_bottle for deployment"
$PY export_model.py --model_path "$OUT/synthetic_bottle.pdparams" --save_dir "$OUT/synthetic_bottle_infer" \
    --pretrained "$WEIGHTS"
echo "== 4/5 the exported model on the test images (--runtime auto: the runtime is named below)"
$PY infer.py --model_file "$OUT/synthetic_bottle_infer/model.pdmodel" \
    --params_file "$OUT/synthetic_bottle_infer/model.pdiparams" --stats "$OUT/synthetic_bottle_infer/stats.npz" \
    --input_file "$DATA/synthetic_bottle/test" --save_path "$OUT/infer" --enable_benchmark True | grep -Ev "^(decision|normal|anomalous|error) "
echo "== 5/5 dynamic-graph prediction of one defective image"
$PY predict.py "$DATA/synthetic_bottle/test/scratch/000.png" --model_path "$OUT/synthetic_bottle.pdparams" \
    --pretrained "$WEIGHTS" --save_path "$OUT/predict"
echo "done: heat maps in $OUT/infer/ and $OUT/predict/, tables in $OUT/*.csv"
