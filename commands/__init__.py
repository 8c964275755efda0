"""The `lbdeploy` CLI's commands, one module per area (the top layer, docs/architecture.md).

Commands are thin: they parse options, call the library (lbdeploy, runtime, exporters,
workflows) and print. cli.py lists the modules in COMMAND_MODULES.
"""
