"""The artifact trust boundary (lbdeploy/artifact.py, docs/artifact.md), tried as an attacker would.

A shared library whose constructor writes a marker file stands in for hostile code: each tampered
manifest must be refused by `lbdeploy infer` with a one-line error (exit 2) before anything is
loaded, so the marker never appears. A swapped model with `files: {}` and manifests of the wrong
shape are refused the same way.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from lbdeploy.cli import main
from lbdeploy.artifact import file_sha256
from lbdeploy.errors import ArtifactError
from runtime_artifacts import dot_image, pool_manifest, pool_model, write_artifact

CUSTOM = [{"domain": "ai.lbdeploy", "op_type": "TernaryConv", "version": 1}]


@pytest.fixture(scope="module")
def evil_library(tmp_path_factory) -> Path:
    """A shared library whose constructor creates $LBDEPLOY_TEST_MARKER."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    folder = tmp_path_factory.mktemp("evil")
    (folder / "evil.c").write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n'
        '__attribute__((constructor)) static void run(void) {\n'
        '  const char* p = getenv("LBDEPLOY_TEST_MARKER"); if (p) { FILE* f = fopen(p, "w"); if (f) fclose(f); }\n}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "evil.c")], check=True)
    return folder / "evil.so"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "constructor-ran"
    monkeypatch.setenv("LBDEPLOY_TEST_MARKER", str(path))
    return path


def _infer(artifact: Path, tmp_path: Path):
    image = tmp_path / "img.png"
    Image.fromarray(dot_image(64, 64, {})).save(image)
    return CliRunner().invoke(main, ["infer", str(artifact), str(image)])


def _assert_refused(result, *words):
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and all(w in error[0] for w in words), result.output


def _custom_artifact(folder: Path, library_path: str, extra_files=None, listed=True) -> Path:
    manifest = {**pool_manifest(), "ops": "custom", "custom_ops": CUSTOM,
                "kernel_library": {"path": library_path, "arch": "x86_64"}}
    folder = write_artifact(folder, pool_model(), manifest, extra_files)
    if not listed:
        saved = json.loads((folder / "manifest.json").read_text())
        saved["files"].pop(library_path)
        (folder / "manifest.json").write_text(json.dumps(saved))
    return folder


def test_absolute_kernel_library_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", str(evil_library))
    _assert_refused(_infer(artifact, tmp_path), "kernel")
    assert not marker.exists()


def test_parent_relative_kernel_library_is_refused(tmp_path, evil_library, marker):
    shutil.copy(evil_library, tmp_path / "evil.so")
    artifact = _custom_artifact(tmp_path / "a", "../evil.so")
    _assert_refused(_infer(artifact, tmp_path))
    assert not marker.exists()


def test_kernel_library_not_in_files_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", "kernels/lib.so", {"kernels/lib.so": evil_library.read_bytes()},
                                listed=False)
    _assert_refused(_infer(artifact, tmp_path), "files")
    assert not marker.exists()


def test_symlink_out_of_the_folder_is_refused(tmp_path, evil_library, marker):
    artifact = _custom_artifact(tmp_path / "a", "kernels/lib.so", {"kernels/lib.so": evil_library.read_bytes()})
    (artifact / "kernels" / "lib.so").unlink()
    os.symlink(evil_library, artifact / "kernels" / "lib.so")  # same bytes, same sha256, outside the folder
    _assert_refused(_infer(artifact, tmp_path), "outside")
    assert not marker.exists()


def test_swapped_model_with_empty_files_is_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    (artifact / "model.onnx").write_bytes(pool_model(size=(32, 32)).SerializeToString())
    saved = json.loads((artifact / "manifest.json").read_text())
    saved["files"] = {}
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), "model.onnx")


def test_swapped_model_with_its_own_hash_removed_is_refused(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest(), {"notes.txt": b"x"})
    (artifact / "model.onnx").write_bytes(pool_model(size=(32, 32)).SerializeToString())
    saved = json.loads((artifact / "manifest.json").read_text())
    del saved["files"]["model.onnx"]
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), "model.onnx")


@pytest.mark.parametrize("field, value, named", [
    ("files", ["model.onnx"], "'files'"),
    ("outputs", [1], "outputs[0]"),
    ("kernel_library", "kernels/lib.so", "'kernel_library'"),
    ("input", {"name": 3, "shape": [1, 3, 64, 64]}, "input.name"),
    ("format_version", "1", "format_version"),
])
def test_wrong_typed_manifest_fields_name_the_field(tmp_path, field, value, named):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    saved = json.loads((artifact / "manifest.json").read_text())
    saved[field] = value
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), named)


def test_untampered_artifact_runs(tmp_path):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    assert file_sha256(artifact / "model.onnx") == json.loads((artifact / "manifest.json").read_text())["files"]["model.onnx"]
    assert _infer(artifact, tmp_path).exit_code == 0


# ---------------------------------------------------------------- issue 24: load exactly what was verified


def test_swapping_the_kernel_library_never_runs_the_swapped_in_code(tmp_path, library, evil_library, marker):
    """The issue's swap loop: kernels/lib.so flips between the listed library and a hostile one while
    12 fresh processes open the artifact and load it. Each either loads the verified bytes or is
    refused; the hostile constructor never runs (before the fix it ran in some of them)."""
    import sys
    import threading

    real = Path(library).read_bytes()
    artifact = _custom_artifact(tmp_path / "a", "kernels/lib.so", {"kernels/lib.so": real})
    good, bad = tmp_path / "good.so", tmp_path / "bad.so"
    good.write_bytes(real)
    shutil.copy(evil_library, bad)
    stop = threading.Event()

    def swap():
        staged = tmp_path / "staged.so"
        while not stop.is_set():
            for source in (bad, good):
                os.link(source, staged)
                os.replace(staged, artifact / "kernels" / "lib.so")

    code = ("import sys; from lbdeploy.artifact import open_artifact; from lbdeploy.errors import ArtifactError\n"
            "from lbdeploy.runtime.backends.ort import OrtBackend\n"
            "try:\n    OrtBackend(*open_artifact(sys.argv[1]))\nexcept ArtifactError as err:\n"
            "    print(err); sys.exit(2)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        codes = [subprocess.run([sys.executable, "-c", code, str(artifact)], env=env, capture_output=True,
                                text=True, timeout=600).returncode for _ in range(12)]
    finally:
        stop.set()
        swapper.join()
    assert not marker.exists(), codes
    assert set(codes) <= {0, 2}, codes  # loaded the verified library, or refused it as modified


def test_swapping_model_onnx_after_the_check_never_loads_the_swapped_model(tmp_path):
    """The session runs the model whose sha256 the manifest lists (64x64 input), never the swap (32x32)."""
    from lbdeploy.artifact import open_artifact
    from lbdeploy.runtime.backends.ort import OrtBackend

    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    root, manifest = open_artifact(artifact)  # checked ...
    (artifact / "model.onnx").write_bytes(pool_model(size=(32, 32)).SerializeToString())  # ... then swapped
    with pytest.raises(ArtifactError, match="was modified"):
        OrtBackend(root, manifest)


@pytest.mark.parametrize("location, listed, words", [
    ("../secret.bin", True, "outside"),
    ("weights.bin", False, "not listed"),
    ("link.bin", True, "outside"),
])
def test_external_data_must_be_contained_listed_and_hashed(tmp_path, location, listed, words):
    import numpy as np
    from onnx import external_data_helper, numpy_helper

    tensor = numpy_helper.from_array(np.ones(4, np.float32), "unused")
    model = pool_model(initializers=[tensor])
    external_data_helper.convert_model_to_external_data(model, location=location, size_threshold=0)
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    extra = {"weights.bin": np.ones(4, np.float32).tobytes()} if location == "weights.bin" else {}
    artifact = write_artifact(tmp_path / "a", model, pool_manifest(), extra)
    if location == "link.bin":
        os.symlink(tmp_path / "secret.bin", artifact / "link.bin")
    saved = json.loads((artifact / "manifest.json").read_text())
    if listed:
        saved["files"][location] = file_sha256(tmp_path / "secret.bin")
    else:
        saved["files"].pop(location, None)
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), words)


def test_listed_external_data_loads_from_the_verified_copy(tmp_path):
    import numpy as np
    from onnx import external_data_helper, numpy_helper

    model = pool_model(initializers=[numpy_helper.from_array(np.ones(4, np.float32), "unused")])
    external_data_helper.convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    artifact = write_artifact(tmp_path / "a", model, pool_manifest(),
                              {"weights.bin": np.ones(4, np.float32).tobytes()})
    assert _infer(artifact, tmp_path).exit_code == 0


# ------------------------------------------------------------- issue 24: manifests that must not allocate


@pytest.mark.parametrize("change, words", [
    (lambda m: m["files"].update({"a\x00b": "0" * 64}), "'files'"),
    (lambda m: m["files"].update({"a\udc80b": "0" * 64}), "'files'"),
    (lambda m: m["input"].update(shape=["N", 3, 1_000_000_000, 64]), "input.shape"),
    (lambda m: m["input"].update(shape=["N", 3, 100_000, 100_000]), "input.shape"),
    (lambda m: m["input"].update(shape=[10 ** 9, 3, 64, 64]), "input.shape[0]"),
    (lambda m: m["input"].update(mean=["0", "0", "0"]), "input.mean[0]"),
    (lambda m: m["input"].update(std=[1.0, 0.0, 1.0]), "input.std[1]"),
    (lambda m: m["pose"].update(joints=["a", "b"]), "pose.joints"),
    (lambda m: m["outputs"][1].update(shape=["N", 3, 10 ** 12, 1]), "outputs[1].shape"),
])
def test_absurd_manifest_values_are_one_line_errors(tmp_path, change, words):
    artifact = write_artifact(tmp_path / "a", pool_model(), pool_manifest())
    saved = json.loads((artifact / "manifest.json").read_text())
    change(saved)
    (artifact / "manifest.json").write_text(json.dumps(saved))
    _assert_refused(_infer(artifact, tmp_path), words)


# ------------------------------------------------------------------ issue 24: the TensorRT plugin is code


def _jetson_artifact(folder: Path, plugin_bytes: bytes | None, listed: bool, engine: str = "tensorrt/model.engine"):
    plugin = {"name": "TernaryConv", "version": "1", "namespace": "", "library": "tensorrt/libternary_trt.so"}
    manifest = {**pool_manifest(), "target": "jetson-orin", "backend": "tensorrt",
                "tensorrt": {"plugin": plugin, "engine": engine, "onnx": "model.onnx"}}
    extra = {plugin["library"]: plugin_bytes} if plugin_bytes is not None else {}
    artifact = write_artifact(folder, pool_model(), manifest, extra)
    if not listed:
        saved = json.loads((artifact / "manifest.json").read_text())
        saved["files"].pop(plugin["library"], None)
        (artifact / "manifest.json").write_text(json.dumps(saved))
    return artifact


def test_doctor_never_loads_an_unlisted_plugin(tmp_path, evil_library, marker):
    artifact = _jetson_artifact(tmp_path / "a", evil_library.read_bytes(), listed=False)
    result = CliRunner().invoke(main, ["doctor", str(artifact)])
    assert result.exit_code == 1 and "not listed in the manifest (not loaded)" in result.output, result.output
    assert not marker.exists()


def test_doctor_refuses_an_engine_outside_the_folder_before_any_plugin(tmp_path, evil_library, marker):
    artifact = _jetson_artifact(tmp_path / "a", evil_library.read_bytes(), listed=True, engine="../..")
    _assert_refused(CliRunner().invoke(main, ["doctor", str(artifact)]), "outside")
    assert not marker.exists()


def test_doctor_loads_a_listed_plugin_from_its_verified_bytes(tmp_path, evil_library, marker):
    """A listed library is what the manifest vouches for: doctor loads it (here the marker proves it ran)."""
    artifact = _jetson_artifact(tmp_path / "a", evil_library.read_bytes(), listed=True)
    result = CliRunner().invoke(main, ["doctor", str(artifact)])
    assert "ok    TensorRT plugin library" in result.output, result.output
    assert marker.exists()


def test_build_engine_refuses_an_unlisted_plugin_before_loading_anything(tmp_path, evil_library, marker):
    from lbdeploy.exporters.tensorrt_engine import build_engine

    artifact = _jetson_artifact(tmp_path / "a", evil_library.read_bytes(), listed=False)
    with pytest.raises(ArtifactError, match="--trust-plugin"):
        build_engine(artifact)
    assert not marker.exists()
    assert "tensorrt/libternary_trt.so" not in json.loads((artifact / "manifest.json").read_text())["files"]


# ------------------------------------------------------------------ issue 24: an invalid 2-bit code is named


def test_an_invalid_two_bit_code_is_reported_as_such(tmp_path, library):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from lbdeploy.errors import TernaryWeightError
    from lbdeploy.ops.ternary_conv import DOMAIN, OP_TYPE
    from lbdeploy.runtime.backends.ort import OrtBackend

    weights = numpy_helper.from_array(np.full((3, 7), 0xFF, np.uint8), "w")  # every code is 3
    scale = numpy_helper.from_array(np.ones(3, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "bias")
    node = helper.make_node(OP_TYPE, ["image", "w", "scale", "bias"], ["t"], domain=DOMAIN,
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = pool_model(extra_nodes=[node], initializers=[weights, scale, bias])
    model.graph.output.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, None))
    artifact = write_artifact(tmp_path / "a", model, pool_manifest())
    with pytest.raises(TernaryWeightError, match="invalid 2-bit code"):
        manifest = {**json.loads((artifact / "manifest.json").read_text()), "custom_ops": CUSTOM}
        backend = OrtBackend(artifact, manifest, custom_op_library=library)
        backend.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
