"""Training and evaluation entry points (`anytime-perception train`, `anytime-perception evaluate`).

The interesting parts live beside them: datasets and augmentations in `anytime_perception.data`, losses and metrics
in `anytime_perception.tasks`; the loops here stay short.
"""
