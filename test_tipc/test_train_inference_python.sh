#!/usr/bin/env bash
# TIPC basic chain for Python: train -> export -> Paddle Inference over a CPU settings grid.
#
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE
#
# CONFIG is a TIPC config (e.g. test_tipc/configs/PatchCore/train_infer_python.txt); MODE must be
# lite_train_lite_infer (run test_tipc/prepare.sh CONFIG MODE first). Every step's output goes to
# its own log under test_tipc/output/MODE/ and one status line per step to
# test_tipc/output/MODE/results_python.log. Exit code 0 only if every step succeeded.
#
# Environment: TIPC_PYTHON overrides the config's "python:" interpreter.
# shellcheck source=test_tipc/common_func.sh
source "$(dirname "${BASH_SOURCE[0]}")/common_func.sh"   # also: set -u, pipefail, REPO_ROOT
func_parse_cli test_train_inference_python.sh "$@"

cd "$REPO_ROOT" || exit 2

# ------------------------------------------------------------------------------ read the config
train_lines=()
infer_lines=()
func_read_section "$FILENAME" train_params train_lines || { echo "config error: no train_params section in $FILENAME" >&2; exit 2; }
func_read_section "$FILENAME" infer_params infer_lines || { echo "config error: no infer_params section in $FILENAME" >&2; exit 2; }
if [[ ${#train_lines[@]} -lt 16 || ${#infer_lines[@]} -lt 27 ]]; then
    echo "config error: $FILENAME has too few lines (train_params needs 15, infer_params 26)" >&2
    exit 2
fi
layout_ok=1
for check in "1 model_name" "2 python" "3 gpu_list" "10 train_model_name" "11 train_infer_img_dir" \
             "14 trainer" "15 norm_train"; do
    func_expect_key "${train_lines[${check%% *}]}" "${check#* }" "train_params line ${check%% *}" || layout_ok=0
done
for check in "3 norm_export" "13 inference"; do
    func_expect_key "${infer_lines[${check%% *}]}" "${check#* }" "infer_params line ${check%% *}" || layout_ok=0
done
((layout_ok)) || exit 2

# train_params
model_name=$(func_parser_value "${train_lines[1]}")
python=${TIPC_PYTHON:-$(func_parser_value "${train_lines[2]}")}
gpu_list=$(func_parser_value "${train_lines[3]}")
train_use_gpu_value=$(func_parser_value "${train_lines[4]}")
autocast_list=$(func_parser_value "${train_lines[5]}")
autocast_key=$(func_parser_key "${train_lines[5]}")
epoch_key=$(func_parser_key "${train_lines[6]}")
epoch_num=$(func_parser_params "${train_lines[6]}" "$MODE")
save_model_key=$(func_parser_key "${train_lines[7]}")
train_batch_key=$(func_parser_key "${train_lines[8]}")
train_batch_value=$(func_parser_params "${train_lines[8]}" "$MODE")
pretrain_model_key=$(func_parser_key "${train_lines[9]}")
pretrain_model_value=$(func_parser_value "${train_lines[9]}")
train_model_name=$(func_parser_value "${train_lines[10]}")
train_infer_img_dir=$(func_parser_value "${train_lines[11]}")
train_param_key1=$(func_parser_key "${train_lines[12]}")
train_param_value1=$(func_parser_value "${train_lines[12]}")
trainer_list=$(func_parser_value "${train_lines[14]}")
norm_trainer=$(func_parser_value "${train_lines[15]}")

# infer_params (export, then inference)
save_infer_key=$(func_parser_key "${infer_lines[1]}")
export_weight_key=$(func_parser_key "${infer_lines[2]}")
norm_export=$(func_parser_value "${infer_lines[3]}")
inference_py=$(func_parser_value "${infer_lines[13]}")
use_gpu_key=$(func_parser_key "${infer_lines[14]}")
use_gpu_list=$(func_parser_value "${infer_lines[14]}")
use_mkldnn_key=$(func_parser_key "${infer_lines[15]}")
use_mkldnn_list=$(func_parser_value "${infer_lines[15]}")
cpu_threads_key=$(func_parser_key "${infer_lines[16]}")
cpu_threads_list=$(func_parser_value "${infer_lines[16]}")
batch_size_key=$(func_parser_key "${infer_lines[17]}")
batch_size_list=$(func_parser_value "${infer_lines[17]}")
use_trt_key=$(func_parser_key "${infer_lines[18]}")
use_trt_list=$(func_parser_value "${infer_lines[18]}")
precision_key=$(func_parser_key "${infer_lines[19]}")
precision_list=$(func_parser_value "${infer_lines[19]}")
model_file_key=$(func_parser_key "${infer_lines[20]}")
model_file_name=$(func_parser_value "${infer_lines[20]}")
params_file_key=$(func_parser_key "${infer_lines[21]}")
params_file_name=$(func_parser_value "${infer_lines[21]}")
stats_key=$(func_parser_key "${infer_lines[22]}")
stats_name=$(func_parser_value "${infer_lines[22]}")
image_dir_key=$(func_parser_key "${infer_lines[23]}")
save_log_key=$(func_parser_key "${infer_lines[24]}")
save_log_value=$(func_parser_value "${infer_lines[24]}")
benchmark_key=$(func_parser_key "${infer_lines[25]}")
benchmark_value=$(func_parser_value "${infer_lines[25]}")
infer_save_key=$(func_parser_key "${infer_lines[26]}")

# The backbone weights prepare.sh chose (unless the config names them itself).
if [[ $pretrain_model_value == null || -z $pretrain_model_value ]]; then
    if [[ ! -f test_tipc/data/pretrained.txt ]]; then
        echo "test_tipc/data/pretrained.txt is missing: run  bash test_tipc/prepare.sh $1 $MODE  first" >&2
        exit 2
    fi
    pretrain_model_value=$(head -n 1 test_tipc/data/pretrained.txt)
fi
if [[ ! -e $train_infer_img_dir ]]; then
    echo "$train_infer_img_dir does not exist: run  bash test_tipc/prepare.sh $1 $MODE  first" >&2
    exit 2
fi

LOG_PATH="./test_tipc/output/${MODE}"
rm -rf "$LOG_PATH"
mkdir -p "$LOG_PATH"
status_log="${LOG_PATH}/results_python.log"
: > "$status_log"

n_ok=0
n_failed=0
# record STATUS COMMAND STEP_LOG: status line + counters; on failure prints the step log's tail
# and returns 1
record() {
    status_check "$1" "$2" "$status_log" "$model_name" "$3"
    if [[ $1 -eq 0 ]]; then
        n_ok=$((n_ok + 1))
        return 0
    fi
    n_failed=$((n_failed + 1))
    echo "---- last lines of $3 ----"
    tail -n 20 "$3"
    echo "----"
    return 1
}

cuda_checked=0
has_cuda=0
paddle_has_cuda() {
    if ((!cuda_checked)); then
        cuda_checked=1
        if [[ $($python -c 'import paddle; print(paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)' 2>/dev/null | tail -n 1) == True ]]; then
            has_cuda=1
        fi
    fi
    ((has_cuda))
}

# func_inference MODEL_DIR IMAGES RUN_PREFIX: the inference grid for one exported model
func_inference() {
    local model_dir=$1 images=$2 prefix=$3
    local use_gpu use_mkldnn threads batch_size precision use_trt
    local -a gpus mkldnns threads_list batch_sizes precisions trts
    func_split_list "$use_gpu_list" gpus
    func_split_list "$use_mkldnn_list" mkldnns
    func_split_list "$cpu_threads_list" threads_list
    func_split_list "$batch_size_list" batch_sizes
    func_split_list "$precision_list" precisions
    func_split_list "$use_trt_list" trts
    local set_model set_params set_stats set_data set_benchmark set_log
    set_model=$(func_set_params "$model_file_key" "${model_dir}/${model_file_name}")
    set_params=$(func_set_params "$params_file_key" "${model_dir}/${params_file_name}")
    set_stats=$(func_set_params "$stats_key" "${model_dir}/${stats_name}")
    set_data=$(func_set_params "$image_dir_key" "$images")
    set_benchmark=$(func_set_params "$benchmark_key" "$benchmark_value")
    set_log=$(func_set_params "$save_log_key" "$save_log_value")
    # run_infer_step NAME ENV_PREFIX DEVICE_FLAGS: one inference run of the grid, logged and recorded.
    run_infer_step() {
        local name=$1 env_prefix=$2 device_flags=$3 step_log command
        step_log="${LOG_PATH}/${name}.log"
        command="${python} ${inference_py} ${use_gpu_key}=${use_gpu} ${device_flags} ${set_model} ${set_params} ${set_stats} ${set_data} ${set_benchmark} ${set_log} $(func_set_params "$infer_save_key" "${prefix}${name}")"
        command=$(func_squeeze "$command")
        echo "[$model_name] running $name ..."
        eval "${env_prefix}$command" > "$step_log" 2>&1
        record $? "$command" "$step_log"
    }
    for use_gpu in "${gpus[@]}"; do
        if [[ $use_gpu == False || $use_gpu == cpu ]]; then
            for use_mkldnn in "${mkldnns[@]}"; do
                for threads in "${threads_list[@]}"; do
                    for batch_size in "${batch_sizes[@]}"; do
                        for precision in "${precisions[@]}"; do
                            if [[ $precision != fp32 && $use_mkldnn == False ]]; then
                                echo "skip: precision $precision on CPU needs oneDNN (enable_mkldnn False)"
                                continue
                            fi
                            run_infer_step "python_infer_cpu_usemkldnn_${use_mkldnn}_threads_${threads}_precision_${precision}_batchsize_${batch_size}" \
                                "CUDA_VISIBLE_DEVICES= " "$(func_set_params "$use_mkldnn_key" "$use_mkldnn") $(func_set_params "$cpu_threads_key" "$threads") $(func_set_params "$batch_size_key" "$batch_size") $(func_set_params "$precision_key" "$precision")"
                        done
                    done
                done
            done
        elif [[ $use_gpu == True || $use_gpu == gpu ]]; then
            if ! paddle_has_cuda; then
                echo "skip: GPU inference requested but this Paddle has no CUDA device"
                continue
            fi
            for use_trt in "${trts[@]}"; do
                for precision in "${precisions[@]}"; do
                    if [[ $precision != fp32 && $use_trt == False ]]; then
                        continue
                    fi
                    for batch_size in "${batch_sizes[@]}"; do
                        run_infer_step "python_infer_gpu_usetrt_${use_trt}_precision_${precision}_batchsize_${batch_size}" \
                            "" "$(func_set_params "$use_trt_key" "$use_trt") $(func_set_params "$precision_key" "$precision") $(func_set_params "$batch_size_key" "$batch_size")"
                    done
                done
            done
        else
            echo "skip: unknown device '$use_gpu' in the ${use_gpu_key} line"
        fi
    done
}

# ------------------------------------------------------------------------------ train, export, infer
start_seconds=$SECONDS
declare -a gpus_to_run autocasts trainers train_use_gpus
func_split_list "$gpu_list" gpus_to_run
func_split_list "$autocast_list" autocasts
func_split_list "$trainer_list" trainers
func_split_list "$train_use_gpu_value" train_use_gpus
[[ ${#autocasts[@]} -gt 0 ]] || autocasts=(null)

gpu_index=0
for gpu in "${gpus_to_run[@]}"; do
    train_use_gpu=${train_use_gpus[gpu_index]:-${train_use_gpus[0]:-False}}
    gpu_index=$((gpu_index + 1))
    if [[ $gpu == -1 || $train_use_gpu == False ]]; then
        device_env="CUDA_VISIBLE_DEVICES="      # a CPU run, even on a machine with GPUs
        gpu=-1
    elif [[ $gpu == *,* || $gpu == *\;* ]]; then
        echo "skip: gpu_list entry '$gpu': PatchCore fits its memory bank on one device (no multi-GPU/multi-node training)"
        continue
    elif paddle_has_cuda; then
        device_env="CUDA_VISIBLE_DEVICES=$gpu"
    else
        echo "skip: gpu_list entry '$gpu': this Paddle has no CUDA device"
        continue
    fi
    for autocast in "${autocasts[@]}"; do
        for trainer in "${trainers[@]}"; do
            if [[ $trainer != norm_train ]]; then
                echo "skip: trainer '$trainer' is not supported (only norm_train)"
                continue
            fi
            if [[ $norm_trainer == null ]]; then
                echo "skip: norm_train is null in the config"
                continue
            fi
            run_name="${trainer}_gpus_${gpu}_autocast_${autocast}"
            save_log="${LOG_PATH}/${run_name}"
            train_log="${save_log}.log"
            cmd="${python} ${norm_trainer} $(func_set_params "$save_model_key" "$save_log") $(func_set_params "$epoch_key" "$epoch_num") $(func_set_params "$pretrain_model_key" "$pretrain_model_value") $(func_set_params "$autocast_key" "$autocast") $(func_set_params "$train_batch_key" "$train_batch_value") $(func_set_params "$train_param_key1" "$train_param_value1")"
            cmd=$(func_squeeze "$cmd")
            echo "[$model_name] running $run_name (train) ..."
            eval "$device_env $cmd" > "$train_log" 2>&1
            record $? "$cmd" "$train_log" || { echo "skip: export and inference of $run_name (training failed)"; continue; }

            if [[ $norm_export == null ]]; then
                continue
            fi
            infer_dir="${save_log}/inference"
            export_log="${save_log}_export.log"
            export_cmd="${python} ${norm_export} $(func_set_params "$export_weight_key" "${save_log}/${train_model_name}") $(func_set_params "$save_infer_key" "$infer_dir")"
            export_cmd=$(func_squeeze "$export_cmd")
            echo "[$model_name] running $run_name (export) ..."
            eval "$device_env $export_cmd" > "$export_log" 2>&1
            record $? "$export_cmd" "$export_log" || { echo "skip: inference of $run_name (export failed)"; continue; }

            func_inference "$infer_dir" "$train_infer_img_dir" "${save_log}/"
        done
    done
done

total=$((n_ok + n_failed))
elapsed=$((SECONDS - start_seconds))
echo "----------------------------------------------------------------"
echo "[$model_name] $MODE: $n_ok of $total steps ran successfully, $n_failed failed (${elapsed}s)"
echo "status lines: $status_log"
if [[ $total -eq 0 ]]; then
    echo "nothing ran: check gpu_list, trainer and the inference lines of $1" >&2
    exit 1
fi
[[ $n_failed -eq 0 ]]
