"""Training RTMO: the ground-truth format, SimOTA assignment, the losses and the objective.

`RTMOModel.loss(images, targets, stage)` is the entry point; the modules here are its parts.
"""
