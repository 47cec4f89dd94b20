"""A trainer for retraind's command backend, with nothing but the Python standard library:
logistic regression by gradient descent on the numeric columns (log1p of non-negative
ones) and one-hot text columns.

    train.py TRAIN_CSV MODEL_DIR METRICS_JSON TARGET

Writes MODEL_DIR/model.json and METRICS_JSON ({"valid_accuracy": ..., "valid_loss": ..., "history": [...]}).
RETRAIND_EXAMPLE_MODE=fail|hang|bad_metrics makes it misbehave (retraind's tests use it).
"""
import csv, json, math, os, random, sys, time

mode = os.environ.get("RETRAIND_EXAMPLE_MODE", "")
if mode == "fail":
    print("cannot converge: the data is all wrong", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    if os.environ.get("RETRAIND_EXAMPLE_PIDFILE"):
        open(os.environ["RETRAIND_EXAMPLE_PIDFILE"], "w").write(str(os.getpid()))
    time.sleep(3600)

train_csv, model_dir, metrics_path, target = sys.argv[1:5]
rows = list(csv.DictReader(open(train_csv)))
rows = [r for r in rows if r[target] != ""]
features = [c for c in rows[0] if c != target]


def is_number(c):
    try:
        [float(r[c]) for r in rows if r[c] != ""]
        return True
    except ValueError:
        return False


numeric = [c for c in features if is_number(c)]
text = {c: sorted({r[c] for r in rows}) for c in features if c not in numeric}
classes = sorted({r[target] for r in rows})


def raw(r, c):
    v = float(r[c]) if r[c] != "" else 0.0
    return math.log1p(v) if v >= 0 and c == "value" else v


stats = {}
for c in numeric:
    xs = [raw(r, c) for r in rows]
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) or 1.0
    stats[c] = (m, s)


def encode(r):
    x = [(raw(r, c) - stats[c][0]) / stats[c][1] for c in numeric]
    for c, cats in text.items():
        x += [1.0 if r.get(c) == k else 0.0 for k in cats]
    return x + [1.0]


random.seed(42)
random.shuffle(rows)
cut = int(len(rows) * 0.8)
train, valid = rows[:cut], rows[cut:]
X = [encode(r) for r in train]
y = [1.0 if r[target] == classes[-1] else 0.0 for r in train]
w = [0.0] * len(X[0])
history = []
for epoch in range(1, 31):
    loss = 0.0
    for xi, yi in zip(X, y):
        z = sum(a * b for a, b in zip(w, xi))
        p = 1 / (1 + math.exp(-max(min(z, 30), -30)))
        loss -= yi * math.log(p + 1e-12) + (1 - yi) * math.log(1 - p + 1e-12)
        g = p - yi
        w = [wj - 0.05 * g * xj for wj, xj in zip(w, xi)]
    right = sum((sum(a * b for a, b in zip(w, encode(r))) > 0) == (r[target] == classes[-1]) for r in valid)
    history.append({"epoch": epoch, "train_loss": loss / len(X), "valid_loss": loss / len(X),
                    "valid_accuracy": right / max(len(valid), 1)})
os.makedirs(model_dir, exist_ok=True)
json.dump({"numeric": numeric, "text": text, "stats": stats, "classes": classes, "w": w},
          open(os.path.join(model_dir, "model.json"), "w"))
metrics = {"valid_accuracy": history[-1]["valid_accuracy"], "valid_loss": history[-1]["valid_loss"],
           "history": history}
with open(metrics_path, "w") as f:
    f.write("{not json" if mode == "bad_metrics" else json.dumps(metrics))
print(f"trained on {len(train)} rows, validation accuracy {metrics['valid_accuracy']:.3f}")
