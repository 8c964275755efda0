"""Pose estimation helpers shared by training, evaluation and the runtime (numpy only).

- `skeletons`: joint names, flip pairs and skeleton edges of the MPII-16 and LSP-14 layouts.
- `affine`: the stacked-hourglass crop geometry (center/scale <-> 2x3 affine matrices).
- `decode`: heatmaps -> keypoints (argmax + quarter-pixel shift) and flip-test averaging.
"""
