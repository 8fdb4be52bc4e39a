source .gl/setup.sh
for f in target/exp/*/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 170 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
dec() {
  echo "=== l2 $3 MiB, $1 $2" >> $OUT/decode.txt
  Q=; [ $2 = none ] || Q="--quantize $2"
  TORCHLESS_L2_PREFETCH_MIB=$3 timeout 40 target/exp/p/l2 bench-model --backend gpu --model $1 \
    --prefill-tokens 0 --decode-tokens 128 $Q 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
}
for i in 1 2; do for mib in 0 16 32; do dec $M none $mib; done; done
for mib in 0 16; do dec $M q4_k $mib; done
for v in 1-2-8 1-4-64 3-16-64; do
  echo "=== r$v 256" >> $OUT/topk.txt
  timeout 30 target/exp/o/r$v bench --backend gpu --mib 256 --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
done
