"""Training LBRN pose networks with the paper's recipe (RMSprop 2.5e-4, MSE on every stack).

- `trainer`: the training loop (`TrainConfig`, `train`), checkpoints, resume, DDP.
- `pose_dataset`: a torch Dataset of augmented crops and heatmap targets over lbdeploy.data.
- `losses`: the heatmap loss with intermediate supervision.
- `schedule`: optimizer and learning-rate drops.
- `commands`: `lbdeploy train` and `lbdeploy eval`.
"""
