"""`log_failure`: a log write nobody waits for still reports its failure."""

from __future__ import annotations

import concurrent.futures
import logging

from mailmoat.store.log import log_failure


def test_a_failed_write_is_logged_and_a_good_one_is_not(caplog):
    logger = logging.getLogger("mailmoat.test")
    bad: concurrent.futures.Future[bool] = concurrent.futures.Future()
    good: concurrent.futures.Future[bool] = concurrent.futures.Future()
    with caplog.at_level(logging.ERROR, logger="mailmoat.test"):
        log_failure(bad, logger, "recording delivery of m1")
        log_failure(good, logger, "logging rejected message m2")
        bad.set_exception(RuntimeError("database is locked"))
        good.set_result(True)
    assert [r.getMessage() for r in caplog.records] == [
        "recording delivery of m1 failed: database is locked"]
