#!/usr/bin/env bash
# Prepare data and backbone weights for the TIPC chain, without the network.
#
#   bash test_tipc/prepare.sh CONFIG MODE        (MODE: lite_train_lite_infer)
#
# Data (the --data_path/--category of the config's norm_train line, e.g. test_tipc/data/mvtec/bottle):
#   a small subset (symlinks) of MVTEC_ROOT/<category> when that folder exists, MVTEC_ROOT defaulting
#   to $PATCHCORE_SHARED/data/mvtec; otherwise a small synthetic category (tools/make_demo_data.py);
#   tools/prepare_tipc_data.py does either, or nothing when the data is already there.
# Weights (the value of --pretrained, recorded in test_tipc/data/pretrained.txt):
#   $PATCHCORE_WEIGHTS (a .pdparams file, or "none") when set; else, for mobilenet_v2, the PyTorch
#   weights $PATCHCORE_SHARED/weights/mobilenet_v2_imagenet_torch.pt converted once into
#   test_tipc/data/weights/mobilenet_v2.pdparams; else random initialisation ("none").
# PATCHCORE_SHARED defaults to ../shared beside the repository. Point it (or MVTEC_ROOT) at a
# folder that does not exist to prepare as on a machine without it. TIPC_PYTHON overrides the
# config's python. Running it again only redoes what changed.
# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"   # also: set -u, pipefail, REPO_ROOT
func_parse_cli prepare.sh "$@"

# Environment paths are taken relative to the caller's folder, before moving to the repo root.
absolute() {
    if [[ -z ${1-} ]]; then
        printf '\n'
    elif [[ $1 == /* ]]; then
        printf '%s\n' "$1"
    else
        printf '%s\n' "$PWD/$1"
    fi
}
SHARED=$(absolute "${PATCHCORE_SHARED:-$(cd "$REPO_ROOT/.." && pwd)/shared}")
MVTEC=$(absolute "${MVTEC_ROOT-$SHARED/data/mvtec}")
WEIGHTS_OVERRIDE=${PATCHCORE_WEIGHTS-}
if [[ -n $WEIGHTS_OVERRIDE && $WEIGHTS_OVERRIDE != none ]]; then
    WEIGHTS_OVERRIDE=$(absolute "$WEIGHTS_OVERRIDE")
fi

cd "$REPO_ROOT" || exit 2

train_lines=()
func_read_section "$FILENAME" train_params train_lines || { echo "config error: no train_params section in $FILENAME" >&2; exit 2; }
func_expect_key "${train_lines[2]-}" python "train_params line 2" || exit 2
func_expect_key "${train_lines[15]-}" norm_train "train_params line 15" || exit 2
python=${TIPC_PYTHON:-$(func_parser_value "${train_lines[2]}")}
norm_train=$(func_parser_value "${train_lines[15]}")
data_root=$(func_flag_value "$norm_train" --data_path)
category=$(func_flag_value "$norm_train" --category)
arch=$(func_flag_value "$norm_train" --arch)
arch=${arch:-resnet18}
if [[ -z $data_root || -z $category || $category == all || $category == objects || $category == textures ]]; then
    echo "config error: norm_train needs --data_path and one --category folder name: $norm_train" >&2
    exit 2
fi
case $data_root in
    ./test_tipc/data/* | test_tipc/data/*) ;;
    *) echo "config error: --data_path must lie under ./test_tipc/data (prepare.sh writes there): $data_root" >&2
       exit 2 ;;
esac

mkdir -p test_tipc/data
# Sizes of the lite data: enough for a meaningful fit, small enough for a run of a few minutes.
N_TRAIN=20
N_TEST_PER_CLASS=3

# ------------------------------------------------------------------------------ data
if [[ -n $MVTEC && -d $MVTEC/$category/train/good ]]; then
    data_source="subset of $MVTEC/$category ($N_TRAIN train images, up to $N_TEST_PER_CLASS per test class, symlinks)"
    kind=subset
else
    data_source="synthetic category '$category' (tools/make_demo_data.py: $N_TRAIN train images, $N_TEST_PER_CLASS per test class)"
    kind=synthetic
fi
echo "data: $data_source"
# The marker file the generators leave in the category folder says what is there already.
"$python" tools/prepare_tipc_data.py --kind "$kind" --data_root "$data_root" --category "$category" \
    --mvtec_root "$MVTEC" --n_train "$N_TRAIN" --n_test_per_class "$N_TEST_PER_CLASS" --seed 0
status=$?
if [[ $status -ne 0 ]]; then
    echo "prepare failed: could not build the lite data under $data_root" >&2
    exit 1
fi

# ------------------------------------------------------------------------------ weights
torch_weights=$SHARED/weights/mobilenet_v2_imagenet_torch.pt
converted=./test_tipc/data/weights/mobilenet_v2.pdparams
if [[ $WEIGHTS_OVERRIDE == none ]]; then
    pretrained=none
    weights_source="random initialisation (PATCHCORE_WEIGHTS=none)"
elif [[ -n $WEIGHTS_OVERRIDE ]]; then
    if [[ ! -f $WEIGHTS_OVERRIDE ]]; then
        echo "prepare failed: PATCHCORE_WEIGHTS=$WEIGHTS_OVERRIDE is not a file" >&2
        exit 1
    fi
    pretrained=$WEIGHTS_OVERRIDE
    weights_source="PATCHCORE_WEIGHTS ($WEIGHTS_OVERRIDE)"
elif [[ $arch == mobilenet_v2 && -f $torch_weights ]]; then
    pretrained=$converted
    weights_source="ImageNet MobileNetV2 converted from $torch_weights"
    # Convert once; redo it when the source file changes (its size and time are recorded).
    stamp="$(stat -c '%s %Y' "$torch_weights" 2>/dev/null || stat -f '%z %m' "$torch_weights") $torch_weights"
    if [[ -f $converted && -f $converted.source && $(cat "$converted.source") == "$stamp" ]]; then
        echo "weights: $converted is up to date"
    else
        mkdir -p "$(dirname "$converted")"
        rm -f "$converted.source"
        # convert_weights.py writes atomically: no half-written file is left on failure.
        if ! "$python" tools/convert_weights.py --src "$torch_weights" --dst "$converted" --arch mobilenet_v2; then
            echo "prepare failed: converting $torch_weights" >&2
            exit 1
        fi
        printf '%s\n' "$stamp" > "$converted.source"
    fi
else
    pretrained=none
    weights_source="random initialisation (no PATCHCORE_WEIGHTS, no $torch_weights for $arch)"
fi
echo "weights: $weights_source"
printf '%s\n' "$pretrained" > test_tipc/data/pretrained.txt
{
    echo "config: $FILENAME"
    echo "mode: $MODE"
    echo "data: $data_source -> $data_root/$category"
    echo "weights: $weights_source -> --pretrained $pretrained"
} > test_tipc/data/prepare_info.txt
echo "prepared for $MODE: --pretrained $pretrained (test_tipc/data/pretrained.txt)"
