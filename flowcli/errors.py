"""User-facing errors.

Anything raised as a :class:`FlowcliError` is printed by the CLI as one line on
stderr (no traceback unless ``--debug``) and turned into a non-zero exit code.
"""
import signal


class FlowcliError(Exception):
    """An error the user can act on: bad input, missing file, refused overwrite."""

    exit_code = 1


class InputError(FlowcliError):
    """The input (video, image folder, flow file, stdin stream) is unusable."""


class OutputExistsError(FlowcliError):
    """An output file already exists and ``--overwrite`` was not given."""


class CheckpointError(FlowcliError):
    """A weights file cannot be loaded safely or does not fit the model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGINT) turned into an exception, so that ``finally`` blocks and temp-file clean-up run
    as on Ctrl-C; the CLI exits 128 + signum (143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
