"""Both targets satisfy the one interface the CLI is written against (targets/base.py)."""

import inspect

import pytest

from smartfarm_cli.targets.aws import AwsTarget
from smartfarm_cli.targets.base import Target
from smartfarm_cli.targets.local import LocalTarget

METHODS = [
    name
    for name, member in vars(Target).items()
    if inspect.isfunction(member) and not name.startswith("_")
]


def test_the_interface_is_not_empty():
    assert {"prepare", "ingest", "query", "trend", "spikes", "status"} <= set(METHODS)


@pytest.mark.parametrize("cls", [LocalTarget, AwsTarget])
@pytest.mark.parametrize("method", METHODS)
def test_each_target_has_each_method_with_the_same_parameters(cls, method):
    expected = inspect.signature(getattr(Target, method)).parameters
    actual = inspect.signature(getattr(cls, method)).parameters
    assert list(actual) == list(expected), f"{cls.__name__}.{method}"
    for name, parameter in expected.items():
        if parameter.default is not inspect.Parameter.empty and parameter.default is not ...:
            assert actual[name].default == parameter.default, f"{cls.__name__}.{method}({name})"


@pytest.mark.parametrize("cls", [LocalTarget, AwsTarget])
def test_each_target_names_itself(cls, tmp_path):
    target = cls() if cls is AwsTarget else cls(tmp_path)
    assert target.name in ("local", "aws") and target.rules is not None
