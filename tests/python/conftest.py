# tests/python/conftest.py — what the pytest suite of the blkmap package
# shares: the blkmap-server that tests/python.test started (its URL in
# BLKMAP_TEST_URL) and a fresh dataset URL per test.
import os
import re
import uuid

import pytest


@pytest.fixture(scope="session")
def server():
    url = os.environ.get("BLKMAP_TEST_URL")
    if not url:
        pytest.fail("BLKMAP_TEST_URL is not set: run the suite through tests/python.test "
                    "(make check), which starts blkmap-server")
    return url


@pytest.fixture
def url(server, request):
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80]
    return "%s/py/%s-%s" % (server, name, uuid.uuid4().hex[:8])


@pytest.fixture
def srcdir():
    return os.environ.get("BLKMAP_TEST_SRCDIR",
                          os.path.join(os.path.dirname(__file__), "..", ".."))
