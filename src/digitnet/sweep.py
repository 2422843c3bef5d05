"""Sweep summaries (filled in below)."""

from hydra.experimental.callback import Callback


class SweepSummaryCallback(Callback):
    pass
