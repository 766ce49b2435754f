"""Shared fixtures. Fixture modules are registered here (STYLE.md)."""

pytest_plugins: list[str] = [
    "tests.fixtures.broker",
    "tests.fixtures.agent",
    "tests.fixtures.streams",
    "tests.fixtures.models",
    "tests.fixtures.tiny_models",
    "tests.fixtures.hostile_agent",
]
