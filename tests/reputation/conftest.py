from tests.dnsserver import dns_server  # noqa: F401  (fixture)
