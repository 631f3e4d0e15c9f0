"""`--where` filters over dataset rows: a small, safe expression language. Pure, Beam-free.

Python expression syntax, evaluated by walking its syntax tree (never `eval`):

    article_license_group == 'commercial' and article_journal == 'PLoS ONE'
    article_year >= 2020 and 'Neoplasms' in article_mesh_terms
    'CD8' in caption or contains(lower(article_title), 'immun')
    'Microscopy' in image_primary_label and image_panel_type == 'multiple'
    any_of(image_primary_label, ['Microscopy', 'Radiology']) and not article_retracted

Names are row fields; `in` tests membership in a list field or a substring of a text field;
functions: lower, upper, len, contains(field, value), startswith(field, prefix), any_of(list
field, [values]). Unknown fields and any other syntax are refused when the filter is compiled.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

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
    raise FilterError(
        f"unsupported syntax {_source(node)!r}; use comparisons (== != < <= > >=), in, not in, "
        f"and, or, not, and the functions {', '.join(sorted(_FUNCTIONS))}"
    )


def _source(node) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- types: a comparison that can never hold is refused before the job starts ---------------

_NAMES = {"int": "a number", "str": "text", "bool": "true/false", "none": "None"}


def _what(kind: str) -> str:
    if kind.startswith("list["):
        inner = kind[5:-1]
        return "a list of " + {"int": "numbers", "str": "text", "bool": "true/false"}.get(
            inner, "values"
        )
    return _NAMES.get(kind, kind)


def _kind_of_type(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return "list[" + _kind_of_type(arrow_type.value_type) + "]"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "int"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    return "?"


def _kind(node, kinds: dict[str, str]) -> str:
    """The type an expression has ("?" when it cannot be told, "none" for None)."""
    if isinstance(node, ast.Name):
        return kinds.get(node.id, "?")
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "bool"
        return {int: "int", float: "int", str: "str"}.get(type(value), "?")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name == "len":
            return "int"
        if name in ("lower", "upper") and node.args:
            return _kind(node.args[0], kinds)
        return "bool" if name in _FUNCTIONS else "?"
    if isinstance(node, (ast.BoolOp, ast.Compare)) or (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    ):
        return "bool"
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        inner = {_kind(e, kinds) for e in node.elts} - {"none"}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list[?]"
    return "?"


def _as(node, kind: str) -> str:
    """A constant (or a literal list of them) rewritten as `kind`, or "" if it does not fit."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_as(e, kind) for e in node.elts]
        return "(" + ", ".join(items) + ")" if all(items) else ""
    if not isinstance(node, ast.Constant):
        return ""
    value = node.value
    if kind == "int" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return str(int(value))
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(str(value))
    return ""


def _check_pair(left, op, right, kinds: dict[str, str]) -> None:
    lk, rk = _kind(left, kinds), _kind(right, kinds)
    if "?" in (lk, rk):
        return
    a, b = _source(left), _source(right)
    never = "so the filter can never match"
    if isinstance(op, (ast.In, ast.NotIn)):
        if rk == "none" or (rk == "str" and lk in ("str", "none")):
            return
        if rk == "str" or not rk.startswith("list["):
            raise FilterError(
                f"{b} is {_what(rk)}: `in` needs a list field or text on its right"
                + (f" and text on its left, not {_what(lk)}" if rk == "str" else "")
            )
        element = rk[5:-1]
        if element == "?" or lk in (element, "none"):
            return
        if lk.startswith("list[") and isinstance(left, ast.Name):
            raise FilterError(
                f"{a} is {_what(lk)}, never an item of {b} ({never}); "
                f"to match any of several values write any_of({a}, [...])"
            )
        fixed = _as(left, element) if isinstance(right, ast.Name) else _as(right, lk)
        fix = ""
        if fixed:
            fix = (
                f"; write {fixed} in {b}"
                if isinstance(right, ast.Name)
                else f"; write {a} in {fixed}"
            )
        raise FilterError(f"{a} is {_what(lk)} and {b} is {_what(rk)}, {never}{fix}")
    if "none" in (lk, rk):
        if not isinstance(op, (ast.Eq, ast.NotEq)):
            raise FilterError(f"{a} ... {b}: None compares only with == or !=")
        return
    if lk != rk:
        field, other = (right, left) if isinstance(left, ast.Constant) else (left, right)
        fk, ok = _kind(field, kinds), _kind(other, kinds)
        fixed = _as(other, fk)
        fix = f"; compare it with {fixed}" if fixed else ""
        if fk == "bool" and isinstance(field, ast.Name):
            fix = f"; write {field.id} or not {field.id}"
        raise FilterError(
            f"{_source(field)} is {_what(fk)} but {_source(other)} is {_what(ok)}, {never}{fix}"
        )
    if lk.startswith("list[") and not isinstance(op, (ast.Eq, ast.NotEq)):
        raise FilterError(f"{a} is {_what(lk)}: lists compare only with == or != (or use in)")


def _check_types(tree, kinds: dict[str, str]) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                _check_pair(operands[i], op, operands[i + 1], kinds)


def where_fields(text: str) -> list[str]:
    """The row fields a filter reads, sorted: what a reader must load to evaluate it.

    Function names (`lower`, `any_of`, ...) are not fields. FilterError if it does not parse.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FilterError(f"not a valid filter: {err.msg} in {text!r}") from None
    called = {
        id(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called})


def compile_where(text: str, fields=None) -> Callable[[dict], bool]:
    """A predicate over row dicts; FilterError for syntax or fields it does not accept.

    `fields`: the field names, or a pyarrow schema: then comparisons are also checked
    against the fields' types (`article_year >= '2020'` would match nothing).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FilterError(f"not a valid filter: {err.msg} in {text!r}") from None
    kinds = None
    if fields is not None and hasattr(fields, "field") and hasattr(fields, "names"):
        kinds = {f.name: _kind_of_type(f.type) for f in fields}
        fields = fields.names
    predicate = _compile(tree, set(fields) if fields is not None else None)
    if kinds is not None:
        _check_types(tree, kinds)
    return lambda row: bool(predicate(row))
