#!/usr/bin/env bash
# Fine-tune a video LVLM on Video-STaR data (stage 5) with DeepSpeed, on one node or many.
# The paper's recipe: 1 epoch, lr 2e-5, cosine, warmup 0.03, global batch 128, vision tower
# frozen, bf16 + tf32, gradient checkpointing, FlashAttention-2 when flash-attn is installed.
#
#   One node, all its GPUs (torchrun):
#     MODEL=LanguageBind/Video-LLaVA-7B-hf DATA=train.json VIDEO_ROOT=videos OUTPUT=checkpoints/star \
#       bash scripts/finetune.sh
#   One node, the deepspeed launcher:            LAUNCHER=deepspeed bash scripts/finetune.sh
#   Many nodes, torchrun (run on every node):    NNODES=4 NODE_RANK=$i MASTER_ADDR=node0 bash scripts/finetune.sh
#   Many nodes, deepspeed (run once, uses ssh):  LAUNCHER=deepspeed HOSTFILE=hostfile MASTER_ADDR=node0 bash scripts/finetune.sh
#
# More environment knobs: GPUS (per node), ZERO (zero2 | zero3 | zero3_offload), PER_DEVICE_BATCH,
# GRAD_ACCUM, NUM_FRAMES, MODEL_MAX_LENGTH, WORKERS, MASTER_PORT, REPORT_TO; DRY_RUN=1 prints the
# command instead of running it. Arguments after the script go to train_mem.py and win over the
# ones here (e.g. `bash scripts/finetune.sh --lora_enable True --learning_rate 2e-4`).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${MODEL:?set MODEL to a checkpoint, e.g. LanguageBind/Video-LLaVA-7B-hf}"
: "${DATA:?set DATA to the LLaVA JSON file(s) from llava-star export (space-separated)}"
: "${VIDEO_ROOT:?set VIDEO_ROOT to the folder that the video paths of the records are relative to}"
: "${OUTPUT:?set OUTPUT to the checkpoint directory to write}"

LAUNCHER=${LAUNCHER:-torchrun}
if [[ -z "${GPUS:-}" ]]; then
  GPUS=$( (nvidia-smi -L 2>/dev/null || true) | wc -l)
  [[ "$GPUS" -gt 0 ]] || GPUS=1
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
ZERO=${ZERO:-zero2}
# 8 GPUs x 4 x 4 = 128 samples per step, Video-LLaVA's (and Video-STaR's) global batch
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-4}
GRAD_ACCUM=${GRAD_ACCUM:-4}
NUM_FRAMES=${NUM_FRAMES:-8}
# Video-LLaVA-7B: 8 frames x 257 tokens = 2056 video tokens, plus the conversation
MODEL_MAX_LENGTH=${MODEL_MAX_LENGTH:-4096}
WORKERS=${WORKERS:-4}
REPORT_TO=${REPORT_TO:-none}
read -r -a DATA_FILES <<< "$DATA"

TRAIN_ARGS=(
  --deepspeed "$HERE/$ZERO.json"
  --model_name_or_path "$MODEL"
  --data_path "${DATA_FILES[@]}"
  --video_folder "$VIDEO_ROOT"
  --output_dir "$OUTPUT"
  --num_frames "$NUM_FRAMES"
  --bf16 True
  --tf32 True
  --num_train_epochs 1
  --per_device_train_batch_size "$PER_DEVICE_BATCH"
  --gradient_accumulation_steps "$GRAD_ACCUM"
  --learning_rate 2e-5
  --weight_decay 0.
  --warmup_ratio 0.03
  --lr_scheduler_type cosine
  --logging_steps 1
  --model_max_length "$MODEL_MAX_LENGTH"
  --gradient_checkpointing True
  --dataloader_num_workers "$WORKERS"
  --save_strategy no
  --report_to "$REPORT_TO"
)

case "$LAUNCHER" in
  torchrun)
    LAUNCH=(torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"
            --master_port "$MASTER_PORT" --nproc_per_node "$GPUS")
    ;;
  deepspeed)
    if [[ -n "${HOSTFILE:-}" ]]; then
      LAUNCH=(deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
    else
      LAUNCH=(deepspeed --num_gpus "$GPUS" --master_port "$MASTER_PORT")
    fi
    ;;
  *)
    echo "LAUNCHER must be torchrun or deepspeed, got '$LAUNCHER'" >&2
    exit 2
    ;;
esac

COMMAND=("${LAUNCH[@]}" "$HERE/train_mem.py" "${TRAIN_ARGS[@]}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${COMMAND[@]}"
  echo
  exit 0
fi
exec "${COMMAND[@]}"
