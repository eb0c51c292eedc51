#!/usr/bin/env bash
# Helpers shared by test_tipc/prepare.sh and test_tipc/test_train_inference_python.sh.
#
# A TIPC config is a list of "key:value" lines grouped into sections whose header lines look like
# "=====...=====train_params=====...=====". Lines are read by their position inside a section
# (the TIPC convention: the position says what a line means, its key says which command-line flag
# carries the value). "null" as a key or value means "not used". Everything here is `set -u` safe
# and prints nothing but its result.
#
# Sourcing it also sets the scripts' shell options and REPO_ROOT (the repository's absolute path).
set -u
set -o pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# func_parser_key "KEY:VALUE" -> KEY (text before the first colon)
func_parser_key() {
    local line=${1-}
    printf '%s\n' "${line%%:*}"
}

# func_parser_value "KEY:VALUE" -> VALUE (text after the first colon; empty when there is none)
func_parser_value() {
    local line=${1-}
    case $line in
        *:*) printf '%s\n' "${line#*:}" ;;
        *) printf '\n' ;;
    esac
}

# func_parser_params "KEY:mode_a=1|mode_b=2" MODE -> the value for MODE ("null" when MODE is not
# listed). A value without any "mode=" part applies to every mode and is returned as it is.
func_parser_params() {
    local value mode=${2-} item
    value=$(func_parser_value "${1-}")
    if [[ $value != *=* ]]; then
        printf '%s\n' "$value"
        return 0
    fi
    local IFS='|'
    for item in $value; do
        if [[ ${item%%=*} == "$mode" ]]; then
            printf '%s\n' "${item#*=}"
            return 0
        fi
    done
    printf 'null\n'
}

# func_set_params KEY VALUE -> "KEY=VALUE" for a command line, or nothing when the key or the value
# is null/empty. The value is shell-quoted (printf %q) because the commands are run with eval.
func_set_params() {
    local key=${1-} value=${2-}
    if [[ -z $key || $key == null || -z ${value// /} || $value == null ]]; then
        printf '\n'
    else
        printf '%s=%q\n' "$key" "$value"
    fi
}

# func_split_list "a|b|c" ARRAY_NAME -> fills the named array with a, b, c
func_split_list() {
    local IFS='|'
    # shellcheck disable=SC2206
    read -r -a "$2" <<< "${1-}"
}

# func_read_section CONFIG SECTION ARRAY_NAME -> fills the named array with the lines of SECTION,
# index 0 being the section header itself (so index N is the N-th line after it). Carriage returns
# and trailing blanks are stripped. Returns 1 when the section does not exist.
func_read_section() {
    local file=$1 section=$2 line found=0
    local -n _section_out=$3
    _section_out=()
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        line=${line%"${line##*[![:space:]]}"}
        if [[ $line == ====* ]]; then
            if [[ $line == *"=${section}="* || $line == *"=${section}" ]]; then
                found=1
                _section_out+=("$line")
                continue
            fi
            ((found)) && break
            continue
        fi
        ((found)) && _section_out+=("$line")
    done < "$file"
    ((found))
}

# func_expect_key LINE KEY WHERE -> returns 1 (with a message on stderr) unless LINE's key is KEY.
# Guards against configs whose lines have shifted, since lines are read by position.
func_expect_key() {
    local got
    got=$(func_parser_key "${1-}")
    if [[ $got != "$2" ]]; then
        echo "config error: expected a '$2:...' line at $3, found '${1-}'" >&2
        return 1
    fi
}

# func_flag_value "CMD --name value ..." --name -> value of a flag inside a command line
# (both "--name value" and "--name=value"); nothing when the flag is absent.
func_flag_value() {
    local -a words
    local i word
    read -r -a words <<< "${1-}"
    for ((i = 0; i < ${#words[@]}; i++)); do
        word=${words[i]}
        if [[ $word == "$2" && $((i + 1)) -lt ${#words[@]} ]]; then
            printf '%s\n' "${words[i + 1]}"
            return 0
        elif [[ $word == "$2="* ]]; then
            printf '%s\n' "${word#*=}"
            return 0
        fi
    done
}

# status_check EXIT_CODE COMMAND RESULTS_LOG MODEL_NAME [STEP_LOG]
# Appends one TIPC status line (no colour codes) to RESULTS_LOG and echoes it.
status_check() {
    local status=$1 command=$2 results_log=$3 model_name=$4 step_log=${5-}
    local verdict="Run successfully"
    [[ $status -eq 0 ]] || verdict="Run failed"
    local line="${verdict} with command - ${model_name} - ${command}"
    [[ -n $step_log ]] && line+=" - ${step_log}"
    printf '%s\n' "$line" | tee -a "$results_log"
}

# func_squeeze "a  b   c " -> "a b c": drops the blanks left by unused (null) keys in a command
func_squeeze() {
    printf '%s\n' "${1-}" | sed -e 's/[[:space:]][[:space:]]*/ /g' -e 's/^ //' -e 's/ $//'
}

# Both entry scripts take "CONFIG MODE": check them, set FILENAME (absolute config path) and MODE,
# and refuse every mode but lite_train_lite_infer.
func_parse_cli() {
    local script=$1
    shift
    if [[ $# -lt 2 ]]; then
        echo "usage: bash test_tipc/$script CONFIG MODE   (MODE: lite_train_lite_infer)" >&2
        exit 2
    fi
    FILENAME=$1
    MODE=$2
    [[ -f $FILENAME ]] || { echo "config not found: $FILENAME" >&2; exit 2; }
    FILENAME=$(cd "$(dirname "$FILENAME")" && pwd)/$(basename "$FILENAME")
    case $MODE in
        lite_train_lite_infer) ;;
        lite_train_whole_infer | whole_train_whole_infer | whole_infer | klquant_whole_infer)
            echo "mode '$MODE' is not supported by this project's TIPC (only lite_train_lite_infer)" >&2
            exit 1 ;;
        *)
            echo "unknown mode '$MODE' (supported: lite_train_lite_infer)" >&2
            exit 1 ;;
    esac
}
