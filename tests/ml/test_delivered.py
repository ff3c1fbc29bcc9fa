"""The delivered-mail sample: the counter-examples that keep spam reports from blaming the
words of good mail (mailmoat.ml.delivered)."""

from __future__ import annotations

import numpy as np

from mailmoat.ml import delivered


def _b(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def test_records_round_trip_and_a_torn_tail_is_ignored(tmp_path):
    path = tmp_path / "model" / delivered.SAMPLE_NAME
    delivered.append(path, _b(5, 3, 3, 9))
    delivered.append(path, _b(1))
    with path.open("ab") as fh:  # a crash in the middle of a third record
        fh.write(delivered._record(_b(7, 8, 9))[:-3])
    s = delivered.read(path)
    assert [b.tolist() for b in s.buckets] == [[3, 5, 9], [1]]
    assert delivered.read(tmp_path / "none").buckets == []


def test_protected_buckets_are_those_good_mail_uses_except_its_copies_of_the_message(tmp_path):
    path = tmp_path / delivered.SAMPLE_NAME
    delivered.append(path, _b(1, 2, 3, 40, 41, 42, 43, 44))  # good mail sharing 1, 2
    delivered.append(path, _b(10, 11, 12, 13, 14, 15, 16, 99))  # an earlier copy of the spam
    spam = _b(1, 2, 10, 11, 12, 13, 14, 15, 16)
    s = delivered.read(path)
    # 99 is not in the report; the copy (Jaccard 7/10) protects nothing; the good mail
    # protects what it shares with the report.
    assert s.protected(spam).tolist() == [1, 2]
    # A released message (the lesson memory's ham) protects its buckets as well.
    assert s.protected(spam, [np.array([16, 500], np.uint32)]).tolist() == [1, 2, 16]
    assert delivered.Sample([]).protected(spam).tolist() == []


def test_the_file_is_compacted_to_its_newest_records(tmp_path, monkeypatch):
    path = tmp_path / delivered.SAMPLE_NAME
    monkeypatch.setattr(delivered, "MAX_RECORDS", 3)
    monkeypatch.setattr(delivered, "COMPACT_BYTES", 200)
    for i in range(30):
        delivered.append(path, _b(i, 1000 + i))
    assert path.stat().st_size <= 200
    s = delivered.read(path)
    assert len(s.buckets) <= 3 + 200 // 20
    assert s.buckets[-1].tolist() == [29, 1029]
    # Whatever survives is whole and in arrival order.
    firsts = [int(b[0]) for b in s.buckets]
    assert firsts == sorted(firsts) and firsts[-1] == 29


async def test_the_gateway_samples_only_mail_it_accepts(tmp_path):
    from mailmoat.app import _verdict_hook
    from tests.conftest import make_config, make_email, scan_bytes

    cfg = make_config(storage={"data_dir": str(tmp_path)})
    hook = _verdict_hook(cfg, None)
    assert hook is not None
    good = await scan_bytes(make_email(subject="Minutes", body="Minutes of Monday's team "
                                       "meeting are attached; the next one is on Friday."), cfg)
    spam = await scan_bytes(b"Subject: hi\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-"
                            b"ANTI-UBE-TEST-EMAIL*C.34X\r\n", cfg)
    assert good.verdict.action.value == "accept" and spam.verdict.action.value != "accept"
    hook(good)
    hook(spam)
    path = delivered.sample_path(tmp_path / "model")
    assert [b.tolist() for b in delivered.read(path).buckets] == \
        [np.unique(delivered_buckets(good)).tolist()]

    off = make_config(storage={"data_dir": str(tmp_path / "off")},
                      content={"delivered_sample_rate": 0})
    assert _verdict_hook(off, None) is None


def delivered_buckets(outcome) -> np.ndarray:
    from mailmoat.ml.features import N_FEATURES_BITS, features_of, vectorize
    return vectorize(features_of(outcome.message), N_FEATURES_BITS)[0]


async def test_a_failing_listener_does_not_silence_the_others(tmp_path, caplog):
    from mailmoat.app import _verdict_hook
    from tests.conftest import make_config, make_email, scan_bytes

    class Broken:
        def offer_outcome(self, outcome):
            raise RuntimeError("database gone")

    cfg = make_config(storage={"data_dir": str(tmp_path)})
    hook = _verdict_hook(cfg, Broken())  # type: ignore[arg-type]
    good = await scan_bytes(make_email(body="See you at the meeting on Friday."), cfg)
    hook(good)
    assert len(delivered.read(delivered.sample_path(tmp_path / "model")).buckets) == 1
    assert "verdict listener" in caplog.text and "database gone" in caplog.text
