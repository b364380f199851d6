#!/bin/bash
# A lent GPU machine (the `device` tool): train a conditional flag model there and bring back
# best/ (split under 16 MB a file; join with `cat model.safetensors.part* > model.safetensors`).
# Settings by environment: CONFIG (cpu-cond), OUTDIR (runs/gpu-flag), MINUTES of training (7),
# TRAIN_LIMIT seconds for the whole training command (545), INIT (a checkpoint to start from),
# LR (1e-3), BALANCE (--style-balance), EVAL_EVERY (1000). What ran for the shipped checkpoints is in their cards.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
OUTDIR=${OUTDIR:-runs/gpu-flag}
timeout -s TERM ${TRAIN_LIMIT:-545} python3 scripts/device_train.py train diffusion --config ${CONFIG:-cpu-cond} \
  --standardize --posterior mean --transpositions 2 --silence flag --out $OUTDIR --ema 0.999 \
  --minutes ${MINUTES:-7} --eval-every ${EVAL_EVERY:-1000} --save-minutes 3 ${INIT:+--init-from $INIT} \
  ${BALANCE:+--style-balance $BALANCE} \
  --set batch_size=512 learning_rate=${LR:-1e-3} lr_decay=0.5 lr_decay_every=3000 \
  > $OUT/train.log 2>&1
echo "train exit $?"
tr '\r' '\n' < $OUT/train.log | grep -v "%|" | tail -25
cp $OUTDIR/log.jsonl $OUT/ 2>/dev/null
if [ -d $OUTDIR/best ]; then
  cp $OUTDIR/best/config.json $OUTDIR/best/scaler.safetensors $OUT/
  split -b 15M -d $OUTDIR/best/model.safetensors $OUT/model.safetensors.part
  sha256sum $OUTDIR/best/model.safetensors
fi
gzip -f $OUT/train.log
ls -la $OUT
