"""CPD / CPD-LB saliency networks: structure, figures, data, metrics, training, eval and ONNX export."""

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lbdeploy.cli import main
from lbdeploy.analysis import analyze, cpd_block_figures
from lbdeploy.checkpoint import load_checkpoint, load_model, save_checkpoint
from lbdeploy.data import open_dataset
from lbdeploy.data.saliency import SaliencyFolder, SyntheticSaliency
from lbdeploy.errors import ConfigError, InputError
from lbdeploy.evaluation.saliency import SaliencyMeter, saliency_report
from lbdeploy.models import build_model, get_preset, list_models
from lbdeploy.models.blocks import PreActBottleneck
from lbdeploy.models.cpd import BACKBONES, ConvBN, gaussian_kernel
from lbdeploy.models.ternary import TernaryConv2d
from lbdeploy.training.losses import saliency_loss
from lbdeploy.training.saliency_dataset import SaliencyTrainingSet
from lbdeploy.training.trainer import TrainConfig, train

SALIENCY = [name for name in list_models() if "backbone" in get_preset(name).config]
TINY = {"width": 4, "channels": 4, "input_size": (64, 64)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spatial_real_convs(model):
    """Real convs with a k x k (k > 1) square kernel, outside the stem and holistic attention."""
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1
            and m.kernel_size[0] == m.kernel_size[1] and m.in_channels > 3 and not name.startswith("ha.")]


# --- models -------------------------------------------------------------------------------------------


def test_registry_has_both_presets():
    assert set(SALIENCY) == {"cpd", "cpd-lb"}
    assert get_preset("cpd").config["backbone"] == "vgg16"  # CPD's headline model (CPD-R is ResNet50)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", SALIENCY)
def test_presets_return_both_maps_in_training_and_the_final_in_eval(name, backbone):
    model = build_model(name, backbone=backbone, **TINY)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final = model(x)
        attention, detection = model.train()(x)
    assert len(final) == 1 and final[0].shape == (2, 1, 64, 64)
    assert attention.shape == detection.shape == (2, 1, 64, 64)
    assert model.config["arch"] == name and model.config["backbone"] == backbone


@pytest.mark.parametrize("backbone", BACKBONES)
def test_cpd_lb_replaces_every_3x3_after_the_stem_and_cpd_has_no_ternary(backbone):
    lb = build_model("cpd-lb", backbone=backbone, **TINY)
    dense = build_model("cpd", backbone=backbone, **TINY)
    ternary = [m for m in lb.modules() if isinstance(m, TernaryConv2d)]
    assert ternary and {m.kernel_size for m in ternary} == {(3, 3)}
    assert {m.dilation for m in ternary} == {(1, 1), (3, 3), (5, 5), (7, 7)}  # RFB's dilated 3x3s too
    assert _spatial_real_convs(lb) == []
    assert not any(isinstance(m, TernaryConv2d) for m in dense.modules())
    assert _spatial_real_convs(dense)


def test_aggregation_and_rfb_3x3_units_become_lbbs():
    model = build_model("cpd-lb", **TINY)
    agg = model.agg_1
    assert isinstance(agg.conv_concat3, PreActBottleneck) and agg.conv_concat3.conv2.in_channels == 6  # 3c -> c_m = 3c/2
    assert isinstance(model.rfb_1[0].branch1[1], ConvBN) and model.rfb_1[0].branch1[1].conv.kernel_size == (1, 3)
    assert isinstance(model.rfb_1[0].branch1[3], PreActBottleneck) and model.rfb_1[0].branch1[3].conv2.dilation == (3, 3)


def test_two_branches_have_their_own_weights_and_ternary_draws():
    model = build_model("cpd-lb", **TINY)
    first = [m.weight for m in model.late_1.modules() if isinstance(m, TernaryConv2d)]
    second = [m.weight for m in model.late_2.modules() if isinstance(m, TernaryConv2d)]
    assert len(first) == len(second) and not all(torch.equal(a, b) for a, b in zip(first, second))


def test_seed_and_density_reach_the_ternary_layers():
    a, b = build_model("cpd-lb", seed=1, **TINY), build_model("cpd-lb", seed=2, density=0.25, **TINY)
    wa = [m.weight for m in a.modules() if isinstance(m, TernaryConv2d)]
    wb = [m.weight for m in b.modules() if isinstance(m, TernaryConv2d)]
    assert not torch.equal(wa[5], wb[5])
    assert abs(sum(int((w != 0).sum()) for w in wb) / sum(w.numel() for w in wb) - 0.25) < 0.01


@pytest.mark.parametrize("bad", [{"backbone": "alexnet"}, {"block": "xnor"}, {"input_size": (72, 72)},
                                 {"backbone": "resnet50", "input_size": (48, 48)}, {"width": 1}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        build_model("cpd-lb", **{**TINY, **bad})


def test_holistic_attention_kernel_is_a_normalized_centred_gaussian():
    k = gaussian_kernel()[0, 0]
    assert k.shape == (31, 31) and abs(float(k.sum()) - 1) < 1e-6
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    assert int(k.argmax()) == 15 * 31 + 15


# --- figures ------------------------------------------------------------------------------------------


def test_paper_nine_times_block_ratio():
    figures = cpd_block_figures()
    assert figures["flops_ratio"] == 9.0
    assert figures["flops_basic"] == 2 * 88 * 88 * 9 * 32 * 32
    assert figures["fixed_lbb"] == 16 * 16 * 9 and figures["trainable_lbb"] == 1200
    assert cpd_block_figures(64, 22)["flops_ratio"] == 9.0


def test_paper_size_figures_match_the_docs():
    """docs/models.md: CPD / CPD-LB with VGG16 at 352x352."""
    dense, lb = analyze(build_model("cpd")), analyze(build_model("cpd-lb"))
    assert (dense.trainable_params, dense.fixed_params, dense.ternary_layers) == (29_243_843, 0, 0)
    assert (lb.trainable_params, lb.fixed_params, lb.ternary_layers) == (4_301_987, 7_796_736, 58)
    assert round(dense.flops / 1e9, 2) == 118.71 and round(lb.flops / 1e9, 2) == 19.68
    assert lb.density == 0.5


# --- checkpoint ---------------------------------------------------------------------------------------


def test_checkpoint_round_trip_records_the_saliency_task(tmp_path):
    model = build_model("cpd-lb", backbone="resnet50", **TINY)
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded, ckpt = load_model(path)
    assert ckpt.metadata["task"] == "saliency" and ckpt.metadata["input_size"] == [64, 64]
    assert ckpt.metadata["output_activation"] == "sigmoid"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], loaded(x)[-1])


# --- data ---------------------------------------------------------------------------------------------


def _folder(root, names, image_dir="DUTS-TR-Image", mask_dir="DUTS-TR-Mask", masks=None):
    (root / image_dir).mkdir(parents=True)
    (root / mask_dir).mkdir()
    for i, name in enumerate(names):
        Image.fromarray(np.full((20, 30, 3), 10 * i, np.uint8)).save(root / image_dir / f"{name}.jpg")
    for i, name in enumerate(masks if masks is not None else names):
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10, 5:5 + i + 1] = 255
        Image.fromarray(mask).save(root / mask_dir / f"{name}.png")
    return root


def test_folder_layout_matches_images_and_masks_by_stem(tmp_path):
    root = _folder(tmp_path / "DUTS-TR", ["b", "a", "c"])
    data = SaliencyFolder(root, "train")
    assert len(data) == 3 and [p[0].stem for p in data.pairs] == ["a", "b", "c"]
    image, mask = data.load(2)
    assert image.shape == (20, 30, 3) and mask.dtype == bool and int(mask.sum()) == 5 * 3


def test_ecssd_names_and_separate_val_folder(tmp_path):
    train = _folder(tmp_path / "train", ["x"], "images", "ground_truth_mask")
    val = _folder(tmp_path / "ECSSD", ["y", "z"], "images", "masks")
    assert len(open_dataset(f"saliency:{train},{val}", "train")) == 1
    assert len(open_dataset(f"saliency:{train},{val}", "val")) == 2
    assert len(open_dataset(f"saliency:{val}", "train")) == 2  # one folder serves every split


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no mask"):
        SaliencyFolder(_folder(tmp_path / "a", ["p", "q"], masks=["p"]), "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="images folder"):
        SaliencyFolder(tmp_path / "empty", "val")
    with pytest.raises(ConfigError, match="no such folder"):
        open_dataset(f"saliency:{tmp_path / 'missing'}", "val")
    with pytest.raises(ConfigError, match="needs a path"):
        open_dataset("saliency", "val")


def test_synthetic_set_is_deterministic_with_real_objects():
    data = open_dataset("synthetic-saliency:10,4", "train", seed=3)
    assert isinstance(data, SyntheticSaliency) and len(data) == 10
    image, mask = data.load(7)
    again, mask_again = SyntheticSaliency("train", size=10, seed=3).load(7)
    assert np.array_equal(image, again) and np.array_equal(mask, mask_again)
    fractions = [data.load(i)[1].mean() for i in range(10)]
    assert min(fractions) > 0.01 and max(fractions) < 0.6
    val_image, _ = open_dataset("synthetic-saliency:10,8", "val", seed=3).load(7)
    assert not np.array_equal(val_image, image)
    assert image.shape == (96, 96, 3) and mask.shape == (96, 96)


def test_training_samples_flip_image_and_mask_together():
    from lbdeploy.data.augment import AugmentConfig

    data = SyntheticSaliency("train", size=8, image_size=64)
    flipping = SaliencyTrainingSet(data, (64, 64), (0.0,) * 3, (1.0,) * 3, AugmentConfig(flip=True, colour=0.0))
    plain = SaliencyTrainingSet(data, (64, 64), (0.0,) * 3, (1.0,) * 3)
    flipped = [i for i in range(8) if not torch.equal(flipping[i][1], plain[i][1])]
    assert flipped
    image, mask = flipping[flipped[0]]
    assert torch.equal(mask, plain[flipped[0]][1].flip(-1)) and torch.equal(image, plain[flipped[0]][0].flip(-1))
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_maps_resize_back_to_the_image_size():
    from lbdeploy.data.saliency import resize_probabilities

    prob = np.zeros((4, 4))
    prob[:, 2:] = 1.0
    resized = resize_probabilities(prob, (6, 8))
    assert resized.shape == (6, 8) and resized.min() >= 0.0 and resized.max() <= 1.0
    assert resized[:, :3].max() < 0.5 < resized[:, 5:].min()


# --- metrics ------------------------------------------------------------------------------------------


def test_perfect_and_inverted_predictions():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    perfect = saliency_report([mask.astype(float)], [mask])
    assert perfect.mae == 0.0 and perfect.max_f == pytest.approx(1.0)
    inverted = saliency_report([(~mask).astype(float)], [mask])
    assert inverted.mae == 1.0
    # threshold 0 predicts everything salient: P = 0.5, R = 1 -> F = 1.3 * 0.5 / (0.15 + 1)
    assert inverted.max_f == pytest.approx(1.3 * 0.5 / 1.15)


def test_max_f_by_hand():
    mask = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[0.9, 0.4, 0.6, 0.1]])
    report = saliency_report([pred], [mask])
    assert report.mae == pytest.approx((0.1 + 0.6 + 0.6 + 0.1) / 4)
    # thresholds: >= 0.9 -> P 1, R 0.5 -> F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125 (the best);
    # >= 0.6 -> P 0.5, R 0.5 -> 0.5; >= 0.4 -> P 2/3, R 1 -> 1.3 * 2/3 / (0.2 + 1) = 0.7222
    assert report.max_f == pytest.approx(0.8125)
    assert report.best_threshold == round(0.6 * 255) + 1


def test_precision_and_recall_are_averaged_over_images_before_f():
    masks = [np.array([[1, 0]], bool), np.array([[1, 1]], bool)]
    preds = [np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]])]
    # t = 0: P = (0.5 + 1) / 2, R = 1 -> F = 1.3 * 0.75 / 1.225 = 0.7959 (the max); t >= 1: P = R = 0.75 -> 0.75.
    # (Averaging per-image F instead would give 0.78 at t = 0.)
    assert saliency_report(preds, masks).max_f == pytest.approx(1.3 * 0.75 / 1.225)


def test_metric_input_errors():
    meter = SaliencyMeter()
    with pytest.raises(ConfigError, match="same"):
        meter.update(np.zeros((2, 2)), np.zeros((2, 3), bool))
    with pytest.raises(ConfigError, match="sigmoid"):
        meter.update(np.full((2, 2), 3.0), np.zeros((2, 2), bool))
    with pytest.raises(ConfigError, match="no images"):
        meter.report()


# --- training -----------------------------------------------------------------------------------------


def test_loss_is_bce_summed_over_both_maps():
    a, b = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    masks = (torch.rand(2, 1, 4, 4) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert torch.allclose(saliency_loss([a, b], masks), bce(a, masks) + bce(b, masks))


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model("cpd-lb", **TINY).train()
    data = SaliencyTrainingSet(SyntheticSaliency("train", size=4, image_size=64), (64, 64), (0.5,) * 3, (0.25,) * 3)
    images, masks = (torch.stack(t) for t in zip(*(data[i] for i in range(4))))
    optimizer = torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(10):
        loss = saliency_loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_train_writes_saliency_checkpoints(tmp_path):
    config = TrainConfig(output=str(tmp_path / "run"), arch="cpd-lb", data="synthetic-saliency:8,4",
                         model_options=dict(TINY), seed=2, epochs=2, batch_size=4, lr_drops=(), workers=0,
                         threads=1, progress=False)
    result = train(config, log=lambda line: None)
    assert [set(h) >= {"loss", "max_f", "mae"} for h in result.history] == [True, True]
    assert 0.0 <= result.history[-1]["max_f"] <= 1.0 and result.best_pck == max(h["max_f"] for h in result.history)
    ckpt = load_checkpoint(result.last)
    assert ckpt.metadata["task"] == "saliency" and ckpt.arch == "cpd-lb"
    assert ckpt.metadata["training"]["val_max_f"] == result.history[-1]["max_f"]
    assert ckpt.metadata["training"]["val_mae"] == result.history[-1]["mae"]


@pytest.mark.parametrize("arch,data", [("lbrn-s", "synthetic-saliency:8,4"), ("cpd-lb", "synthetic:8,4")])
def test_train_refuses_a_model_of_the_other_task(tmp_path, arch, data):
    config = TrainConfig(output=str(tmp_path / "run"), arch=arch, data=data, epochs=1, batch_size=4, workers=0,
                         progress=False)
    with pytest.raises(ConfigError, match="is not a"):
        train(config, log=lambda line: None)


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_create_inspect_models_eval(tmp_path):
    runner = CliRunner()
    path = tmp_path / "cpd.pt"
    result = runner.invoke(main, ["create", "cpd-lb", "--backbone", "resnet50", "--width", "4", "--channels", "4",
                                  "--input-size", "64x64", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(path).config["backbone"] == "resnet50"
    inspected = json.loads(runner.invoke(main, ["inspect", str(path), "--json", "--no-layers"]).output)
    assert inspected["arch"] == "cpd-lb" and inspected["ternary_layers"] > 0 and inspected["metadata"]["task"] == "saliency"
    assert "cpd-lb" in runner.invoke(main, ["models"]).output
    result = runner.invoke(main, ["eval", str(path), "--data", "synthetic-saliency:4,3", "--compare", "torch,ort"])
    assert result.exit_code == 0, result.output
    assert "maxF" in result.output and "MAE" in result.output and "(3 images" in result.output
    assert re.search(r"^\s+torch\s+ort$", result.output, re.M) and "skipped" not in result.output  # ort exported here
    result = runner.invoke(main, ["eval", str(path), "--data", "synthetic-saliency:4,3", "--flip"])
    assert result.exit_code == 2 and "pose options" in result.output
    result = runner.invoke(main, ["eval", str(path), "--data", "synthetic-saliency:4,3", "--backend", "ort"])
    assert result.exit_code == 2 and "runs an exported artifact folder" in result.output


def test_demo_model_is_small_and_scores_as_documented():
    from pathlib import Path

    import lbdeploy

    demo = Path(lbdeploy.__file__).parent / "data" / "cpd_demo.pt"
    assert demo.stat().st_size < 5 * 2 ** 20
    from lbdeploy.evaluation.saliency_eval import evaluate_saliency
    from lbdeploy.runtime.tasks.saliency import SaliencyPredictor

    predictor = SaliencyPredictor(demo)  # the model.pt on torch
    report = evaluate_saliency(SyntheticSaliency("val", size=200), predictor.predict_batch, predictor.input_size,
                               limit=32)
    assert report.max_f > 0.85 and report.mae < 0.08


# --- export -------------------------------------------------------------------------------------------


def _with_trained_statistics(model):
    """Random but plausible BN statistics, so folding is exercised (fresh BNs are the identity)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.1, generator=generator)
    return model


@pytest.mark.parametrize("backbone", BACKBONES)
def test_folded_model_matches_eager(backbone):
    from lbdeploy.exporters.folding import prepare_for_export

    model = _with_trained_statistics(build_model("cpd-lb", backbone=backbone, **TINY))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, folded = model(x)[-1], prepare_for_export(model)(x)[-1]
    assert torch.allclose(folded, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.parametrize("backbone", ["vgg16", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_export_onnx_has_ternary_nodes_and_ort_matches_pytorch(tmp_path, library, backbone):
    import onnx
    import onnxruntime as ort

    from lbdeploy.exporters.onnx import export_onnx
    from lbdeploy.runtime.backends.ort import session_options

    model = _with_trained_statistics(build_model("cpd-lb", backbone=backbone, **TINY))
    names = export_onnx(model, tmp_path / "m.onnx", (64, 64), "saliency")
    graph = onnx.load(tmp_path / "m.onnx").graph
    ops = Counter(node.op_type for node in graph.node)
    ternary = sum(isinstance(m, TernaryConv2d) for m in model.modules())
    assert ops["TernaryConv"] == ternary and len(names) == 1
    assert ops["BatchNormalization"] < ops["Conv"] + ops["TernaryConv"]  # conv-BN pairs are folded
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), session_options(threads=1, library=library))
    out = session.run(None, {"image": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[-1].numpy()
    assert out.shape == (2, 1, 64, 64)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-4
