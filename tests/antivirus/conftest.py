from tests.clamd import clamd_server  # noqa: F401  (session-scoped real clamd)
