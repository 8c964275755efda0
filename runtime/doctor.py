"""`lbdeploy doctor`: does this machine have what an artifact (or a target, or a backend) needs to run?

Each check is one line: what was looked at, what was found, and, when something is missing, the
command that fixes it. Only what is needed is judged:

- with an artifact: its backend's checks, plus the machine it was built for;
- with `--target T`: T's default backend (required) and its other backends (optional);
- with `--backend B`: B (required);
- with nothing: this machine's target (`x86` or `arm64`): its default backend required, the others
  and torch optional.

A missing optional backend prints a `--` line and does not fail the report. The checks are
functions, each returning a Check, or None when it does not apply (a CPU TVM module needs no
device line): every backend gets the import check of its runtime class, the built-in backends
their checks in CHECKS (keyed by backend name), and a backend's record (lbdeploy/backends.py) may
bring its own (`BackendSpec.doctor_checks`, run after those).

    report = diagnose(artifact_dir=None, target="jetson-orin")
    report.ok          # every required check passed
    report.lines()     # ["ok    onnxruntime 1.32.0", "FAIL  ...: fix: ...", "--    tvm: ..."]

To check something new for a built-in backend, add a function to its list in CHECKS; a backend
from another package lists its checks in its record.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from lbdeploy import __version__
from lbdeploy.artifact import contained_path, open_artifact
from lbdeploy.backends import get_backend
from lbdeploy.board_os import NV_TEGRA_RELEASE, jetpack_of_l4t, parse_nv_tegra_release, tensorrt_needed
from lbdeploy.errors import LbdeployError
from lbdeploy.kernels.elf import elf_arch, host_arch
from lbdeploy.runtime.verified import private_copies
from lbdeploy.targets import Target, get_target, host_target

TVM_RECIPE = "docs/tvm.md, 'The TVM runtime on the board'"


@dataclass(frozen=True)
class Check:
    """One finding: `what` was checked, `found` is what is there; `fix` says how to get it when not ok.

    `required` False marks a finding about an optional backend: when not ok it prints as `--` and
    does not fail the report.
    """

    what: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        """The printed line: `ok    what: found`, `FAIL  what: found; fix: ...` or `--    what: found (optional; ...)`."""
        if self.ok:
            return f"ok    {self.what}: {self.found}"
        if not self.required:
            return f"--    {self.what}: {self.found} (optional; to use it: {self.fix})"
        return f"FAIL  {self.what}: {self.found}; fix: {self.fix}"


@dataclass
class Context:
    """What the checks may look at: the artifact (or None), its target and the backend being checked."""

    backend: str
    root: Path | None = None
    manifest: dict = field(default_factory=dict)
    target: Target | None = None


def _module_version(name: str, fix: str, what: str | None = None) -> Check:
    try:
        module = __import__(name)
    except ImportError as err:
        return Check(what or f"python package {name}", False, f"not importable ({err})", fix)
    return Check(what or f"python package {name}", True, getattr(module, "__version__", "installed"))


def _runtime_class(context: Context) -> Check:
    spec = get_backend(context.backend)
    try:
        spec.load_runtime()
    except LbdeployError as err:
        return Check(f"{context.backend} runtime", False, str(err), f"pip install 'lbdeploy[{spec.extra}]'")
    return Check(f"{context.backend} runtime", True, f"{spec.runtime.__module__}:{spec.runtime.__qualname__}")


def _onnxruntime(context: Context) -> Check:
    return _module_version("onnxruntime", "pip install 'lbdeploy[ort]'")


def _kernel_library(context: Context) -> Check | None:
    """The artifact's kernel library loads into an ONNX Runtime session here."""
    library = (context.manifest.get("kernel_library") or {}).get("path")
    if context.root is None or not library:
        return None
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
    return _module_version("tvm", f"pip install 'lbdeploy[tvm]' (on a Jetson: {TVM_RECIPE})")


def _tvm_module_arch(context: Context) -> Check | None:
    """The artifact's TVM module was compiled for this machine's CPU."""
    module = (context.manifest.get("tvm") or {}).get("module")
    if context.root is None or not module:
        return None
    path = contained_path(context.root, module, "TVM module")
    if not path.is_file():
        return Check("TVM module", False, f"{module} is missing", "re-export the model")
    try:
        built, here = elf_arch(path), host_arch()
    except LbdeployError as err:
        return Check("TVM module", False, str(err), "re-export the model")
    target = context.manifest.get("target", "its target")
    if built != here:
        return Check("TVM module", False, f"{module} is {built} code (for {target}), this machine is {here}",
                     f"run it on the {target} board (copy it there with `lbdeploy bundle`), or re-export for "
                     "this machine's target")
    return Check("TVM module", True, f"{module} is {built} code, like this machine")


def _tvm_device(context: Context) -> Check | None:
    """A GPU module needs TVM's CUDA runtime library and a visible device; a CPU module needs nothing more."""
    device = (context.manifest.get("tvm") or {}).get("device", "cpu")
    if context.root is None or device == "cpu":
        return None
    try:
        import tvm
    except ImportError:
        return None  # the tvm package line already says so
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        return Check("TVM CUDA runtime", False,
                     "this TVM has no CUDA runtime (libtvm_runtime_cuda.so is missing or failed to load; the PyPI "
                     "wheel's needs a CUDA 13 driver)",
                     f"build TVM's runtime with CUDA against the board's CUDA ({TVM_RECIPE})")
    if not tvm.cuda(0).exist:
        return Check("TVM device", False, "TVM's CUDA runtime loads but sees no GPU",
                     "check the NVIDIA driver (`lbdeploy doctor` [tensorrt] lines show the CUDA driver), or export "
                     "for a CPU target")
    return Check("TVM device", True, "cuda:0 present")


def _cuda_driver_version() -> tuple[int, int] | None:
    """The CUDA version the driver serves (cuDriverGetVersion), or None without a driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, version.value % 1000 // 10


def _cuda_driver(context: Context) -> Check:
    """libcuda (the NVIDIA driver's CUDA library) loads, reports a driver version and a GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Check("CUDA driver", False, "libcuda.so.1 not found",
                     "install the NVIDIA driver (on a Jetson: JetPack; it ships libcuda)")
    version = _cuda_driver_version()
    if version is None:
        return Check("CUDA driver", False, "cuDriverGetVersion failed", "check the NVIDIA driver installation")
    count = ctypes.c_int(0)
    initialised = cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
    if not initialised or count.value == 0:
        return Check("CUDA driver", False, f"CUDA {version[0]}.{version[1]} driver, no GPU",
                     "run on a machine with an NVIDIA GPU")
    return Check("CUDA driver", True, f"CUDA {version[0]}.{version[1]} driver, {count.value} GPU(s)")


def _cuda_python(context: Context) -> Check:
    """cuda-python is importable and not newer than the driver's CUDA (its bindings need that driver)."""
    try:
        import cuda.bindings as bindings

        version = bindings.__version__
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401  (older cuda-python layout)

            version = getattr(__import__("cuda"), "__version__", "installed (old layout)")
        except ImportError:
            return Check("cuda-python", False, "not importable",
                         "pip install 'cuda-python==X.Y.*' with X.Y the CUDA of the board's JetPack "
                         "(12.6 on JetPack 6.1/6.2, 12.2 on 6.0); a bundle pins it (`lbdeploy bundle`)")
    parts = version.split(".")
    driver = _cuda_driver_version()
    if driver is None or not (parts[0].isdigit() and len(parts) > 1 and parts[1].isdigit()):
        return Check("cuda-python", True, version)
    mine = (int(parts[0]), int(parts[1]))
    if mine > driver:
        return Check("cuda-python", False, f"{version} is newer than the driver's CUDA {driver[0]}.{driver[1]}",
                     f"pip install 'cuda-python=={driver[0]}.{driver[1]}.*'")
    return Check("cuda-python", True, f"{version} (driver CUDA {driver[0]}.{driver[1]})")


def _custom_ops(context: Context) -> bool:
    return bool((context.manifest.get("tensorrt") or {}).get("plugin")) if context.manifest else True


def _jetpack(context: Context) -> Check | None:
    """On a Jetson: its JetPack release, refused when lbdeploy's TensorRT path cannot run on it."""
    try:
        text = Path(NV_TEGRA_RELEASE).read_text()
    except OSError:
        return None  # not a Jetson: the driver and TensorRT lines judge the machine
    release = parse_nv_tegra_release(text)
    record = jetpack_of_l4t(release) if release else None
    if record is None:
        return Check("JetPack", True, f"Jetson Linux {release or '(unreadable release)'}, not in lbdeploy's table")
    if record.unsupported:
        return Check("JetPack", False, f"{record.description}", record.unsupported)
    needed = tensorrt_needed(_custom_ops(context))
    if record.tensorrt_version() < needed:
        return Check("JetPack", False, f"{record.description}",
                     f"this artifact needs TensorRT >= {'.'.join(map(str, needed))}: flash JetPack 6.1+, or re-export "
                     "with --ops standard")
    return Check("JetPack", True, record.description)


def _tensorrt(context: Context) -> Check:
    needed = tensorrt_needed(_custom_ops(context))
    wanted = ".".join(map(str, needed))
    try:
        import tensorrt
    except ImportError:
        return Check("TensorRT", False, "python module tensorrt not importable",
                     "on a Jetson: `sudo apt install python3-libnvinfer` (JetPack 6) and create the venv "
                     "with --system-site-packages (a bundle's install.sh does)")
    found = tuple(int(part) for part in tensorrt.__version__.split(".")[:2])
    why = "the TernaryConv plugin" if needed == tensorrt_needed(True) else "plain-Conv (--ops standard) engines"
    return Check("TensorRT", found >= needed, tensorrt.__version__,
                 f"{why} need TensorRT >= {wanted} (JetPack 6.1+)")


def _onnx(context: Context) -> Check:
    """`build-engine` reads model.onnx with the onnx package before TensorRT parses it."""
    return _module_version("onnx", "pip install 'lbdeploy[tensorrt]' (brings onnx)",
                           what="python package onnx (build-engine)")


def _tensorrt_plugin(context: Context) -> Check | None:
    plugin = ((context.manifest.get("tensorrt") or {}).get("plugin") or {}).get("library")
    if context.root is None or not plugin:
        return None
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


def _tensorrt_engine(context: Context) -> Check | None:
    engine = (context.manifest.get("tensorrt") or {}).get("engine")
    if context.root is None or not engine:
        return None
    built = contained_path(context.root, engine, "TensorRT engine").is_file()
    return Check("TensorRT engine", built, engine if built else f"{engine} not built",
                 f"lbdeploy build-engine {context.root}")


def _torch(context: Context) -> Check:
    return _module_version("torch", "pip install 'lbdeploy[torch]'")


CHECKS: dict[str, list[Callable[[Context], Check | None]]] = {
    "torch": [_torch],
    "ort": [_onnxruntime, _kernel_library],
    "tvm": [_tvm, _tvm_module_arch, _tvm_device],
    "tensorrt": [_jetpack, _tensorrt, _onnx, _cuda_python, _cuda_driver, _tensorrt_plugin, _tensorrt_engine],
}


@dataclass
class Report:
    """Every check, grouped by backend (an optional backend's heading says so)."""

    checks: dict[str, list[Check]]

    @property
    def ok(self) -> bool:
        """True when every required check passed (optional backends never fail the report)."""
        return all(check.ok or not check.required for checks in self.checks.values() for check in checks)

    def lines(self) -> list[str]:
        """One line per check, each backend under its own heading."""
        lines = [f"lbdeploy {__version__}, python {platform.python_version()}, {platform.machine()}"]
        for backend, checks in self.checks.items():
            optional = checks and not any(check.required for check in checks)
            lines.append(f"[{backend}]" + (" (optional)" if optional else ""))
            lines += [check.line() for check in checks]
        return lines


def check_backend(context: Context, required: bool = True) -> list[Check]:
    """Every check of `context.backend` that applies. An optional backend whose package is missing
    gets that one line only (its device or library lines would say nothing more)."""
    found = [_runtime_class(context)]
    if not required and not found[0].ok:
        return [replace(found[0], required=False)]
    own = [*CHECKS.get(context.backend, []), *get_backend(context.backend).doctor_checks]
    found += [check for check in (run(context) for run in own) if check is not None]
    return found if required else [replace(check, required=False) for check in found]


def needed_backends(manifest: dict, target: str | None, backends: list[str] | None) -> dict[str, bool]:
    """Which backends to check, each mapped to whether it is required.

    The artifact's backend; else the named backends; else the target's backends (its default
    required); else this machine's target, with torch optional.

    Raises:
        ConfigError: an unknown target or backend name.
    """
    if manifest:
        return {manifest["backend"]: True}
    if backends:
        return {get_backend(name).name: True for name in backends}
    chosen = get_target(target) if target else host_target()
    needed = {name: name == chosen.default_backend for name in chosen.served()}
    if target is None:
        needed.setdefault("torch", False)
    return needed


def diagnose(artifact_dir=None, backends: list[str] | None = None, target: str | None = None) -> Report:
    """Check this machine for an artifact, a target or backends (see the module docstring for which).

    Args:
        artifact_dir: an artifact folder (checked and verified first), or None.
        backends: backend names to check when no artifact is given.
        target: a `--target` whose backends to check when neither an artifact nor backends are given.
    Returns:
        The Report. Raises: ArtifactError for an unreadable artifact; ConfigError for a bad name.
    """
    root, manifest = (None, {}) if artifact_dir is None else open_artifact(artifact_dir)
    made_for = manifest.get("target") or target
    try:
        record = get_target(made_for) if made_for else None
    except LbdeployError:
        record = None  # an artifact of a target this lbdeploy does not know: its backend's checks still run
    checks = {}
    for name, required in needed_backends(manifest, target, backends).items():
        context = Context(get_backend(name).name, root, manifest, record)
        checks[name] = check_backend(context, required)
    return Report(checks)

