"""The one exception type of the inference package."""


class InferenceInputError(ValueError):
    """Bad input or output for inference (a missing or undecodable video, too few frames, an output
    path that cannot be written...); the message is one line saying what is wrong and what to do."""
