"""Intra-domain security: catch compromised internal accounts from their sending behaviour.

identity.py   who sent it (SMTP AUTH, a trusted upstream's header, or the envelope)
fingerprint.py near-identical content, cheaply (simhash)
baseline.py   what is normal for an account and its peers, learned online
signals.py    how a message and its window differ from normal: INTERNAL_* reasons
store.py      where state lives: memory, Redis (shared by nodes), the database
accounts.py   restrictions (hold, throttle, suspend, release) and incidents
alerts.py     log, syslog, webhook and mail alerts
guard.py      the per-process service tying them together (`InternalGuard`)
check.py      the scan-pipeline check (family `internal`) that asks the guard
settings.py   `[internal]`

docs/internal.md describes the feature; docs/symbols/internal.md the symbols.
"""
