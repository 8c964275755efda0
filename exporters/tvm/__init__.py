"""TVM backend of lbdeploy: compile an exported model.onnx into a TVM module for a target.

    targets.py        TVMPreset: a target record of lbdeploy/targets.py as the TVM compiler sees it
    importer.py       ONNX -> Relax, with ai.lbdeploy::TernaryConv / QTernaryConv handled by our kernels
    ternary_kernel.py TernaryConv as TIR that only adds and subtracts (CPU and GPU variants)
    qternary_kernel.py QTernaryConv (uint8) as integer add/sub TIR with a requantizing epilogue (CPU)
    schedules.py      CPU schedules for every other op LBRN uses; GPU thread binding via dlight
    kernel_entries.py nvptx builds whose kernels are PTX `.entry` points (TVM 0.27 + LLVM >= 21)
    kernel_entries.py the PTX of GPU modules gets its `.entry` kernels (TVM 0.27 with LLVM >= 21)
    compile.py        compile_artifact(onnx_path, target, out_dir): the exporter's entry point (target: the record)

The runtime side (loading the .so with the TVM runtime only) is runtime/backends/tvm.py.
To support a new board, add a record to lbdeploy/targets.py; nothing else needs to change.
"""
