"""The comparison notebook and experiments.compare on a sweep like the real ones: two student models (unet2 and sepunet2)
with a baseline and distilled configs each, 2 seeds, the teacher in a separate dir (named by the students' configs, as
runs/cpu_e45 names runs/cpu/teacher), per-image scores and pixel counts; tiny untrained model files and a synthetic data
set so the mask grid runs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"unet2": ("unet", 2, 3), "sepunet2": ("sepunet", 2, 3)}
# (model, config fields, its per-image score shift): unet2 has a baseline and two distilled configs, sepunet2 one
CONFIGS = [
    ("unet2", {"lam": 0.0}, 0.0),
    ("unet2", {"lam": 0.9}, 0.10),
    ("unet2", {"lam": 0.9, "unlabelled": True}, 0.15),
    ("sepunet2", {"lam": 0.0}, -0.05),
    ("sepunet2", {"lam": 0.9}, 0.02),
]


def _metrics(rng, ids, masks, shift):
    """Best and last epoch's per-image Kaggle scores and [tp, fp, fn, tn], and the pooled scores they give."""
    from metrics.segmentation import confusion_per_image, kaggle_per_image, pooled_iou

    out = {"val_ids": ids}
    for prefix in ("val", "val_last"):
        noise = rng.random(masks.shape) < np.clip(0.2 - shift, 0.01, 1)
        pred = masks ^ noise
        counts, kag = confusion_per_image(pred, masks), kaggle_per_image(pred, masks)
        miou, salt = pooled_iou(counts.sum(0))
        out[prefix] = {"n_images": len(ids), "mean_iou": float(miou), "salt_iou": float(salt), "kaggle_map": float(kag.mean())}
        out[f"{prefix}_kaggle_per_image"] = np.round(kag, 4).tolist()
        out[f"{prefix}_counts_per_image"] = counts.tolist()
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """tmp/data (Kaggle layout), tmp/cpu/teacher (the teacher run), tmp/cpu_e45 (the students, e45-style)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from data.split import stratified_split
    from data.synthetic import generate
    from data.tgs import load_data
    from models.registry import build_model
    from training.naming import RunSpec

    base = tmp_path_factory.mktemp("compare")
    generate(base / "data", n_train=40, n_test=4, seed=0)
    data = load_data(base / "data", progress=False)
    split = stratified_split(data.ids, data.masks, 0.25, 0)
    val = data.subset(split["val"])
    rng = np.random.default_rng(0)
    teacher = base / "cpu" / "teacher"
    teacher.mkdir(parents=True)
    build_model("unet", (104, 104, 1), 4, 3, name="unet4").save(teacher / "teacher.keras")
    cfg = {"data": str(base / "data"), "arch": "unet", "base_filters": 4, "depth": 3, "epochs": 2, "seed": 0, "input_size": 104}
    (teacher / "config.json").write_text(json.dumps(cfg))
    (teacher / "metrics.json").write_text(json.dumps({**_metrics(rng, val.ids, val.masks, 0.2), "params": 1000, "best_epoch": 2}))
    (teacher / "split.json").write_text(json.dumps(split))
    files = {}
    for name, (arch, width, depth) in MODELS.items():
        files[name] = base / f"{name}.keras"
        build_model(arch, (104, 104, 1), width, depth, name=name).save(files[name])
    e45 = base / "cpu_e45"
    for model, fields, shift in CONFIGS:
        arch, width, depth = MODELS[model]
        for seed in (0, 1):
            cfg = {"data": str(base / "data"), "arch": arch, "base_filters": width, "depth": depth, "seed": seed, "epochs": 45}
            cfg |= {"temperature": 2.0, "scale": "T", "unlabelled": [], **fields}
            if fields["lam"]:
                cfg |= {"teacher": [str(teacher / "teacher.keras")], "teacher_cache": str(base / "cpu" / "teacher" / "cache")}
                cfg["unlabelled"] = [str(base / "data")] if fields.get("unlabelled") else []
            met = {**_metrics(rng, val.ids, val.masks, shift + 0.01 * seed), "params": 100, "best_epoch": 40}
            if fields["lam"]:
                met["teacher"] = {"label": "unet4d3", "val": {"kaggle_map": 0.8}}
            run = e45 / "tmp"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps(cfg))
            (run / "metrics.json").write_text(json.dumps(met))
            (run / "split.json").write_text(json.dumps(split))
            (run / "history.csv").write_text("epoch,hard,soft,val_mean_iou\n1,0.5,0.1,0.6\n2,0.4,0.08,0.7\n")
            shutil.copy(files[model], run / "student.keras")
            run.rename(e45 / RunSpec.from_run_dir(run).name)
    return {"base": base, "teacher": teacher, "e45": e45}


def test_forest_pairs_each_config_with_its_own_models_baseline(sweeps):
    from experiments import compare

    df, bad = compare.load(sweeps["e45"], sweeps["teacher"])
    assert not bad and (df.kind == "teacher").sum() == 1 and (df.kind == "student").sum() == 10
    table = compare.forest(df, "lam=0", "last")
    assert sorted(table.config) == ["sepunet2d3 KD T=2 lam=0.9 s=T", "unet2d3 KD T=2 lam=0.9 s=T", "unet2d3 KD T=2 lam=0.9 s=T +unl"]
    for r in table.itertuples():
        assert r.reference == f"{r.model} baseline" and r.n_seeds == 2
        assert r.miou_lo <= r.d_miou <= r.miou_hi and r.kaggle_lo <= r.d_kaggle <= r.kaggle_hi
    seeds = compare.per_seed(df, "last")
    assert ("kaggle_map_last", 0) in seeds.columns and ("kaggle_map_last", 1) in seeds.columns
    assert ("teacher unet4d3", "teacher unet4d3") in seeds.index and len(seeds) == 6
    models = compare.mask_models(df, "sepunet2d3", "lam=0", "last")
    assert models["teacher"] == sweeps["teacher"] / "teacher.keras"
    assert models["reference: sepunet2d3 baseline"].parent.name == "sepunet2d3_baseline_s0"
    assert models["best: sepunet2d3 KD T=2 lam=0.9 s=T"].parent.name.startswith("sepunet2d3_from_unet4d3")


def test_notebook_on_a_multi_model_sweep_with_a_separate_teacher(sweeps, tmp_path, monkeypatch):
    """The notebook, as `python -m experiments.notebook` runs it: the per-seed table, the forest plot, the summary, a
    mask grid with the teacher and the baseline of the same model as the best configuration."""
    from experiments.notebook import main

    monkeypatch.setenv("SWEEP_DIR", str(sweeps["e45"]))
    monkeypatch.setenv("TEACHER_DIR", str(sweeps["teacher"]))
    out = tmp_path / "executed.ipynb"
    assert main([str(ROOT / "notebooks" / "compare_students.ipynb"), str(out)]) == 0
    nb = json.loads(out.read_text())
    text = "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c["outputs"]
    )
    assert "every run could be read" in text
    assert "sepunet2d3 baseline" in text and "unet2d3 KD T=2 lam=0.9 s=T +unl" in text  # per-seed table and summary
    assert "reference: unet2d3 baseline" in text and f"teacher: {sweeps['teacher'] / 'teacher.keras'}" in text  # mask grid
    assert "best: unet2d3 KD" in text and "sepunet" not in text.split("reference: unet2d3 baseline")[1].split("\n")[0]
    figures = [c for c in nb["cells"] if c["cell_type"] == "code" and any("image/png" in o.get("data", {}) for o in c["outputs"])]
    sources = ["".join(c["source"]) for c in figures]
    assert any("forest_plot" in s for s in sources) and any("mask_grid" in s for s in sources)
    assert sum("learning_curves" in s for s in sources) == 1


def test_publish_copies_summaries_without_models_and_compares_the_same(sweeps, tmp_path, capsys):
    from common.cli import UserError
    from experiments import compare
    from experiments.publish import main

    out = tmp_path / "docs" / "results" / "e45"
    assert main([str(sweeps["e45"]), "--out", str(out)]) == 0
    assert "published 10 runs" in capsys.readouterr().out
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert files == {"config.json", "metrics.json", "history.csv", "results.csv", "summary.csv", "summary.txt"}
    a, b = compare.forest(compare.load(sweeps["e45"])[0]), compare.forest(compare.load(out)[0])
    assert a.drop(columns="model").equals(b.drop(columns="model")) and list(a.model) == list(b.model)
    with pytest.raises(Exception, match="exists; pass --overwrite"):
        main([str(sweeps["e45"]), "--out", str(out)])
    assert main([str(sweeps["e45"]), "--out", str(out), "--overwrite"]) == 0

    docs = tmp_path / "docs"  # holds the published copy and more: not a published sweep, so never replaced
    (docs / "RESULTS.md").write_text("keep me")
    with pytest.raises(UserError, match=f"^--out {re.escape(str(docs))} is not empty and is not a published sweep"):
        main([str(sweeps["e45"]), "--out", str(docs), "--overwrite"])
    with pytest.raises(UserError, match="must not hold"):  # the sweep's own parent (runs/)
        main([str(sweeps["e45"]), "--out", str(sweeps["e45"].parent), "--overwrite"])
    assert (docs / "RESULTS.md").read_text() == "keep me" and (out / "summary.csv").is_file() and sweeps["e45"].is_dir()


def test_mask_models_without_a_reference_config_keeps_the_teacher_and_the_best(sweeps):
    """A sweep with no run matching REFERENCE (e.g. only distilled runs): the mask grid still gets the teacher and the
    best configuration, and the forest has nothing to pair, instead of the notebook failing."""
    from experiments import compare

    df, _ = compare.load(sweeps["e45"])
    kd_only = df[df.lam > 0]
    models = compare.mask_models(kd_only, "unet2d3", "lam=0", "last")
    assert set(models) == {"teacher", next(k for k in models if k.startswith("best: unet2d3 KD"))}
    assert compare.forest(kd_only, "lam=0").empty
