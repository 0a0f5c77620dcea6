"""Training: data, augmentation, assignment, losses and the loop, one concern per module."""
