import utils  # noqa: F401  (quiets paddle's import-time warning)
