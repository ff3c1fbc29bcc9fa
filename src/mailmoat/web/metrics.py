"""Prometheus metrics computed from the store and the spool at scrape time, so they are
right whichever process (gateway, workers, console) wrote the data."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mailmoat.config import Config
from mailmoat.store import queries
from mailmoat.store.db import Database


class StoreCollector(Collector):
    def __init__(self, config: Config, db: Database) -> None:
        self.config, self.db = config, db

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from mailmoat.web.services import queue_depth

        with self.db.session() as s:
            t = queries.totals_for_metrics(s)
        msgs = CounterMetricFamily("mailmoat_messages", "Messages in the message log",
                                   labels=["direction", "category", "action"])
        for d, c, a, n in t["messages"]:
            msgs.add_metric([d, c, a], n)
        yield msgs
        rc = GaugeMetricFamily("mailmoat_recipients", "Recipients by delivery status", labels=["status"])
        for st, n in t["recipients"]:
            rc.add_metric([st], n)
        yield rc
        yield GaugeMetricFamily("mailmoat_quarantine_held", "Messages held in quarantine",
                                value=t["quarantine_held"])
        q = GaugeMetricFamily("mailmoat_spool_messages", "Messages in the spool by state", labels=["state"])
        for state, n in queue_depth(self.config).items():
            q.add_metric([state], n)
        yield q
        scan = CounterMetricFamily("mailmoat_scan_milliseconds", "Time spent scanning (sum)")
        scan.add_metric([], float(t["scan_ms_sum"] or 0.0))
        yield scan
        yield CounterMetricFamily("mailmoat_scans", "Messages scanned", value=int(t["scan_count"] or 0))


def make_registry(config: Config, db: Database) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(config, db))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
