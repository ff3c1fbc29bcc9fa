"""A real TAXII 2.1 server for the tests: OASIS medallion with its memory backend, one API
root (`api1`) holding one readable and writable collection, HTTP basic auth.

Run as `python -m tests.intel.taxii_server DATA_DIR`: it binds 127.0.0.1 on a free port
and prints the port on its first line of output, then serves until killed. (medallion
keeps its Flask app in a module global, so each server is a process of its own.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
USERS = {"reader": "reader-secret", "publisher": "publisher-secret"}


def data(base: str) -> dict[str, object]:
    return {
        "/discovery": {"title": "mailmoat test TAXII server", "description": "medallion",
                       "contact": "tests", "default": f"{base}/api1/",
                       "api_roots": [f"{base}/api1/"]},
        "api1": {
            "information": {"title": "indicators", "description": "test API root",
                            "versions": ["application/taxii+json;version=2.1"],
                            "max_content_length": 9765625},
            "status": [],
            "collections": [{"id": COLLECTION, "title": "phishing indicators",
                             "description": "published by the tests", "can_read": True,
                             "can_write": True,
                             "media_types": ["application/stix+json;version=2.1"],
                             "objects": [], "manifest": []}],
        },
    }


def main() -> None:
    from medallion import application_instance, register_blueprints, set_config
    from werkzeug.serving import make_server

    folder = Path(sys.argv[1])
    server = make_server("127.0.0.1", 0, application_instance, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    path = folder / "taxii-data.json"
    path.write_text(json.dumps(data(base)), encoding="utf-8")
    config = {"backend": {"module": "medallion.backends.memory_backend",
                          "module_class": "MemoryBackend", "filename": str(path)},
              "users": USERS, "taxii": {"max_page_size": 100}}
    for part in ("users", "taxii", "backend"):
        set_config(application_instance, part, config)
    register_blueprints(application_instance)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
