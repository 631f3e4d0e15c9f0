"""`--where` filters over dataset rows: a small, safe expression language. Pure, Beam-free.

Python expression syntax, evaluated by walking its syntax tree (never `eval`):

    article_license_group == 'commercial' and article_journal == 'PLoS ONE'
    article_year >= 2020 and 'Neoplasms' in article_mesh_terms
    'CD8' in caption or contains(lower(article_title), 'immun')
    image_primary_label in ('Microscopy', 'Radiology') and not article_retracted

Names are row fields; `in` tests membership in a list field or a substring of a text field;
functions: lower, upper, len, contains(field, value), startswith(field, prefix), any_of(list
field, [values]). Unknown fields and any other syntax are refused when the filter is compiled.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _contains(container, item) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, (list, tuple, set)):
        return item in container
    return False  # None, numbers, booleans: nothing is "in" them


_ARITY = {"lower": 1, "upper": 1, "len": 1, "contains": 2, "startswith": 2, "any_of": 2}
_FUNCTIONS: dict[str, Callable] = {
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "len": lambda v: len(v) if v is not None else 0,
    "contains": _contains,
    "startswith": lambda v, p: isinstance(v, str) and v.startswith(p),
    "any_of": lambda values, wanted: any(_contains(values, w) for w in wanted),
}


class FilterError(ValueError):
    pass


def _ordered(op, left, right) -> bool:
    if left is None or right is None:
        return op in (operator.eq, operator.ne) and op(left, right)
    try:
        return op(left, right)
    except TypeError:
        return False


def _compile(node, fields: set[str] | None):
    if isinstance(node, ast.Expression):
        return _compile(node.body, fields)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, fields) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda row: all(p(row) for p in parts)
        return lambda row: any(p(row) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, fields)
        return lambda row: not inner(row)
    if isinstance(node, ast.Compare):
        left = _compile(node.left, fields)
        steps = [
            (op, _compile(c, fields)) for op, c in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(row):
            current = left(row)
            for op, right in steps:
                value = right(row)
                if isinstance(op, ast.In):
                    ok = _contains(value, current)
                elif isinstance(op, ast.NotIn):
                    ok = not _contains(value, current)
                elif type(op) in _COMPARE:
                    ok = _ordered(_COMPARE[type(op)], current, value)
                else:
                    raise FilterError(f"unsupported comparison {type(op).__name__}")
                if not ok:
                    return False
                current = value
            return True

        for op, _ in steps:
            if not isinstance(op, (ast.In, ast.NotIn, *_COMPARE)):
                raise FilterError(f"unsupported comparison {type(op).__name__}")
        return compare
    if isinstance(node, ast.Name):
        if fields is not None and node.id not in fields:
            raise FilterError(f"unknown field {node.id!r}")
        name = node.id
        return lambda row: row.get(name)
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda row: value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_compile(e, fields) for e in node.elts]
        return lambda row: [i(row) for i in items]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = _FUNCTIONS.get(node.func.id)
        if function is None:
            raise FilterError(f"unknown function {node.func.id!r}; use {sorted(_FUNCTIONS)}")
        if len(node.args) != _ARITY[node.func.id]:
            raise FilterError(
                f"{node.func.id}() takes {_ARITY[node.func.id]} argument(s), not {len(node.args)}"
            )
        args = [_compile(a, fields) for a in node.args]
        return lambda row: function(*[a(row) for a in args])
    raise FilterError(f"unsupported syntax: {ast.dump(node)[:80]}")


def compile_where(text: str, fields: Iterable[str] | None = None) -> Callable[[dict], bool]:
    """A predicate over row dicts; FilterError for syntax or fields it does not accept."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FilterError(f"not a valid filter: {err.msg} in {text!r}") from None
    predicate = _compile(tree, set(fields) if fields is not None else None)
    return lambda row: bool(predicate(row))
