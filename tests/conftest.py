"""Every test marked ``anyio`` runs once on asyncio (debug mode) and once on trio."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
import structlog.testing

from llm_server import fake_llm, llm_server  # noqa: F401 - fixtures: a fake OpenAI/Anthropic API
from redis_server import (  # noqa: F401 - fixtures: real Redis servers
    collect_client_leftovers,
    debian_redis_tls_url,
    debian_redis_url,
    redis_cluster_url,
    redis_server,
    redis_url,
    valkey_8_url,
)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"debug": True}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True, scope="session")
def _quiet_structlog() -> None:
    """The library never configures structlog; the test suite, as an application, does."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, object]]]:
    """Every structlog event, debug included, of budgets opened during the test."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@pytest.fixture(autouse=True)
def _redis_client_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that talked to a Redis server, what coredis left unclosed is
    collected at once (see ``collect_client_leftovers``)."""
    yield
    servers = {
        "redis_url",
        "redis_server",
        "debian_redis_url",
        "debian_redis_tls_url",
        "valkey_8_url",
        "redis_cluster_url",
    }
    if servers & set(request.fixturenames):
        collect_client_leftovers()
