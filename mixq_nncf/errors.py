"""User-facing errors: each names the problem and the fix; the CLI prints them without a traceback."""


class MixqError(Exception):
    """Base of every error the user can act on."""


class ConfigError(MixqError, ValueError):
    """A config problem the user can fix; the message names the key and the valid choices."""


class CheckpointError(MixqError):
    """A checkpoint does not fit the model (keys or shapes)."""


class DataError(MixqError):
    """An image or dataset cannot be used (unreadable, too small, empty folder)."""


class MissingFileError(MixqError):
    """An external file (weights, metric model) is not where we looked; says what to put where."""


class ScopeError(MixqError):
    """A scope pattern matches no layer, or a layer the plan names has no quantizer NNCF can attribute to it."""


class ParityError(MixqError):
    """An exported IR disagrees with the torch model beyond tolerance."""


class TrainingDiverged(MixqError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


class OutputError(MixqError):
    """An output cannot be written (read-only folder, full disk) or would overwrite another run's results."""


class IRError(MixqError):
    """An OpenVINO IR cannot be read or compiled (corrupt, truncated, missing .bin, files from two exports)."""
