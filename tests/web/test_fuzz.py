"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis),
in-process against the ASGI app, authenticated as an administrator: no input may cause a
server error (5xx), and 200 responses must match the documented schema."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from mailmoat.web.app import create_app
from mailmoat.web.auth import set_hash_cost

# schemathesis' pytest plugin needs the schema at collection time (its lazy fixture loader
# does not work with pytest 9), so the app is built here, in a temporary directory.
set_hash_cost(1, 1024)
_DIR = Path(tempfile.mkdtemp(prefix="mailmoat-fuzz-"))
from tests.web.fixtures import seed
from tests.web.sink import Sink

SINK = Sink().__enter__()  # digests go to a real SMTP sink, so sending them is a 200
ENV = seed(_DIR, delivery={"downstream": f"127.0.0.1:{SINK.port}"})
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ENV.config, ENV.db))


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    ENV.db.dispose()
    SINK.__exit__()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_never_answers_5xx(case):
    if case.method == "DELETE" and case.path == "/api/v1/auth/tokens/{token_id}":
        case.path_parameters = {"token_id": 999999}  # keep the admin's own token alive
    response = case.call(headers={"Authorization": f"Bearer {ENV.tokens['admin']}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    if response.status_code == 200:
        case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])
