"""How a source fails: unreachable for now (worth retrying later) or refusing us (retrying cannot help)."""


class SourceUnavailable(RuntimeError):
    """Every attempt to reach the source failed; ``str(error)`` says which day, where, why, how often."""


class SourceRefused(RuntimeError):
    """The source refused our credentials (HTTP 401/403); only a fixed token helps, not a retry."""
