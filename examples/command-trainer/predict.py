"""Scorer for models written by train.py: predict.py MODEL_DIR INPUT_CSV OUTPUT_CSV.
Writes `prediction` and `p_<class>` columns, one row per input row, in order."""
import csv, json, math, os, sys

model_dir, input_csv, output_csv = sys.argv[1:4]
m = json.load(open(os.path.join(model_dir, "model.json")))


def raw(r, c):
    v = float(r[c]) if r.get(c, "") != "" else 0.0
    return math.log1p(v) if v >= 0 and c == "value" else v


with open(output_csv, "w") as out:
    lo, hi = m["classes"][0], m["classes"][-1]
    out.write(f"prediction,p_{lo},p_{hi}\n")
    for r in csv.DictReader(open(input_csv)):
        x = [(raw(r, c) - m["stats"][c][0]) / m["stats"][c][1] for c in m["numeric"]]
        for c, cats in m["text"].items():
            x += [1.0 if r.get(c) == k else 0.0 for k in cats]
        z = sum(a * b for a, b in zip(m["w"], x + [1.0]))
        p = 1 / (1 + math.exp(-max(min(z, 30), -30)))
        out.write(f"{hi if p > 0.5 else lo},{1 - p:.6f},{p:.6f}\n")
