"""PyTorch CPU baseline for `benches/throughput.rs`: the same model on the same token ids.

Usage (in a virtualenv outside the repository with torch, transformers and safetensors):

    cargo bench -p tessera-encoder --bench throughput -- --threads 1 --dump-ids /tmp/ids.json
    python engine/encoder/scripts/torch_throughput.py --model-dir DIR --ids /tmp/ids.json --threads 1,2

DIR is the ColBERT directory the bench used ($HOME/.cache/tessera/models/colbert-minilm-gt-0.1.0).
Inputs are batched as sentence-transformers does (sorted by length, padded per batch with an
attention mask); the timed work is transformer + projection + L2 normalisation + skiplist
filtering, in float32 under torch.inference_mode(), best of --repeats after one warm-up.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    ids = json.load(open(args.ids))
    tokens = sum(len(x) for x in ids)
    model = AutoModel.from_pretrained(args.model_dir, torch_dtype=torch.float32).eval()
    dense = load_file(os.path.join(args.model_dir, "1_Dense", "model.safetensors"))["linear.weight"]
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    settings = json.load(open(os.path.join(args.model_dir, "config_sentence_transformers.json")))
    skip = torch.tensor([tok.token_to_id(w) for w in settings["skiplist_words"]])
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = []
    for start in range(0, len(order), args.batch_size):
        chunk = [ids[i] for i in order[start:start + args.batch_size]]
        width = max(len(x) for x in chunk)
        input_ids = torch.full((len(chunk), width), 103, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, x in enumerate(chunk):
            input_ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
        batches.append((input_ids, mask))

    def run():
        out = []
        with torch.inference_mode():
            for input_ids, mask in batches:
                hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                proj = torch.nn.functional.normalize(hidden @ dense.T, p=2, dim=-1)
                keep = mask.bool() & ~torch.isin(input_ids, skip)
                out.extend(proj[i][keep[i]] for i in range(proj.shape[0]))
        return out

    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        run()
        best, best_cpu = float("inf"), float("inf")
        for _ in range(max(1, args.repeats)):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        print(f"torch={torch.__version__} threads={threads} passages={len(ids)} tokens={tokens} "
              f"batch={args.batch_size} best_of={args.repeats} seconds={best:.3f} "
              f"cpu_seconds={best_cpu:.3f} tokens_per_s={tokens / best:.0f} "
              f"passages_per_s={len(ids) / best:.1f}")


if __name__ == "__main__":
    main()
