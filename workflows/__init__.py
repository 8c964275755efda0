"""Workflows that span layers: they export and then run (docs/architecture.md).

`compare` plans backend comparisons for `profile --compare` and `eval --compare`, exporting a
model.pt on the fly. Commands (the `commands` package) call these; nothing below imports them.
"""
