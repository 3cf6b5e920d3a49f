"""Error types shared by the CLI and the components, and the exit status each maps to."""


class BgpnetError(Exception):
    """Base class: a problem the user can act on; the CLI prints it without a traceback."""

    exit_status = 1


class ConfigError(BgpnetError):
    """A config file or object is invalid. `where` names the file and the field."""

    exit_status = 2

    def __init__(self, message: str, where: str = ""):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class ValidationError(ConfigError):
    """A datastore object (pool, policy, peer ...) is invalid; nothing was changed."""


class DatastoreError(BgpnetError):
    """Transient datastore failure; callers retry."""


class NotFound(BgpnetError):
    pass


class AlreadyExists(BgpnetError):
    pass


class Conflict(BgpnetError):
    """Compare-and-swap lost: re-read and retry."""


class KernelFeatureMissing(BgpnetError):
    """The running kernel lacks a feature (e.g. ipip); the message names the alternative."""

    exit_status = 3
