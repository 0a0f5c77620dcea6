"""Training RTMO, one concern per module: the procedural dataset, the ground-truth format, SimOTA
assignment, the losses and the objective. `RTMOModel.loss(images, targets, stage)` is the entry
point of the objective."""
