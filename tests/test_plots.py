"""experiments.plots.score_vs: one line per setting of the run fields other than the one it varies (T or lambda)."""

import pandas as pd

from training.naming import RunSpec


def _runs() -> pd.DataFrame:
    """KD runs of unet4 as experiments.results.load_runs has them: T 1, 2 and auto (resolved to 1.2 and 1.5), lam 0.5
    and 0.9, with and without the Lovasz epochs; and one baseline."""
    rows = []
    for T, resolved in ((1.0, None), (2.0, None), ("auto", 1.2), ("auto", 1.5)):
        for lam in (0.5, 0.9):
            for lov in (0, 3):
                s = RunSpec("unet4", teacher="unet8", lam=lam, temperature=T, lovasz_epochs=lov, resolved_temperature=resolved)
                temp = resolved if T == "auto" else T
                rows.append(dict(kind="student", model="unet4", teacher="unet8", lam=lam, temperature=temp, auto_T=T == "auto"))
                rows[-1].update(
                    scale="T", unlabelled=False, n_unlabelled=0, unlabelled_images=0, flip=True, options=s.extras[0].lstrip("_")
                )
                rows[-1].update(label=s.label, mean_iou=0.5 + lam / 10, kaggle_map=0.4 + lam / 10)
    rows.append(dict(rows[0], lam=0.0, label="unet4 baseline", options=""))
    return pd.DataFrame(rows)


def _lines(fig) -> list[str]:
    return [t for t in fig.axes[0].get_legend_handles_labels()[1] if not t.startswith(("baseline", "teacher"))]


def test_lines_against_T_and_lambda():
    from experiments import plots

    df = _runs()
    # against T: the numeric T runs form one line per lam and option, the T=auto runs another (at their resolved T)
    assert sorted(_lines(plots.score_vs(df, "temperature"))) == sorted(
        f"unet4 KD T=auto lam={lam} s=T{lov}" if auto else f"unet4 KD lam={lam} s=T{lov}"
        for auto in (False, True)
        for lam in (0.5, 0.9)
        for lov in ("", " +lovasz3")
    )
    # against lambda: one line per T (each resolved T=auto its own) and option
    assert sorted(_lines(plots.score_vs(df, "lam"))) == sorted(
        f"unet4 KD T={T} s=T{lov}" for T in ("1", "2", "auto(1.20)", "auto(1.50)") for lov in ("", " +lovasz3")
    )
