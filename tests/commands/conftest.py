from tests.trained_run import trained  # noqa: F401  (the session's tiny trained run)
