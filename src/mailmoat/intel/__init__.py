"""Threat intelligence: feeds of indicators → the database → a check that blocks new mail
carrying a live one, and a retro-hunt that hands delivered mail carrying a new one to
recall (automatically at or above the feed's confidence, else to the approval queue).

    settings.py  [intel] and [[intel.feeds]]; secrets from files or the environment
    model.py     Indicator (one matchable value) and FeedBatch (one poll's harvest)
    fetch.py     reading a feed document: a file, or http(s) with a timeout and a limit
    stix.py      STIX 2.1 objects and patterns → indicators
    taxii.py     TAXII 2.1 collections, polled with added_after
    misp.py      MISP restSearch and MISP static feeds
    lists.py     plain lists and abuse.ch-style CSV
    store.py     indicators, feed state and hunts in the database
    live.py      the in-memory set the scan check (scan/intel.py) looks new mail up in
    hunt.py      the retro-hunt and the one call into recall (`hand_to_recall`)
    poller.py    poll a feed: read → store → hunt; the loops `mailmoat serve` runs
    rescan.py    re-scan delivered mail still in the spool with today's rules
    service.py   what the CLI and the REST API show

The package imports nothing on its own: loading the configuration reads settings.py only,
and the scan path (live.py, store.py) never imports the feed parsers.
"""
