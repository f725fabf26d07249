"""Every architecture of the registry honours one contract: (H, W, 1) -> linear 1x1 conv `logits` -> sigmoid,
named stages, registered layers only (safe-mode reload), and bad widths / depths / sizes refused in one line."""

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from common.choices import ARCHITECTURES  # noqa: E402
from models.registry import BUILDERS, build_model, check_arch  # noqa: E402

SMALL = {"unet": 2, "resunet": 2, "sepunet": 4, "mbv2cat": 2, "mbv2add": 2, "lraspp": 2}


def test_every_architecture_is_tested_here():
    assert set(SMALL) == set(ARCHITECTURES) == set(BUILDERS)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_contract_and_safe_reload(arch, upsample, tmp_path):
    m = build_model(arch, (64, 64, 1), SMALL[arch], 3, upsample, name=f"{arch}_t")
    logits = m.get_layer("logits")
    assert isinstance(logits, keras.layers.Conv2D) and logits.kernel_size == (1, 1) and logits.filters == 1
    assert logits.activation is keras.activations.linear
    assert m.output_shape == (None, 64, 64, 1) and m.layers[-1].input is logits.output
    names = {layer.name for layer in m.layers}
    assert {"enc0_out", "enc1_out"} <= names  # named stages for feature distillation and inspection
    x = np.random.default_rng(0).random((2, 64, 64, 1), np.float32)
    p = np.asarray(m.predict(x, verbose=0))
    assert p.shape == (2, 64, 64, 1) and np.all((p >= 0) & (p <= 1))
    m.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again.predict(x, verbose=0)), p, atol=1e-6)


def test_separable_unet_is_separable_after_the_stem():
    m = build_model("sepunet", (64, 64, 1), 8, 3)
    full = [layer.name for layer in m.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert full == ["enc0_stem_conv"]  # every other 3x3 is depthwise
    assert any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in m.layers)


def test_mbv2_add_skips_have_no_concat():
    cat = build_model("mbv2cat", (64, 64, 1), 4, 3)
    add = build_model("mbv2add", (64, 64, 1), 4, 3)
    assert any(isinstance(layer, keras.layers.Concatenate) for layer in cat.layers)
    assert not any(isinstance(layer, keras.layers.Concatenate) for layer in add.layers)
    relu6 = [layer for layer in add.layers if isinstance(layer, keras.layers.ReLU)]
    assert relu6 and all(float(layer.max_value) == 6.0 for layer in relu6)


@pytest.mark.parametrize(
    "arch,shape,width,depth,words",
    [
        ("resnet", (128, 128, 1), 4, 4, "choose one of lraspp, mbv2add, mbv2cat, resunet, sepunet, unet"),
        ("sepunet", (128, 128, 1), 0, 4, "no channels"),
        ("unet", (100, 100, 1), 4, 4, "not divisible by 2**depth = 16"),
        ("lraspp", (128, 128, 1), 4, 1, "depth must be >= 2"),
        ("mbv2cat", (128, 128, 1), 4, 0, "depth must be >= 1"),
    ],
)
def test_bad_architecture_settings_are_one_line(arch, shape, width, depth, words):
    with pytest.raises(ValueError, match=re.escape(words)) as e:
        check_arch(arch, shape, width, depth)
    assert "\n" not in str(e.value)
