"""`lbdeploy doctor`: does this machine have what an artifact (or a backend) needs to run?

Each check is one line: what was looked at, what was found, and, when something is missing, the
command that fixes it. The checks of a backend live here, keyed by the backend's name in the
registry (lbdeploy/backends.py); a backend without an entry gets only the import check of its
runtime class.

    report = diagnose(artifact_dir=None, backends=["ort", "tvm"])
    report.ok          # every check passed
    report.lines()     # ["ok    onnxruntime 1.32.0", "FAIL  ...: fix: ..."]

To check something new for a backend, add a function to its list in CHECKS.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lbdeploy import __version__
from lbdeploy.artifact import contained_path, open_artifact
from lbdeploy.backends import BACKENDS, get_backend
from lbdeploy.errors import LbdeployError
from lbdeploy.runtime.verified import private_copies

# cuda-python's major version must match the CUDA of the board's JetPack (12 for JetPack 6).
CUDA_PYTHON_MAJOR = 12
MIN_TENSORRT = (10, 3)


@dataclass(frozen=True)
class Check:
    """One finding: `what` was checked, `found` is what is there; `fix` says how to get it when not ok."""

    what: str
    ok: bool
    found: str
    fix: str = ""

    def line(self) -> str:
        """The printed line: `ok    what: found` or `FAIL  what: found; fix: ...`."""
        text = f"{'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.found}"
        return text if self.ok else f"{text}; fix: {self.fix}"


@dataclass
class Context:
    """What the checks may look at: the artifact (or None) and the backend being checked."""

    backend: str
    root: Path | None = None
    manifest: dict = field(default_factory=dict)


def _module_version(name: str, fix: str) -> Check:
    try:
        module = __import__(name)
    except ImportError as err:
        return Check(f"python package {name}", False, f"not importable ({err})", fix)
    return Check(f"python package {name}", True, getattr(module, "__version__", "installed"))


def _runtime_class(context: Context) -> Check:
    spec = get_backend(context.backend)
    try:
        spec.load_runtime()
    except LbdeployError as err:
        return Check(f"{context.backend} runtime", False, str(err), f"pip install 'lbdeploy[{spec.extra}]'")
    return Check(f"{context.backend} runtime", True, spec.runtime)


def _onnxruntime(context: Context) -> Check:
    return _module_version("onnxruntime", "pip install 'lbdeploy[ort]'")


def _kernel_library(context: Context) -> Check:
    """The artifact's kernel library loads into an ONNX Runtime session here."""
    library = (context.manifest.get("kernel_library") or {}).get("path")
    if context.root is None or not library:
        return Check("ORT kernel library", True, "not needed" if context.root else "checked per artifact")
    try:
        from lbdeploy.runtime.backends.ort import check_kernel_library, session_options

        with private_copies(context.root, context.manifest["files"], [library], "kernel library") as copies:
            check_kernel_library(copies[library])
            session_options(library=copies[library])
    except (LbdeployError, ImportError, RuntimeError, OSError) as err:
        return Check("ORT kernel library", False, str(err).splitlines()[0],
                     "re-export the model for this machine's target (`lbdeploy targets`)")
    return Check("ORT kernel library", True, f"{library} loads ({platform.machine()})")


def _tvm(context: Context) -> Check:
    return _module_version("tvm", "pip install 'lbdeploy[tvm]' (on a Jetson: docs/tvm.md, 'The board's runtime')")


def _tvm_device(context: Context) -> Check:
    device = (context.manifest.get("tvm") or {}).get("device", "cpu")
    if device == "cpu":
        return Check("TVM device", True, "cpu")
    try:
        import tvm

        present = tvm.cuda(0).exist
    except (ImportError, RuntimeError, AttributeError) as err:
        return Check("TVM device", False, f"cuda: {err}", "install a CUDA-enabled TVM runtime (docs/tvm.md)")
    return Check("TVM device", present, "cuda:0 present" if present else "no CUDA device visible to TVM",
                 "run on the Jetson with its NVIDIA driver (JetPack), or export for a CPU target")


def _cuda_driver(context: Context) -> Check:
    """libcuda (the NVIDIA driver's CUDA library) loads and reports a driver version."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Check("CUDA driver", False, "libcuda.so.1 not found",
                     "install the NVIDIA driver (on a Jetson: JetPack; it ships libcuda)")
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return Check("CUDA driver", False, "cuDriverGetVersion failed", "check the NVIDIA driver installation")
    count = ctypes.c_int(0)
    initialised = cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
    major, minor = version.value // 1000, version.value % 1000 // 10
    if not initialised or count.value == 0:
        return Check("CUDA driver", False, f"driver API {major}.{minor}, no GPU", "run on a machine with an NVIDIA GPU")
    return Check("CUDA driver", True, f"driver API {major}.{minor}, {count.value} GPU(s)")


def _cuda_python(context: Context) -> Check:
    try:
        import cuda.bindings as bindings

        version = bindings.__version__
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401  (older cuda-python layout)

            version = "installed (old layout)"
        except ImportError:
            return Check("cuda-python", False, "not importable",
                         f"pip install 'cuda-python>={CUDA_PYTHON_MAJOR},<{CUDA_PYTHON_MAJOR + 1}' "
                         "(its major version must be the CUDA major version of JetPack)")
    major = version.split(".")[0]
    if major.isdigit() and int(major) != CUDA_PYTHON_MAJOR:
        return Check("cuda-python", False, f"{version} (CUDA {major}; JetPack 6 has CUDA {CUDA_PYTHON_MAJOR})",
                     f"pip install 'cuda-python>={CUDA_PYTHON_MAJOR},<{CUDA_PYTHON_MAJOR + 1}'")
    return Check("cuda-python", True, version)


def _tensorrt(context: Context) -> Check:
    try:
        import tensorrt
    except ImportError:
        return Check("TensorRT", False, "python module tensorrt not importable",
                     "on a Jetson: `sudo apt install python3-libnvinfer` (JetPack 6.1+) and create the venv "
                     "with --system-site-packages (docs/tensorrt.md)")
    found = tuple(int(part) for part in tensorrt.__version__.split(".")[:2])
    ok = found >= MIN_TENSORRT
    return Check("TensorRT", ok, tensorrt.__version__,
                 f"lbdeploy's plugin needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} (JetPack 6.1+)")


def _tensorrt_plugin(context: Context) -> Check:
    plugin = ((context.manifest.get("tensorrt") or {}).get("plugin") or {}).get("library")
    if context.root is None or not plugin:
        return Check("TensorRT plugin library", True, "not needed" if context.root else "checked per artifact")
    path = contained_path(context.root, plugin, "TensorRT plugin library")
    if not path.is_file():
        return Check("TensorRT plugin library", False, f"{plugin} not built",
                     f"bash {context.root}/tensorrt/build.sh (on the board)")
    if plugin not in context.manifest["files"]:  # never load code the manifest does not vouch for
        return Check("TensorRT plugin library", False, f"{plugin} is built but not listed in the manifest (not loaded)",
                     f"lbdeploy build-engine {context.root} --trust-plugin, if you built it here")
    try:
        with private_copies(context.root, context.manifest["files"], [plugin], "TensorRT plugin library") as copies:
            ctypes.CDLL(str(copies[plugin]))
    except OSError as err:
        return Check("TensorRT plugin library", False, f"{plugin} does not load ({err})",
                     f"rebuild it on this board: bash {context.root}/tensorrt/build.sh")
    return Check("TensorRT plugin library", True, f"{plugin} loads")


def _tensorrt_engine(context: Context) -> Check:
    engine = (context.manifest.get("tensorrt") or {}).get("engine")
    if context.root is None or not engine:
        return Check("TensorRT engine", True, "checked per artifact")
    built = contained_path(context.root, engine, "TensorRT engine").is_file()
    return Check("TensorRT engine", built, engine if built else f"{engine} not built",
                 f"lbdeploy build-engine {context.root}")


def _torch(context: Context) -> Check:
    return _module_version("torch", "pip install 'lbdeploy[torch]'")


CHECKS: dict[str, list[Callable[[Context], Check]]] = {
    "torch": [_torch],
    "ort": [_onnxruntime, _kernel_library],
    "tvm": [_tvm, _tvm_device],
    "tensorrt": [_tensorrt, _cuda_python, _cuda_driver, _tensorrt_plugin, _tensorrt_engine],
}


@dataclass
class Report:
    """Every check, grouped by backend."""

    checks: dict[str, list[Check]]

    @property
    def ok(self) -> bool:
        """True when every check of every backend passed."""
        return all(check.ok for checks in self.checks.values() for check in checks)

    def lines(self) -> list[str]:
        """One line per check, each backend under its own heading."""
        lines = [f"lbdeploy {__version__}, python {platform.python_version()}, {platform.machine()}"]
        for backend, checks in self.checks.items():
            lines.append(f"[{backend}]")
            lines += [check.line() for check in checks]
        return lines


def diagnose(artifact_dir=None, backends: list[str] | None = None) -> Report:
    """Check this machine for an artifact's backend, or for each of `backends` (default: all).

    Args:
        artifact_dir: an artifact folder (checked and verified first), or None.
        backends: backend names to check when no artifact is given.
    Returns:
        The Report. Raises: ArtifactError for an unreadable artifact; ConfigError for a bad name.
    """
    root, manifest = (None, {}) if artifact_dir is None else open_artifact(artifact_dir)
    names = [manifest["backend"]] if manifest else (backends or list(BACKENDS))
    checks = {}
    for name in names:
        context = Context(get_backend(name).name, root, manifest)
        checks[name] = [_runtime_class(context), *[check(context) for check in CHECKS.get(name, [])]]
    return Report(checks)
