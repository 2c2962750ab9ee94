"""The engine stays pure: models/ never does I/O nor touches the stream stack."""

import ast
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
BANNED_MODULES = {
    "faust",
    "kafka",
    "aiokafka",
    "redis",
    "prometheus_client",
    "pydantic_settings",
    "socket",
    "requests",
    "urllib",
    "http",
    "subprocess",
    "stream_app",
    "producers",
}
BANNED_CALLS = {"open", "print", "input"}


def _modules():
    return sorted(p for p in MODELS.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_engine_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in BANNED_MODULES, f"{path.name} imports {name}"
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
            pytest.fail(f"{path.name}:{node.lineno} reads the environment")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in BANNED_CALLS
        ):
            pytest.fail(f"{path.name}:{node.lineno} calls {node.func.id}()")
