"""RunSpec is the one place that names a run; an ensemble's or a weighted ensemble's runs never share a single teacher's name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cache import ensemble_label
from training.naming import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def test_soft_target_labels():
    assert ensemble_label(["unet8"]) == "unet8"
    assert ensemble_label(["unet8", "unet8"]) == "unet8x2"
    assert ensemble_label(["unet8", "unet8"], [1, 1]) == "unet8x2"
    assert ensemble_label(["unet8", "unet8"], [3, 1]) == "unet8x2w0.75-0.25"
    assert ensemble_label(["unet8", "unet16"]) == "unet8_unet16"


def test_names_and_labels():
    kd = dict(model="unet4", teacher="unet8", lam=0.9, temperature=2.0, scale="T", seed=1)
    assert RunSpec(**kd).name == "unet4_from_unet8_T2_l0.9_sT_s1"
    assert RunSpec(**{**kd, "teacher": "unet8x2"}).name == "unet4_from_unet8x2_T2_l0.9_sT_s1"  # cached ensemble != single teacher
    assert RunSpec(**{**kd, "teacher": "unet8x2w0.75-0.25"}).name != RunSpec(**{**kd, "teacher": "unet8x2"}).name
    assert RunSpec(**{**kd, "unlabelled": True, "flip": False}).name == "unet4_from_unet8_T2_l0.9_sT_unl_noflip_s1"
    assert RunSpec("unet4", seed=0).name == "unet4_baseline_s0" and RunSpec("unet4").label == "unet4 baseline"
    assert RunSpec(**{**kd, "teacher": "unet8x2", "unlabelled": True}).label == "unet4 KD T=2 lam=0.9 s=T +unl ens2"
    assert RunSpec(**{**kd, "teacher": "blackbox"}).label == "unet4 KD T=2 lam=0.9 s=T blackbox"
    # an ensemble of two kinds is an ensemble too; a single teacher whose name has an underscore is not
    assert RunSpec(**{**kd, "teacher": "unet16_resunet8"}).label == "unet4 KD T=2 lam=0.9 s=T ens2"
    assert RunSpec(**{**kd, "teacher": "unet8_unet16_resunet8w0.5-0.25-0.25"}).label == "unet4 KD T=2 lam=0.9 s=T ens3 weighted"
    assert RunSpec(**{**kd, "teacher": "unet4_bilinear"}).label == "unet4 KD T=2 lam=0.9 s=T"
    assert RunSpec(**{**kd, "temperature": "auto"}, resolved_temperature=0.973).label.startswith("unet4 KD T=auto(0.97)")


@pytest.mark.parametrize(
    "cfg,label",
    [
        ({"base_filters": 4, "lam": 0.9, "temperature": 2.0, "scale": "T", "teacher": ["a.keras", "b.keras"], "seed": 0}, "ens2"),
        ({"base_filters": 4, "lam": 0.9, "temperature": 2.0, "scale": "T", "teacher": [], "teacher_cache": "c", "seed": 0}, "blackbox"),
    ],
)
def test_run_dirs_of_earlier_versions_get_labels(tmp_path, cfg, label):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "metrics.json").write_text(json.dumps({"temperature": 2.0}))
    assert label in RunSpec.from_run_dir(tmp_path).label


def test_model_names_say_depth_and_decoder_only_when_not_the_default():
    from training.naming import model_name

    assert model_name("unet", 4) == "unet4" and model_name("unet", 4, 4, "transpose") == "unet4"
    assert model_name("unet", 6, 3) == "unet6d3"
    assert model_name("unet", 4, 4, "bilinear") == "unet4_bilinear"
    assert model_name("sepunet", 8, 4, "bilinear") == "sepunet8" and model_name("mbv2add", 4, 4, "transpose") == "mbv2add4_transpose"
    cfg = {"arch": "sepunet", "base_filters": 8, "depth": 3, "upsample": "", "lam": 0, "seed": 2}
    assert RunSpec.from_config(cfg).name == "sepunet8d3_baseline_s2"


def test_options_off_by_default_name_their_runs():
    kd = {"base_filters": 4, "lam": 0.9, "temperature": 2.0, "scale": "T", "unlabelled": True, "seed": 0}
    assert RunSpec.from_config(kd, "unet8").name == "unet4_from_unet8_T2_l0.9_sT_unl_s0"
    tta = RunSpec.from_config({**kd, "teacher_tta": True, "lovasz_epochs": 3, "tune_threshold": True}, "unet8")
    assert tta.name == "unet4_from_unet8_T2_l0.9_sT_unl_tta_lov3_thr_s0"
    assert tta.label == "unet4 KD T=2 lam=0.9 s=T +unl +tta +lovasz3 +thr"
    base = RunSpec.from_config({**kd, "lam": 0, "lovasz_epochs": 2, "teacher_tta": True}, "unet8")
    assert base.name == "unet4_baseline_lov2_s0" and base.label == "unet4 baseline +lovasz2"  # tta needs a teacher


def test_unlabelled_count_names_runs_beyond_the_datas_own_test_images(tmp_path):
    """--unlabelled DATA keeps the old name; more folders name the count (_u18k), and from_run_dir reads it back."""
    import json

    from training.naming import RunSpec, count_label

    base = {"arch": "unet", "base_filters": 4, "lam": 0.9, "data": "cache/tgs.npz", "seed": 1}
    own = RunSpec.from_config({**base, "unlabelled": ["cache/tgs.npz"]}, "unet8", unlabelled_count=1000)
    more = RunSpec.from_config({**base, "unlabelled": ["cache/tgs.npz", "extra/images"]}, "unet8", unlabelled_count=18000)
    assert own.name == "unet4_from_unet8_T2_l0.9_sT_unl_s1"
    assert more.name == "unet4_from_unet8_T2_l0.9_sT_unl_u18k_s1"
    assert more.label == "unet4 KD T=2 lam=0.9 s=T +unl 18k"
    assert [count_label(n) for n in (18000, 1000, 1500, 150)] == ["18k", "1k", "1500", "150"]
    run = tmp_path / more.name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**base, "unlabelled": ["cache/tgs.npz", "extra/images"]}))
    (run / "metrics.json").write_text(json.dumps({"teacher": {"label": "unet8"}, "temperature": 2.0, "unlabelled_images": 18000}))
    assert RunSpec.from_run_dir(run).name == more.name


def test_configs_names_and_choices_import_no_keras():
    """The choices (common.choices), the configs and RunSpec are Keras-free: the sweep checks a preset against the scripts'
    own configs at plan time, and --list / --dry-run start at once."""
    code = "import sys, common.choices, student.config, training.naming; print(sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_recipe_is_the_label_without_its_teacher():
    """One recipe from unet8, unet16, an unet8x2 ensemble or a black box: one recipe label (experiments.epochs lines
    students of several teachers up by it); a baseline's and a teacher's recipe are their labels."""
    from training.naming import RunSpec

    kd = {"teacher": "unet8", "lam": 0.9, "temperature": 2.0, "scale": "T", "unlabelled": True, "lovasz_epochs": 9}
    specs = [RunSpec("unet4", "student", **{**kd, "teacher": t}) for t in ("unet8", "unet16", "unet8x2", "blackbox")]
    specs.append(RunSpec("unet4", "student", **{**kd, "teacher": "unet8x2", "teacher_tta": True}))  # flip-averaged targets
    # a label names an ensemble, a black box and flip-averaged targets, not which single teacher: unet8's and unet16's share one
    assert len({s.label for s in specs}) == 4 and {s.recipe for s in specs} == {"unet4 KD T=2 lam=0.9 s=T +unl +lovasz9"}
    assert RunSpec("unet4", "student").recipe == "unet4 baseline" and RunSpec("unet8", "teacher").recipe == "teacher unet8"
