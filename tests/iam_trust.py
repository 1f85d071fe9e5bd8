"""Does a trust policy let a service assume the role, given the keys that service sends?

IAM's rule for condition operators: a key missing from the request context makes the
condition false (only the ...IfExists variants and Null differ). So a trust policy that
requires aws:SourceAccount denies a caller that does not send it, which is what API Gateway
does when it assumes an integration's credentials role.
"""

from __future__ import annotations

import fnmatch
import json


def _values(value) -> list[str]:
    return [
        str(v).lower() if isinstance(v, bool) else str(v)
        for v in (value if isinstance(value, list) else [value])
    ]


def _condition_holds(operator: str, key: str, expected, context: dict) -> bool:
    if_exists = operator.endswith("IfExists")
    op = operator.removesuffix("IfExists")
    if op == "Null":
        missing = key not in context
        return missing == (_values(expected)[0] == "true")
    if key not in context:
        return if_exists
    actual = str(context[key])
    wanted = _values(expected)
    if op in ("StringEquals", "ArnEquals", "Bool"):
        return actual in wanted
    if op in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(actual, w) for w in wanted)
    if op == "StringNotEquals":
        return actual not in wanted
    raise ValueError(f"operator {operator} not handled by this evaluator")


def allows_assume(policy, service: str, context: dict | None = None) -> bool:
    """True when an Allow statement for sts:AssumeRole by `service` holds and no Deny does."""
    doc = json.loads(policy) if isinstance(policy, str) else policy
    context = {"aws:PrincipalServiceName": service, **(context or {})}
    allowed = False
    for stmt in doc["Statement"]:
        actions = _values(stmt.get("Action", []))
        if not any(fnmatch.fnmatchcase("sts:AssumeRole", a) for a in actions):
            continue
        principal = stmt.get("Principal", {})
        services = _values(principal.get("Service", [])) if isinstance(principal, dict) else []
        if principal != "*" and service not in services:
            continue
        holds = all(
            _condition_holds(op, key, expected, context)
            for op, pairs in stmt.get("Condition", {}).items()
            for key, expected in pairs.items()
        )
        if holds and stmt.get("Effect") == "Deny":
            return False
        allowed = allowed or (holds and stmt.get("Effect") == "Allow")
    return allowed
