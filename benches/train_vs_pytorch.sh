#!/usr/bin/env bash
# Training, retraind's burn trainer vs the same MLP in PyTorch (CPU, as many threads as
# cores), on the same CSV, timed in the same run. Prints the ratio.
#
#   benches/train_vs_pytorch.sh [ROWS] [EPOCHS] [BATCH] [HIDDEN]
#   DEVICE=cuda benches/train_vs_pytorch.sh            # both on the GPU (burn built with --features cuda)
#   BENCH_BIN=path/to/train-bench DEVICE=cuda …        # a bench binary built elsewhere (no cargo here)
#
# Defaults: 200,000 rows x 20 features, 10 epochs, batch 256, 20-64-64-2. Both sides: Adam
# (lr 0.001), cross-entropy, a 90/10 train/validation split with validation loss and
# accuracy computed every epoch, no dropout. PyTorch goes into a throwaway venv (pip pulls
# about 5 GB of CUDA libraries with it; see docs/benchmarks.md). Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-200000}"
epochs="${2:-10}"
batch="${3:-256}"
hidden="${4:-64}"
threads="$(nproc)"
device="${DEVICE:-cpu}"

work="${BENCH_DIR:-/tmp/retraind-bench}"
venv="${TORCH_VENV:-$work/torch-venv}"
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy torch
fi

data="$work/train-$rows.csv"
if [ ! -f "$data" ]; then
  "$venv/bin/python" - "$rows" "$data" <<'PY'
import sys, numpy as np
rows, path = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(11)
x = rng.normal(size=(rows, 20))
w = rng.normal(size=20)
y = (x @ w + 0.5 * np.sin(3 * x[:, 0]) + rng.normal(scale=0.5, size=rows) > 0).astype(int)
header = ",".join(f"f{i}" for i in range(20)) + ",target"
np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
           fmt=["%.6f"] * 20 + ["%d"])
PY
fi

if [ -n "${BENCH_BIN:-}" ]; then
  RETRAIND_BENCH_DEVICE="$device" "$BENCH_BIN" "$data" "$epochs" "$batch" "$hidden" > "$work/burn.json"
else
  features=()
  case "$device" in cuda*) features=(--features cuda) ;; wgpu) features=(--features wgpu) ;; esac
  RETRAIND_BENCH_DEVICE="$device" cargo bench "${features[@]}" --bench train --quiet -- \
    "$data" "$epochs" "$batch" "$hidden" > "$work/burn.json"
fi
"$venv/bin/python" - "$data" "$epochs" "$batch" "$hidden" "$threads" "$device" > "$work/torch.json" <<'PY'
import json, sys, time
import numpy as np, torch
path, epochs, batch, hidden, threads = sys.argv[1], *map(int, sys.argv[2:6])
dev = torch.device("cuda" if sys.argv[6].startswith("cuda") else "cpu")
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
torch.set_num_threads(threads)
torch.manual_seed(42)
t0 = time.perf_counter()
d = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
x, y = d[:, :-1], d[:, -1].astype(np.int64)
rng = np.random.default_rng(42)
idx = rng.permutation(len(y))
nv = round(len(y) * 0.1)
vi, ti = idx[:nv], idx[nv:]
mean, std = x[ti].mean(0), x[ti].std(0) + 1e-12
x = (x - mean) / std
xt, yt = torch.from_numpy(x[ti]).to(dev), torch.from_numpy(y[ti]).to(dev)
xv, yv = torch.from_numpy(x[vi]).to(dev), torch.from_numpy(y[vi]).to(dev)
load_s = time.perf_counter() - t0
model = torch.nn.Sequential(torch.nn.Linear(20, hidden), torch.nn.ReLU(),
                            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                            torch.nn.Linear(hidden, 2)).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=0.001)
loss_fn = torch.nn.CrossEntropyLoss()
sync()
t1 = time.perf_counter()
for epoch in range(epochs):
    model.train()
    perm = torch.randperm(len(yt), device=dev)
    for i in range(0, len(yt), batch):
        b = perm[i:i + batch]
        opt.zero_grad()
        loss = loss_fn(model(xt[b]), yt[b])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(xv)
        vloss = loss_fn(logits, yv).item()
        acc = (logits.argmax(1) == yv).float().mean().item()
sync()
train_s = time.perf_counter() - t1
print(json.dumps({"tool": "pytorch", "version": torch.__version__, "threads": threads,
                  "device": dev.type,
                  "load_s": load_s, "train_s": train_s, "valid_accuracy": acc}))
PY

"$venv/bin/python" - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
b = json.load(open(os.path.join(work, "burn.json")))
t = json.load(open(os.path.join(work, "torch.json")))
print(f"rows {b['rows']}, {b['epochs']} epochs")
print(f"burn     train {b['train_s']:7.2f} s  valid accuracy {b['valid_accuracy']:.4f}  (device {b['device']})")
print(f"pytorch  train {t['train_s']:7.2f} s  valid accuracy {t['valid_accuracy']:.4f}  ({t['version']}, {t['device']}, {t['threads']} threads)")
print(f"ratio    burn / pytorch = {b['train_s'] / t['train_s']:.2f}x (goal <= 1.0x)")
PY
