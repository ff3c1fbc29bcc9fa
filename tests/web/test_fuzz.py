"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis),
in-process against the ASGI app: no input may cause a server error (5xx), and every answer
conforms to the document — its status code is a documented one, and its content type,
headers and body (error bodies included) are the documented ones; as an administrator,
as a domain administrator, as a user and without credentials. A method a path does not
have answers 405 with `Allow` naming every method it does have."""

from __future__ import annotations

import re
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
APP = create_app(ENV.config, ENV.db)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    ENV.db.dispose()
    SINK.__exit__()
    shutil.rmtree(_DIR, ignore_errors=True)


CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance]


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case):
    """No 5xx; every status code, content type, header and body (errors included) is the
    documented one."""
    if case.method == "DELETE" and case.path == "/api/v1/auth/tokens/{token_id}":
        case.path_parameters = {"token_id": 999999}  # keep the admin's own token alive
    case.call_and_validate(headers={"Authorization": f"Bearer {ENV.tokens['admin']}"}, checks=CHECKS)


@pytest.mark.parametrize("who", ["anonymous", "dadmin", "alice"])
@schema.parametrize()
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_for_lesser_callers(case, who):
    """401 without credentials, 403 and 404 outside one's role and scope: documented too."""
    if case.method == "DELETE" and case.path == "/api/v1/auth/tokens/{token_id}":
        case.path_parameters = {"token_id": 999999}
    headers = {} if who == "anonymous" else {"Authorization": f"Bearer {ENV.tokens[who]}"}
    case.call_and_validate(headers=headers, checks=CHECKS)


def test_405_allow_names_every_method_of_the_path():
    from starlette.testclient import TestClient

    client = TestClient(APP)
    auth = {"Authorization": f"Bearer {ENV.tokens['admin']}"}
    paths = client.get("/openapi.json").json()["paths"]
    assert paths
    for path, ops in paths.items():
        documented = {m.upper() for m in ops}
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented):
            r = client.request(method, url, headers=auth)
            assert r.status_code == 405, (method, path, r.status_code)
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert allow - {"HEAD"} == documented, (method, path, r.headers["allow"])
            assert r.json() == {"detail": "Method Not Allowed"}
