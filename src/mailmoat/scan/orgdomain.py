"""Organisational domains (RFC 7489 section 3.2), shared by every check that compares them.

The bundled Public Suffix List snapshot only: a gateway must not fetch the list at scan time.
"""

from __future__ import annotations

from functools import lru_cache

import tldextract


@lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                 include_psl_private_domains=True)


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organisational domain: one label under the public suffix (example.co.uk)."""
    domain = domain.lower().rstrip(".")
    if not domain:
        return ""
    ext = _extractor()(domain)
    top = ext.top_domain_under_public_suffix
    if top:
        return top
    if not ext.suffix:
        # Not in the list (".test", ".internal"): the PSL's default rule "*" makes the last
        # label the suffix, so the org domain is the last two labels.
        labels = domain.split(".")
        return ".".join(labels[-2:])
    return domain  # the domain is itself a public suffix
