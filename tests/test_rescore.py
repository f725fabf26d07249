"""experiments.rescore: runs made before per-image counts were stored get them from their saved model, the same
counts training would have written; a model that does not give the stored scores is refused."""

import json
import shutil


def test_rescore_adds_the_counts_training_writes(runs, tmp_path, capsys):
    from experiments.rescore import main
    from experiments.results import load_runs, summarize

    sweep = tmp_path / "sweep"
    for name in ("baseline", "kd"):
        shutil.copytree(runs[name], sweep / name)
    trained = {n: json.loads((sweep / n / "metrics.json").read_text()) for n in ("baseline", "kd")}
    assert all("val_counts_per_image" in m for m in trained.values())  # training writes them
    for n, m in trained.items():  # as a run of an earlier version: no counts
        old = {k: v for k, v in m.items() if not k.endswith("_counts_per_image")}
        (sweep / n / "metrics.json").write_text(json.dumps(old))
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "rescored 2 runs, 0 already had counts, 0 refused" in out
    for n, m in trained.items():
        got = json.loads((sweep / n / "metrics.json").read_text())
        assert got["val_counts_per_image"] == m["val_counts_per_image"]
        assert got["rescored"]["from"] == "student.keras" and "val_last_counts_per_image" not in got
    s = summarize(load_runs(sweep)).set_index("config")
    kd = s.loc[[c for c in s.index if "KD" in c][0]]
    assert kd["d_miou_lo"] <= kd["d_miou"] <= kd["d_miou_hi"]
    assert main([str(sweep)]) == 0 and "rescored 0 runs, 2 already had counts" in capsys.readouterr().out


def test_rescore_refuses_a_model_that_is_not_the_metrics_one(runs, tmp_path, capsys):
    from experiments.rescore import main

    run = tmp_path / "sweep" / "baseline"
    shutil.copytree(runs["baseline"], run)
    m = json.loads((run / "metrics.json").read_text())
    m.pop("val_counts_per_image")
    m["val"]["mean_iou"] = round(m["val"]["mean_iou"] - 0.05, 6)
    (run / "metrics.json").write_text(json.dumps(m))
    assert main([str(run.parent)]) == 1
    out = capsys.readouterr().out
    assert "not the model of these metrics" in out and "1 refused" in out
    assert "val_counts_per_image" not in json.loads((run / "metrics.json").read_text())
