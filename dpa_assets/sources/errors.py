"""The source could not be reached: unlike a corrupt payload, trying again later may succeed."""


class SourceUnavailable(RuntimeError):
    """Every attempt to reach the source failed; ``str(error)`` says which day, where, why, how often."""
