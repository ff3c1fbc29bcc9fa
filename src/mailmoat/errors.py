"""Exception tree of mailmoat.

    MailmoatError
     ├── ConfigError      the TOML file or a section of it is invalid
     ├── SpoolError       a message could not be written to or read from the spool
     ├── ScanError        a check broke (turned into a *_FAIL symbol, never a crash)
     ├── PolicyError      a policy document is invalid
     ├── RelayError       delivery downstream failed
     └── StoreError       the message log or quarantine store failed
"""

from __future__ import annotations


class MailmoatError(Exception):
    """Base of every error mailmoat raises on purpose."""


class ConfigError(MailmoatError):
    pass


class SpoolError(MailmoatError):
    pass


class ScanError(MailmoatError):
    pass


class PolicyError(MailmoatError):
    pass


class RelayError(MailmoatError):
    pass


class StoreError(MailmoatError):
    pass
