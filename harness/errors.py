"""Exceptions a user can act on. The CLI prints their message as one line and exits with 2."""


class HarnessError(Exception):
    """Base class: bad input or a state the user must resolve; never a bug in the harness."""


class ConfigError(HarnessError):
    """Unknown `--set` key, a value of the wrong type, or an invalid combination."""


class BudgetError(HarnessError):
    """A budget or schedule string that cannot be parsed or is not positive."""


class DataError(HarnessError):
    """A dataset spec that names nothing usable: missing path, corrupt file, wrong image size."""


class RunDirError(HarnessError):
    """A run directory that is not a run, belongs to another config, or cannot be written."""


class CheckpointError(HarnessError):
    """No loadable checkpoint where one is required, or one that does not fit its run."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names types this harness never writes: it is refused unread."""


class ResourceError(HarnessError):
    """The machine lacks what a run asks of it: memory for the model and batch its config describes."""


class MetricError(HarnessError):
    """A metric that cannot be computed as asked (no Inception weights, too few samples, ...)."""
