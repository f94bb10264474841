"""ONNX export (medseg.export): parity with PyTorch, dynamic shapes, metadata, onnxruntime prediction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import medseg
import medseg.export.onnx as onnx_export
from medseg import models
from medseg.cli import app
from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.inference import load_model
from medseg.engine.predict import predict_files
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.export import ParityError, export_onnx, export_spec, load_onnx_model, load_predictor
from medseg.export.onnx import (
    ExportSpec,
    ParityReport,
    check_parity,
    compare_outputs,
    data_images_for_parity,
    export_metadata,
    nominal_spatial_size,
    parity_failure_message,
    parity_path_for,
    parity_shapes,
    random_boxes,
    require_exporter,
    resolve_dynamic_spatial,
    write_parity,
)
from medseg.export.runtime import (
    OnnxPromptableSAM,
    OnnxSegmenter,
    import_onnxruntime,
    open_session,
    ort_errors,
    resolve_backend,
    sam_graph_paths,
    session_metadata,
)
from medseg.metrics.postprocess import PostprocessingDecision
from medseg.models import build_from_config
from medseg.provenance import file_sha256

runner = CliRunner()


def make_checkpoint(path: Path, overrides: list[str], state: dict | None = None, centre: bool = True) -> Path:
    """A randomly initialised model saved as a medseg checkpoint (BatchNorm stats perturbed)."""
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model = build_from_config(cfg)
    for module in model.modules():  # non-trivial running stats, so eval-mode BatchNorm matters
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    head = getattr(model, "head", None)
    if centre and isinstance(head, torch.nn.Conv2d | torch.nn.Conv3d):
        # centre the logits so masks are neither empty nor full and mask comparisons mean something
        size = cfg.data.patch_size if cfg.data.spatial_dims == 3 else cfg.data.image_size
        with torch.no_grad():
            logits = model.eval()(torch.randn(2, cfg.data.in_channels, *size))
            centre = logits.median() if logits.shape[1] == 1 else logits.mean(dim=(0, *range(2, logits.ndim)))
            head.bias.sub_(centre)
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), **(state or {})}, path)


UNET = ["data.image_size=[32, 32]", "model.options={features: [4, 8, 16]}"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny 2D U-Net checkpoint exported through the CLI with --check: (checkpoint, model.onnx)."""
    root = tmp_path_factory.mktemp("unet")
    ckpt = make_checkpoint(root / "unet.pt", UNET)
    out = root / "model.onnx"
    result = runner.invoke(app, ["export", "onnx", str(ckpt), "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "parity passed" in result.output
    return ckpt, out


def test_unet_export_is_one_file_with_parity_report(unet_export: tuple[Path, Path]) -> None:
    _, out = unet_export
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.parity.json", "unet.pt"]
    proto = onnx.load(str(out), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    onnx.checker.check_model(proto)
    report = json.loads((out.parent / "model.parity.json").read_text())
    assert report["passed"] and report["atol"] == 1e-4 and report["rtol"] == 1e-3
    assert (
        report["max_abs_diff"] < 1e-4 and report["min_label_agreement"] == 1.0 and report["min_dice"] == 1.0
    )
    shapes = [tuple(c["input_shape"]) for c in report["cases"]]
    assert {s[0] for s in shapes} == {1, 2}  # batch 1 and 2
    assert len({s[2] for s in shapes}) >= 2 and len({s[3] for s in shapes}) >= 2  # 2 sizes per axis
    assert all(c["within_tolerance"] for c in report["cases"])
    # real images of the checkpoint's own data (the phantom) besides the random inputs
    data_cases = [c for c in report["cases"] if c["inputs"] == "data"]
    assert [c["input_shape"][0] for c in data_cases] == [1, 2]
    assert report["data_inputs"].startswith("2 image(s) of phantom")


def test_parity_data_images_come_from_the_config_or_say_why_not(tmp_path: Path) -> None:
    cfg = load_config(None, UNET)
    images, note = data_images_for_parity(cfg, (32, 32))
    assert images is not None and images.shape == (2, 1, 32, 32) and note.startswith("2 image(s) of phantom")
    missing = load_config(None, [*UNET, "data.source=folder", f"data.options={{root: {tmp_path / 'nope'}}}"])
    images, note = data_images_for_parity(missing, (32, 32))
    assert images is None and "could not be read" in note and "nope" in note
    volumetric = load_config(None, ["data.spatial_dims=3"])
    assert data_images_for_parity(volumetric, (16, 16, 16)) == (
        None,
        "not used: real-image cases are made for 2D models only",
    )


def test_dynamic_shape_works_beyond_the_checked_ones(unet_export: tuple[Path, Path]) -> None:
    ckpt, out = unet_export
    model, _ = load_model(ckpt)
    session = open_session(out, threads=1)
    assert session.get_inputs()[0].shape[0] == "batch"
    for shape in [(3, 1, 56, 20), (1, 1, 8, 64)]:  # never traced nor checked
        image = torch.randn(*shape)
        (logits,) = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(image), atol=1e-4, rtol=1e-3)
    wrapper = OnnxSegmenter(session, {"spatial_dims": 2}, out)
    with pytest.raises(DataError, match="model.onnx.*onnxruntime failed on input shape"):
        wrapper(torch.randn(1, 1, 30, 30))  # not a multiple of 4


def test_metadata_round_trip(unet_export: tuple[Path, Path]) -> None:
    ckpt, out = unet_export
    meta = {k: json.loads(v) for k, v in session_metadata(open_session(out)).items()}
    assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    assert meta["version"] == medseg.__version__
    assert meta["activation"] == "sigmoid" and meta["num_classes"] is None
    assert meta["spatial_divisor"] == 4 and meta["image_size"] == [32, 32] and meta["intensity"] == "zscore"
    assert meta["spatial_dims"] == 2 and meta["mask_channel"] == 0 and meta["graph"] == "model"
    assert meta["class_names"] == ["background", "foreground"]
    model, cfg, state = load_onnx_model(out)
    _, torch_cfg = load_model(ckpt)
    assert cfg.to_dict() == torch_cfg.to_dict()
    assert state["class_values"] is None and isinstance(model, OnnxSegmenter)
    assert model.num_classes is None and model.spatial_dims == 2


def test_predict_onnxruntime_writes_the_same_masks_as_torch(
    unet_export: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, out = unet_export
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((np.random.rand(45, 37, 3) * 255).astype(np.uint8)).save(inputs / "a.png")
    volume = np.random.default_rng(0).random((30, 28, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([0.5, 0.5, 2.0, 1.0])), inputs / "v.nii.gz")
    by_torch = predict_files(ckpt, [inputs], tmp_path / "torch", save_probabilities=True, device="cpu")
    by_onnx = predict_files(
        out, [inputs], tmp_path / "onnx", save_probabilities=True, device="cpu", backend="onnxruntime"
    )
    assert len(by_torch) == len(by_onnx) == 2
    for a, b in zip(by_torch, by_onnx, strict=True):
        assert a.mask.name == b.mask.name
        if a.mask.suffix == ".png":
            np.testing.assert_array_equal(np.asarray(Image.open(a.mask)), np.asarray(Image.open(b.mask)))
            np.testing.assert_allclose(np.load(a.probabilities), np.load(b.probabilities), atol=1e-5)
        else:
            np.testing.assert_array_equal(nib.load(a.mask).get_fdata(), nib.load(b.mask).get_fdata())
    result = runner.invoke(
        app, ["predict", str(out), str(inputs / "a.png"), "--out", str(tmp_path / "cli"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "cli" / "a_mask.png")), np.asarray(Image.open(by_torch[0].mask))
    )


def test_backend_resolution_and_load_predictor(unet_export: tuple[Path, Path]) -> None:
    ckpt, out = unet_export
    assert resolve_backend("m.onnx") == "onnxruntime" and resolve_backend("m.pt") == "torch"
    assert resolve_backend("m.onnx", "onnxruntime") == "onnxruntime"
    with pytest.raises(ConfigError, match="--backend onnxruntime"):
        resolve_backend("m.onnx", "torch")
    with pytest.raises(ConfigError, match="medseg export onnx"):
        resolve_backend("m.pt", "onnxruntime")
    with pytest.raises(ConfigError, match="backend must be one of"):
        resolve_backend("m.pt", "tensorrt")
    torch_model, _, state = load_predictor(ckpt)
    assert isinstance(torch_model, models.UNet) and "model" in state
    onnx_model, cfg, _ = load_predictor(out, "cpu", "auto")
    assert isinstance(onnx_model, OnnxSegmenter) and cfg.data.image_size == [32, 32]


def test_multiclass_3d_export_and_sliding_window_predict(tmp_path: Path) -> None:
    overrides = [
        "data.spatial_dims=3",
        "data.patch_size=[16, 16, 16]",
        "data.num_classes=3",
        "model.options={features: [4, 8]}",
    ]
    # the postprocessing decision travels with the export, so both backends apply it
    decision = PostprocessingDecision(3, True, (2,)).to_dict()
    ckpt = make_checkpoint(
        tmp_path / "unet3d.pt", overrides, {"class_values": [0, 3, 7], "postprocessing": decision}
    )
    result = export_onnx(ckpt, tmp_path / "unet3d.onnx", check=True)
    assert result.dynamic_spatial and result.parity is not None and result.parity.passed
    assert {tuple(c.input_shape[2:]) for c in result.parity.cases} == {
        (16, 16, 16),
        (18, 18, 18),
        (16, 16, 18),
    }
    model, _, state = load_onnx_model(tmp_path / "unet3d.onnx")
    assert model.num_classes == 3 and state["class_values"] == [0, 3, 7]
    assert state["postprocessing"] == decision
    meta = {k: json.loads(v) for k, v in session_metadata(model.session).items()}
    assert meta["activation"] == "softmax" and meta["class_names"] == ["background", "label 3", "label 7"]
    assert meta["patch_size"] == [16, 16, 16] and meta["input_size"] == [16, 16, 16]
    volume = np.random.default_rng(1).random((20, 18, 17)).astype(np.float32)  # not a window multiple
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "scan.nii.gz")
    (a,) = predict_files(ckpt, [tmp_path / "scan.nii.gz"], tmp_path / "torch", device="cpu")
    (b,) = predict_files(
        tmp_path / "unet3d.onnx", [tmp_path / "scan.nii.gz"], tmp_path / "onnx", device="cpu"
    )
    np.testing.assert_array_equal(nib.load(a.mask).get_fdata(), nib.load(b.mask).get_fdata())
    assert set(np.unique(nib.load(b.mask).get_fdata())) <= {0, 3, 7}


def test_unetpp_with_deep_supervision_exports_its_eval_output(tmp_path: Path) -> None:
    ckpt = make_checkpoint(
        tmp_path / "unetpp.pt",
        [
            "data.image_size=[16, 16]",
            "model.name=unetpp",
            "model.options={features: [4, 8, 8], deep_supervision: true}",
        ],
    )
    result = export_onnx(ckpt, tmp_path / "unetpp.onnx", opset=18, check=True)
    assert result.parity is not None and result.parity.passed and result.dynamic_spatial
    assert {o.domain: o.version for o in onnx.load(str(result.paths[0])).opset_import}[""] == 18
    assert session_metadata(open_session(result.paths[0]))["opset"] == "18"
    assert len(open_session(result.paths[0]).get_outputs()) == 1  # the averaged main logits only
    assert parity_path_for(result.paths[0]) == result.parity_path


def test_fixed_grid_model_exports_static_and_refuses_dynamic(tmp_path: Path) -> None:
    ckpt = make_checkpoint(
        tmp_path / "msn.pt",
        ["data.image_size=[32, 32]", "model.name=microsegnet", "model.options={variant: tiny}"],
    )
    with pytest.raises(ConfigError, match="fixed input grid.*--static"):
        export_onnx(ckpt, tmp_path / "msn.onnx", dynamic=True)
    result = runner.invoke(app, ["export", "onnx", str(ckpt), "-o", str(tmp_path / "msn.onnx"), "--dynamic"])
    assert result.exit_code == 2 and "fixed input grid" in result.output
    exported = export_onnx(ckpt, tmp_path / "msn.onnx", check=True)
    assert not exported.dynamic_spatial and exported.parity is not None and exported.parity.passed
    assert {c.input_shape[0] for c in exported.parity.cases} == {1, 2}
    assert open_session(exported.paths[0]).get_inputs()[0].shape[1:] == [1, 32, 32]


def test_sam_two_graph_export_parity_and_runtime(tmp_path: Path) -> None:
    ckpt = make_checkpoint(
        tmp_path / "sam.pt",
        ["data.image_size=[64, 64]", "model.name=litemedsam", "model.options={variant: tiny}"],
    )
    with pytest.raises(ConfigError, match="fixed input grid"):
        export_onnx(ckpt, tmp_path / "sam.onnx", dynamic=True)
    result = export_onnx(ckpt, tmp_path / "sam.onnx", check=True)
    assert [p.name for p in result.paths] == ["sam.encoder.onnx", "sam.decoder.onnx"]
    assert result.parity is not None and result.parity.passed
    assert {c.graph for c in result.parity.cases} == {"encoder", "decoder"}
    assert {c.input_shape[0] for c in result.parity.cases} == {1, 2}
    assert not (tmp_path / "sam.onnx").exists()
    torch_model, _ = load_model(ckpt)
    onnx_model, cfg, _ = load_onnx_model(tmp_path / "sam.onnx")  # the pair, found by its base name
    assert (
        isinstance(onnx_model, OnnxPromptableSAM)
        and onnx_model.img_size == 64
        and cfg.model.name == "litemedsam"
    )
    assert isinstance(load_onnx_model(tmp_path / "sam.decoder.onnx")[0], OnnxPromptableSAM)
    image = torch.rand(1, 1, 64, 64)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [10.0, 10.0, 60.0, 30.0]])
    with torch.no_grad():
        embedding = torch_model.encode(image)
        logits, iou = torch_model.decode(embedding, boxes)  # one embedding, two boxes
    onnx_embedding = onnx_model.encode(image)
    torch.testing.assert_close(onnx_embedding, embedding, atol=1e-4, rtol=1e-3)
    onnx_logits, onnx_iou = onnx_model.decode(onnx_embedding, boxes)
    torch.testing.assert_close(onnx_logits, logits, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(onnx_iou, iou, atol=1e-3, rtol=1e-3)
    assert onnx_model(image.expand(2, -1, -1, -1), boxes).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="boxes must be N×4"):
        onnx_model.decode(onnx_embedding, boxes[:, :3])
    with pytest.raises(ValueError, match="64×64"):
        onnx_model.encode(torch.rand(1, 1, 32, 32))
    Image.fromarray((np.random.rand(50, 40) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    for model_file, folder in [(ckpt, "torch"), (tmp_path / "sam.onnx", "onnx")]:
        args = ["predict", str(model_file), str(tmp_path / "img.png"), "--box", "5,5,30,40"]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / folder), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "torch" / "img_seg.png")),
        np.asarray(Image.open(tmp_path / "onnx" / "img_seg.png")),
    )


def test_parity_failure_exits_non_zero_with_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_checkpoint(
        tmp_path / "unet.pt", ["data.image_size=[16, 16]", "model.options={features: [4, 8]}"]
    )
    real = onnx_export.check_parity

    def drifted(model: torch.nn.Module, *args: object, **kwargs: object) -> ParityReport:
        with torch.no_grad():
            model.head.bias.add_(0.5)  # PyTorch no longer matches the exported graph
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "check_parity", drifted)
    args = ["export", "onnx", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--check", "--static"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "parity check failed" in result.output and "m.parity.json" in result.output
    report = json.loads((tmp_path / "m.parity.json").read_text())
    assert not report["passed"] and report["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    # --static: batch 1 and 2 at 16×16 only, random and real (phantom) images
    assert [c["inputs"] for c in report["cases"]] == ["random", "random", "data", "data"]
    assert open_session(tmp_path / "m.onnx").get_inputs()[0].shape[1:] == [1, 16, 16]
    with pytest.raises(ParityError, match="8 of 8 inputs exceed"):
        export_onnx(ckpt, tmp_path / "m.onnx", check=True)


def test_corrupt_or_foreign_onnx_files_are_clear_errors(
    tmp_path: Path, unet_export: tuple[Path, Path]
) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(DataError, match="broken.onnx: not a readable ONNX model"):
        load_onnx_model(bad)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    result = runner.invoke(app, ["predict", str(bad), str(image), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "broken.onnx" in result.output
    with pytest.raises(DataError, match="missing.onnx: ONNX model not found"):
        open_session(tmp_path / "missing.onnx")
    foreign = onnx.load(str(unet_export[1]))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(DataError, match="foreign.onnx: ONNX model has no medseg metadata"):
        load_onnx_model(tmp_path / "foreign.onnx")
    with pytest.raises(ConfigError, match="must end with .onnx"):
        export_onnx(unet_export[0], tmp_path / "model.bin")
    assert issubclass(ort_errors()[0], Exception)


def test_missing_onnx_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert import_onnxruntime().__name__ == "onnxruntime"
    require_exporter()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MedsegError, match=r"pip install medseg\[onnx\]"):
        import_onnxruntime()
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MedsegError, match=r"onnxscript.*pip install medseg\[onnx\]"):
        require_exporter()


def test_export_spec_per_model() -> None:
    assert export_spec(models.build("unet", features=[4, 8, 16, 32])) == ExportSpec(True, 8)
    assert export_spec(models.build("unetpp", features=[4, 8, 16])).spatial_divisor == 4
    assert export_spec(models.build("vnet", spatial_dims=3)).spatial_divisor == 16
    assert export_spec(models.build("microsegnet", img_size=32, variant="tiny")).spatial_divisor is None
    assert export_spec(models.build("litemedsam", variant="tiny", img_size=64)).spatial_divisor is None
    assert export_spec(models.build("resunet_r")).spatial_divisor is not None  # size_multiple
    pdvnet = models.build("pdvnet", layers=[1], growth_rates=[2], skip_channels=[2], down_channels=[])
    assert export_spec(pdvnet).spatial_divisor is None  # declared fixed
    assert export_spec(models.build("monai_unet", features=[2, 4])).spatial_divisor is None  # declared fixed
    odd = models.SegmentationModel()
    odd.size_multiple = 0  # the default divisor follows size_multiple
    with pytest.raises(ConfigError, match="invalid spatial divisor"):
        export_spec(odd)
    assert resolve_dynamic_spatial(ExportSpec(True, 4), None, "unet")
    assert not resolve_dynamic_spatial(ExportSpec(True, 4), False, "unet")
    assert not resolve_dynamic_spatial(ExportSpec(True, None), None, "transunet")
    with pytest.raises(ConfigError, match="'transunet' has a fixed input grid"):
        resolve_dynamic_spatial(ExportSpec(True, None), True, "transunet")


def test_shapes_boxes_paths_and_sizes() -> None:
    assert parity_shapes((32, 32), None) == [(32, 32)]
    assert parity_shapes((32, 24), 8) == [(32, 24), (40, 32), (32, 32)]
    assert parity_shapes((16,) * 3, 2)[1] == (18, 18, 18)
    boxes = random_boxes(50, 64, torch.Generator().manual_seed(0))
    assert boxes.shape == (50, 4) and (boxes >= 0).all() and (boxes <= 63).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert sam_graph_paths("out/m.onnx") == (Path("out/m.encoder.onnx"), Path("out/m.decoder.onnx"))
    assert sam_graph_paths("m.decoder.onnx")[0] == Path("m.encoder.onnx")
    assert parity_path_for("a/model.onnx") == Path("a/model.parity.json")
    cfg = load_config(None, ["data.spatial_dims=3", "data.patch_size=[8, 16, 16]"])
    assert nominal_spatial_size(cfg, models.SegmentationModel()) == (8, 16, 16)
    cfg.inference.roi_size = [16, 16, 16]
    assert nominal_spatial_size(cfg, models.SegmentationModel()) == (16, 16, 16)
    cfg = load_config(None, ["data.image_size=[48, 40]"])
    assert nominal_spatial_size(cfg, models.SegmentationModel()) == (48, 40)
    sam = models.build("litemedsam", variant="tiny", img_size=64)
    assert nominal_spatial_size(cfg, sam) == (64, 64)
    meta = export_metadata(cfg, sam, {}, "abc", "encoder", (64, 64), None, 18)
    assert json.loads(meta["medseg.embedding_size"]) == 16 and json.loads(meta["medseg.opset"]) == 18
    assert json.loads(meta["medseg.config"])["data"]["image_size"] == [48, 40]


def test_compare_outputs_statistics(tmp_path: Path) -> None:
    ref = np.array([[[[1.0, -1.0], [2.0, -2.0]]]], dtype=np.float32)
    same = compare_outputs("model", ref, ref.copy(), 1e-4, 1e-3, "sigmoid")
    assert same.within_tolerance and same.max_abs_diff == 0 and same.dice == 1.0 and same.label_agreement == 1
    flipped = ref.copy()
    flipped[0, 0, 0, 0] = -1.0  # one of two foreground pixels lost
    case = compare_outputs("model", ref, flipped, 1e-4, 1e-3, "sigmoid")
    assert not case.within_tolerance and case.max_abs_diff == 2.0 and case.mean_abs_diff == 0.5
    assert case.label_agreement == 0.75 and case.dice == pytest.approx(2 / 3)
    assert compare_outputs("model", ref, ref + 5e-4, 1e-4, 1e-3).within_tolerance  # ≤ 1e-4 + 1e-3·|ref|
    assert not compare_outputs("model", ref, ref + 5e-3, 1e-4, 1e-3).within_tolerance
    empty = compare_outputs("model", -np.ones((1, 1, 2, 2)), -np.ones((1, 1, 2, 2)), 0, 0, "sigmoid")
    assert empty.empty_masks and empty.dice == 1.0
    logits = np.zeros((1, 3, 2, 2))
    logits[0, 2, 0, 0] = logits[0, 1, 1, 1] = 5.0
    other = logits.copy()
    other[0, 1, 1, 1] = 0.0
    soft = compare_outputs("model", logits, other, 1e-4, 1e-3, "softmax", num_classes=3)
    assert soft.label_agreement == 0.75 and soft.dice == pytest.approx(2 / 3)
    with pytest.raises(ParityError, match="output shape"):
        compare_outputs("model", ref, ref[0], 1e-4, 1e-3)
    report = ParityReport(["m.onnx"], 1e-4, 1e-3, [same, case])
    assert not report.passed and report.to_dict()["min_dice"] == pytest.approx(2 / 3)
    path = write_parity(report, tmp_path / "m.onnx")
    assert json.loads(path.read_text())["cases"][1]["label_agreement"] == 0.75
    assert "1 of 2 inputs exceed" in parity_failure_message(report, path)


def test_check_parity_against_a_drifted_model(unet_export: tuple[Path, Path]) -> None:
    ckpt, out = unet_export
    model, _ = load_model(ckpt)
    assert check_parity(model, [out], (32, 32), 4, 1).passed
    with torch.no_grad():
        model.head.bias.add_(1e-2)  # (the weights alone may not matter: a tiny net can have dead ReLUs)
    report = check_parity(model, [out], (32, 32), None, 1, batches=(1,))
    assert len(report.cases) == 1 and not report.passed
    assert report.cases[0].max_abs_diff == pytest.approx(1e-2, rel=1e-3)


def test_export_input_errors(tmp_path: Path) -> None:
    overrides = ["data.image_size=[30, 30]", "model.options={features: [4, 8, 16]}"]
    ckpt = make_checkpoint(tmp_path / "odd.pt", overrides, centre=False)
    with pytest.raises(ConfigError, match=r"odd.pt: input size \[30, 30\] is not a multiple .* divisor 4"):
        export_onnx(ckpt, tmp_path / "odd.onnx")
    with pytest.raises(DataError, match="missing.pt: checkpoint not found"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    cfg = load_config(None, [])
    cfg.data.spatial_dims = 3
    with pytest.raises(ConfigError, match="data.patch_size"):
        nominal_spatial_size(cfg, models.SegmentationModel())

    class TwoOutputs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x, x]

    with pytest.raises(ConfigError, match="TwoOutputs returns list in eval mode"):
        onnx_export.MainLogits(TwoOutputs())(torch.zeros(1))
