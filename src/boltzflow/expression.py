"""Safe parser and torch evaluator for OpenMM (Lepton) custom-expression strings.

Energy functions of the 2D toy systems come from user config as strings in the
syntax OpenMM's custom forces use (Lepton), e.g.
``"0.1*(a1+a2); a1 = -200*exp(-(x-1)^2 - 10*y^2); a2 = ..."``.  The same text
is handed unchanged to OpenMM for molecular dynamics and evaluated here, on
torch tensors, for the generative model.  It is never passed to ``eval`` or
``exec``: a whitelist tokenizer and recursive-descent parser build a small AST
of frozen dataclasses, and an evaluator maps that AST onto torch operations.

Grammar (every rule below was checked against OpenMM 8.6's Lepton parser by
evaluating energies and forces of a ``CustomExternalForce``)::

    input      := expr ( ";" [ definition ] )*     empty segments after the
                                                   main expression are allowed
    definition := NAME "=" expr
    expr       := term ( ("+" | "-") term )*       left-associative
    term       := unary ( ("*" | "/") unary )*     left-associative
    unary      := "-" unary | power                no unary "+" (Lepton rejects it)
    power      := primary [ "^" unary ]            right-associative; the
                                                   exponent may start with "-"
    primary    := NUMBER | NAME | FUNC "(" expr ( "," expr )* ")" | "(" expr ")"
    NUMBER     := ( DIGITS [ "." [DIGITS] ] | "." DIGITS ) [ ("e"|"E") ["+"|"-"] DIGITS ]
    NAME       := [A-Za-z_][A-Za-z0-9_]*           case-sensitive
    FUNC       := a whitelisted function name, followed *directly* by "(";
                  Lepton rejects "exp (x)", so this parser does too.

Precedence and associativity, as verified against OpenMM:

* ``^`` binds tighter than unary minus, on both sides of it:
  ``-x^2 == -(x^2)``, ``-2^2 == -4``, ``2^-1^2 == 2^(-(1^2)) == 0.5``,
  ``x^-y*2 == (x^(-y))*2``.
* ``^`` is right-associative: ``2^3^2 == 2^9 == 512``.
* ``*`` / ``/`` and ``+`` / ``-`` are left-associative:
  ``x/y/2 == (x/y)/2``, ``x-y-1 == (x-y)-1``.
* Unary minus may follow a binary operator and repeat: ``2*-x``, ``x--y``,
  ``---x`` are all accepted.

Intermediate definitions (Lepton's rule, verified): the main expression comes
first; each ``name = expr`` after a ``;`` may use the variables and the
definitions that come *after* it in the string, never one before it nor
itself (OpenMM answers "Unknown variable" there).  That ordering makes cycles
impossible in valid input; this parser reports them explicitly.  Unused
definitions are allowed (as in OpenMM) but still fully checked.

This parser is deliberately *stricter* than Lepton wherever Lepton silently
accepts nonsense: Lepton reads ``1e`` and ``.e2`` as 0 and ``1e2.5`` as 100,
accepts a definition named ``1``, lets a definition shadow a variable
(``y; y = 1``) or a function name (``exp; exp = 1``), keeps the first of two
definitions of one name, ignores unknown names inside unused definitions, and
treats ``x.y`` as a variable name.  All of these are errors here.

Functions (names, arities and semantics match Lepton; each is tested against
OpenMM): sqrt, exp, log, sin, cos, sec, csc, tan, cot, asin, acos, atan,
sinh, cosh, tanh, erf, erfc, abs, floor, ceil, square, cube, recip (1
argument); step(x) = 1 if x >= 0 else 0 (step(0) == 1), delta(x) = 1 if
x == 0 else 0; atan2(a, b), min(a, b), max(a, b) (2 arguments);
select(c, a, b) = a if c != 0 else b (3 arguments).

Error messages are a single line naming the offending token and its 1-based
character position; they never mention config keys (callers prefix those).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Expression", "ExpressionError", "parse_expression", "FUNCTIONS"]


class ExpressionError(ValueError):
    """An expression string (or its evaluation inputs) is invalid; the message is one line."""


# --------------------------------------------------------------------------- functions
# torch is imported only when an expression is evaluated: the Snakefile parses every energy
# expression to validate the config, in a Snakemake process that may have no torch installed.

#: Whitelisted function names mapped to their number of arguments.
FUNCTIONS: dict[str, int] = dict(sorted({
    "sqrt": 1, "exp": 1, "log": 1, "sin": 1, "cos": 1, "sec": 1, "csc": 1, "tan": 1, "cot": 1,
    "asin": 1, "acos": 1, "atan": 1, "atan2": 2, "sinh": 1, "cosh": 1, "tanh": 1, "erf": 1,
    "erfc": 1, "abs": 1, "floor": 1, "ceil": 1, "square": 1, "cube": 1, "recip": 1, "step": 1,
    "delta": 1, "min": 2, "max": 2, "select": 3,
}.items()))


@functools.cache
def _torch_functions() -> dict[str, Callable]:
    """name -> torch implementation.

    step/delta/select use torch.where with constants of the argument's dtype so results keep the
    input dtype; their derivative is 0 almost everywhere, as in Lepton.
    """
    import torch

    table = {
        "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "sin": torch.sin, "cos": torch.cos,
        "sec": lambda a: 1 / torch.cos(a), "csc": lambda a: 1 / torch.sin(a), "tan": torch.tan,
        "cot": lambda a: 1 / torch.tan(a), "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
        "atan2": torch.atan2, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh,
        "erf": torch.erf, "erfc": torch.erfc, "abs": torch.abs, "floor": torch.floor, "ceil": torch.ceil,
        "square": lambda a: a * a, "cube": lambda a: a * a * a, "recip": lambda a: 1 / a,
        "step": lambda a: torch.where(a >= 0, a.new_ones(()), a.new_zeros(())),
        "delta": lambda a: torch.where(a == 0, a.new_ones(()), a.new_zeros(())),
        "min": torch.minimum, "max": torch.maximum,
        "select": lambda c, a, b: torch.where(c != 0, a, b),
    }
    assert table.keys() == FUNCTIONS.keys()
    return table



_ALLOWED_FUNCTIONS = ", ".join(FUNCTIONS)

# Limits that keep parsing and evaluation (both recursive) far from Python's
# recursion limit while allowing any realistic potential: at most
# _MAX_NESTING nested parentheses / unary minuses / exponents (the parser uses
# up to ~5 stack frames per level), and ASTs at most _MAX_DEPTH deep (the
# evaluator uses 1-2 frames per level; a chain "a+b+c+..." of n terms is n deep).
_MAX_NESTING = 100
_MAX_DEPTH = 200

# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class _Num:
    value: float
    pos: int


@dataclass(frozen=True)
class _Name:
    """A variable or a definition; the two never share a name, so one node type suffices."""

    name: str
    pos: int


@dataclass(frozen=True)
class _Neg:
    operand: _Node
    pos: int


@dataclass(frozen=True)
class _BinOp:
    op: str  # one of + - * / ^
    left: _Node
    right: _Node
    pos: int


@dataclass(frozen=True)
class _Call:
    func: str
    args: tuple[_Node, ...]
    pos: int


_Node = _Num | _Name | _Neg | _BinOp | _Call


@dataclass(frozen=True)
class _Definition:
    name: str
    body: _Node
    pos: int  # position of the name


@dataclass(frozen=True)
class _Program:
    main: _Node
    definitions: tuple[_Definition, ...]
    # definitions the main expression depends on, in an order where every
    # definition comes after those it uses (i.e. reverse string order)
    evaluation_order: tuple[_Definition, ...]
    used_variables: frozenset[str]


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "name", "call" (a name directly followed by "("), an operator/punctuation char, or "end"
    text: str
    pos: int  # 0-based index into the source
    value: float = 0.0


_WHITESPACE = " \t\r\n"
_PUNCTUATION = "+-*/^(),;="
# ASCII only: str.isdigit()/isalpha() and \d would also accept e.g. "²" or "é".
_DIGITS = "0123456789"
_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _at(pos: int) -> str:
    return f"at character {pos + 1}"


def _describe(tok: _Token) -> str:
    return "end of expression" if tok.kind == "end" else repr(tok.text)


class _Tokenizer:
    """Produces tokens on demand, so errors are reported in left-to-right order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def next(self) -> _Token:
        text, n = self.text, len(self.text)
        while self.i < n and text[self.i] in _WHITESPACE:
            self.i += 1
        start = self.i
        if start == n:
            return _Token("end", "", start)
        ch = text[start]
        if ch in _DIGITS or (ch == "." and start + 1 < n and text[start + 1] in _DIGITS):
            # Maximal munch over number-ish characters (as Lepton does), then
            # validate the whole run, so "1e", "1e2.5" and "1..2" are reported
            # as malformed numbers instead of being silently split.
            j = start
            while j < n:
                c = text[j]
                if c in _DIGITS or c == ".":
                    j += 1
                elif c in "eE":
                    j += 1
                    if j < n and text[j] in "+-":
                        j += 1
                else:
                    break
            number = text[start:j]
            if not _NUMBER_RE.fullmatch(number):
                raise ExpressionError(f"number {number!r} {_at(start)} is malformed")
            value = float(number)
            if not math.isfinite(value):
                raise ExpressionError(f"number {number!r} {_at(start)} is too large")
            self.i = j
            return _Token("num", number, start, value)
        match = _NAME_RE.match(text, start)
        if match:
            self.i = match.end()
            name = match.group()
            if self.i < n and text[self.i] == "(":
                self.i += 1  # the "(" belongs to the call token
                return _Token("call", name, start)
            return _Token("name", name, start)
        if ch in _PUNCTUATION:
            self.i += 1
            return _Token(ch, ch, start)
        raise ExpressionError(f"unexpected character {ch!r} {_at(start)}")


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, variables: tuple[str, ...]) -> None:
        self.text = text
        self.variables = variables
        self.tokens = _Tokenizer(text)
        self.tok = self.tokens.next()
        self.prev: _Token | None = None
        self.open_parens: list[int] = []  # positions of "(" not yet closed
        self.nesting = 0  # active parse_unary calls, bounding the recursion

    def advance(self) -> _Token:
        # Callers check the current token before advancing, because reading the
        # next token may itself raise and would hide the earlier problem.
        self.prev, self.tok = self.tok, self.tokens.next()
        return self.prev

    # input := expr ( ";" [definition] )*
    def parse_input(self) -> tuple[_Node, list[_Definition]]:
        if self.tok.kind == "end":
            raise ExpressionError("empty expression")
        if self.tok.kind == ";":
            raise ExpressionError(f"empty expression before ';' {_at(self.tok.pos)}")
        main = self.parse_segment_expr()
        definitions: list[_Definition] = []
        while self.tok.kind == ";":
            self.advance()
            if self.tok.kind in (";", "end"):
                continue  # Lepton ignores empty segments such as a trailing ";"
            definitions.append(self.parse_definition())
        return main, definitions

    # definition := NAME "=" expr
    def parse_definition(self) -> _Definition:
        name_tok = self.tok
        if name_tok.kind == "call":
            raise ExpressionError(
                f"expected a definition 'name = ...' {_at(name_tok.pos)}, got {name_tok.text + '('!r}"
            )
        if name_tok.kind != "name":
            raise ExpressionError(
                f"expected a definition name {_at(name_tok.pos)}, got {_describe(name_tok)}"
            )
        name = name_tok.text
        if name in FUNCTIONS:
            raise ExpressionError(
                f"definition name {name!r} {_at(name_tok.pos)} is a function name"
            )
        if name in self.variables:
            raise ExpressionError(
                f"definition name {name!r} {_at(name_tok.pos)} is one of the variables "
                f"({', '.join(self.variables)})"
            )
        self.advance()
        if self.tok.kind != "=":
            raise ExpressionError(
                f"expected '=' after definition name {name!r} {_at(self.tok.pos)}, "
                f"got {_describe(self.tok)}"
            )
        eq = self.advance()
        if self.tok.kind in (";", "end"):
            raise ExpressionError(f"empty definition of {name!r} after '=' {_at(eq.pos)}")
        return _Definition(name, self.parse_segment_expr(), name_tok.pos)

    def parse_segment_expr(self) -> _Node:
        """An expression that must be followed by ';' or the end of the input."""
        node = self.parse_expr()
        if self.tok.kind not in (";", "end"):
            if self.tok.kind == ")":
                raise ExpressionError(
                    f"unbalanced parentheses: ')' {_at(self.tok.pos)} has no matching '('"
                )
            raise ExpressionError(f"unexpected {_describe(self.tok)} {_at(self.tok.pos)}")
        return node

    # expr := term (("+"|"-") term)*
    def parse_expr(self) -> _Node:
        node = self.parse_term()
        while self.tok.kind in ("+", "-"):
            op = self.advance()
            node = _BinOp(op.kind, node, self.parse_term(), op.pos)
        return node

    # term := unary (("*"|"/") unary)*
    def parse_term(self) -> _Node:
        node = self.parse_unary()
        while self.tok.kind in ("*", "/"):
            op = self.advance()
            node = _BinOp(op.kind, node, self.parse_unary(), op.pos)
        return node

    # unary := "-" unary | power
    def parse_unary(self) -> _Node:
        # Every recursive path (parentheses, call arguments, "-", "^") passes
        # through here, so counting here bounds the parser's stack use.
        if self.nesting >= _MAX_NESTING:
            raise ExpressionError(
                f"expression is nested too deeply {_at(self.tok.pos)} "
                f"(more than {_MAX_NESTING} levels)"
            )
        self.nesting += 1
        try:
            if self.tok.kind == "-":
                op = self.advance()
                return _Neg(self.parse_unary(), op.pos)
            return self.parse_power()
        finally:
            self.nesting -= 1

    # power := primary ["^" unary]  -- right-associative through unary -> power
    def parse_power(self) -> _Node:
        base = self.parse_primary()
        if self.tok.kind == "^":
            op = self.advance()
            return _BinOp("^", base, self.parse_unary(), op.pos)
        return base

    def parse_primary(self) -> _Node:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return _Num(tok.value, tok.pos)
        if tok.kind == "name":
            if tok.text in FUNCTIONS:
                raise ExpressionError(
                    f"function {tok.text!r} {_at(tok.pos)} must be followed directly by '('"
                )
            self.advance()
            return _Name(tok.text, tok.pos)
        if tok.kind == "call":
            return self.parse_call()
        if tok.kind == "(":
            self.advance()
            self.open_parens.append(tok.pos)
            node = self.parse_expr()
            self.expect_close()
            return node
        if tok.kind == "end" or tok.kind == ";":
            if self.open_parens:
                self.unclosed()
            after = f" after {self.prev.text!r} {_at(self.prev.pos)}" if self.prev else ""
            if tok.kind == ";":
                raise ExpressionError(f"missing operand{after} (before ';' {_at(tok.pos)})")
            raise ExpressionError(f"expression ends unexpectedly{after}")
        if tok.kind == "+":
            raise ExpressionError(
                f"unexpected '+' {_at(tok.pos)} (unary plus is not allowed in OpenMM expressions)"
            )
        if tok.kind == "*" and self.text[tok.pos - 1 : tok.pos] == "*":
            raise ExpressionError(
                f"unexpected '*' {_at(tok.pos)} ('**' is not OpenMM syntax; use '^' for powers)"
            )
        raise ExpressionError(
            f"unexpected {_describe(tok)} {_at(tok.pos)} "
            "(expected a number, variable, function call or '(')"
        )

    def parse_call(self) -> _Call:
        tok = self.tok
        name = tok.text
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function {name!r} {_at(tok.pos)} (allowed: {_ALLOWED_FUNCTIONS})"
            )
        self.advance()
        paren_pos = tok.pos + len(name)
        self.open_parens.append(paren_pos)
        args: list[_Node] = []
        if self.tok.kind != ")":
            args.append(self.parse_expr())
            while self.tok.kind == ",":
                self.advance()
                args.append(self.parse_expr())
        self.expect_close()
        arity = FUNCTIONS[name]
        if len(args) != arity:
            plural = "argument" if arity == 1 else "arguments"
            raise ExpressionError(
                f"function {name!r} takes {arity} {plural}, got {len(args)} (call {_at(tok.pos)})"
            )
        return _Call(name, tuple(args), tok.pos)

    def expect_close(self) -> None:
        if self.tok.kind == ")":
            self.advance()
            self.open_parens.pop()
            return
        if self.tok.kind in ("end", ";"):
            self.unclosed()
        raise ExpressionError(f"unexpected {_describe(self.tok)} {_at(self.tok.pos)}")

    def unclosed(self) -> None:
        raise ExpressionError(
            f"unbalanced parentheses: '(' {_at(self.open_parens[-1])} is never closed"
        )


# --------------------------------------------------------------------------- checks


def _walk(node: _Node):
    """All nodes of a tree (iteratively, so deep trees cannot overflow the stack)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, _Neg):
            stack.append(n.operand)
        elif isinstance(n, _BinOp):
            stack.extend((n.right, n.left))
        elif isinstance(n, _Call):
            stack.extend(reversed(n.args))


def _names(node: _Node) -> list[_Name]:
    return sorted((n for n in _walk(node) if isinstance(n, _Name)), key=lambda n: n.pos)


def _depth(node: _Node) -> int:
    best = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        if isinstance(n, _Neg):
            stack.append((n.operand, d + 1))
        elif isinstance(n, _BinOp):
            stack.extend(((n.left, d + 1), (n.right, d + 1)))
        elif isinstance(n, _Call):
            stack.extend((a, d + 1) for a in n.args)
    return best


def _find_cycle(defs: dict[str, _Definition]) -> list[str] | None:
    """A cycle among definitions as [a, b, ..., a], ignoring Lepton's ordering rule."""
    deps = {name: [n.name for n in _names(d.body) if n.name in defs] for name, d in defs.items()}
    state: dict[str, int] = {}  # 1 = on the DFS path, 2 = done
    for root in defs:
        if root in state:
            continue
        path = [root]
        iters = [iter(deps[root])]
        state[root] = 1
        while iters:
            child = next(iters[-1], None)
            if child is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                iters.append(iter(deps[child]))
    return None


def _build_program(text: str, variables: tuple[str, ...]) -> _Program:
    parser = _Parser(text, variables)
    try:
        main, definitions = parser.parse_input()
    except RecursionError:
        raise ExpressionError("expression is nested too deeply") from None

    index: dict[str, int] = {}
    for i, d in enumerate(definitions):
        if d.name in index:
            first = definitions[index[d.name]].pos
            raise ExpressionError(
                f"definition {d.name!r} {_at(d.pos)} repeats the one {_at(first)}"
            )
        index[d.name] = i
    by_name = {d.name: d for d in definitions}

    for node in [main] + [d.body for d in definitions]:
        if _depth(node) > _MAX_DEPTH:
            raise ExpressionError(
                f"expression is too deeply nested (its syntax tree has more than {_MAX_DEPTH} levels)"
            )

    # Unknown names, in reading order.
    allowed = f"allowed: {', '.join(variables)}"
    if definitions:
        allowed += f"; defined: {', '.join(d.name for d in definitions)}"
    for node in [main] + [d.body for d in definitions]:
        for n in _names(node):
            if n.name not in variables and n.name not in by_name:
                raise ExpressionError(f"unknown variable {n.name!r} {_at(n.pos)} ({allowed})")

    cycle = _find_cycle(by_name)
    if cycle is not None:
        first_use = next(n for n in _names(by_name[cycle[0]].body) if n.name == cycle[1])
        if len(cycle) == 2:
            raise ExpressionError(
                f"definition {cycle[0]!r} refers to itself {_at(first_use.pos)} (cycle)"
            )
        raise ExpressionError(
            f"cyclic definitions {' -> '.join(cycle)} (first use {_at(first_use.pos)})"
        )

    # Lepton's ordering rule: a definition may only use definitions given after it.
    for i, d in enumerate(definitions):
        for n in _names(d.body):
            if n.name in by_name and index[n.name] < i:
                raise ExpressionError(
                    f"definition {d.name!r} uses {n.name!r} {_at(n.pos)}, which is defined "
                    "before it; OpenMM only allows using definitions that come later"
                )

    # Definitions reachable from the main expression, evaluated last-to-first so
    # that each one's dependencies (which come later in the string) are ready.
    needed: set[str] = set()
    used_variables: set[str] = set()
    stack = [main]
    while stack:
        for n in _names(stack.pop()):
            if n.name in by_name:
                if n.name not in needed:
                    needed.add(n.name)
                    stack.append(by_name[n.name].body)
            else:
                used_variables.add(n.name)
    order = tuple(d for d in reversed(definitions) if d.name in needed)
    return _Program(main, tuple(definitions), order, frozenset(used_variables))


# --------------------------------------------------------------------------- evaluation


def _evaluate(node: _Node, env: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if isinstance(node, _Name):
        return env[node.name]
    if isinstance(node, _Num):
        return like.new_tensor(node.value)
    if isinstance(node, _Neg):
        return -_evaluate(node.operand, env, like)
    if isinstance(node, _BinOp):
        a = _evaluate(node.left, env, like)
        b = _evaluate(node.right, env, like)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        # "^": torch.pow gives real results for negative bases with
        # integer-valued exponents, like C's pow() in Lepton.  A constant
        # exponent is a tensor that does not require grad, so autograd never
        # forms the log(base) term of d/d(exponent), which would be NaN for
        # base <= 0; d/d(base) of x^2 at x=0 is 0 and of x^0 is 0.
        return a.pow(b)
    if isinstance(node, _Call):
        impl = _torch_functions()[node.func]
        return impl(*(_evaluate(arg, env, like) for arg in node.args))
    raise TypeError(f"unknown node {node!r}")  # pragma: no cover


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Expression:
    """A parsed, validated OpenMM custom expression that can be evaluated with torch.

    ``source`` is kept verbatim and is what should be handed to OpenMM.
    Constructing an ``Expression`` parses ``source`` (raising
    :class:`ExpressionError` on invalid input); :func:`parse_expression` is the
    usual entry point.  Equality and hashing use ``source`` and ``variables``.
    """

    source: str
    variables: tuple[str, ...] = ("x", "y")
    _program: _Program = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ExpressionError(f"expression must be a string, got {type(self.source).__name__}")
        variables = tuple(self.variables)
        for v in variables:
            if not isinstance(v, str) or not _NAME_RE.fullmatch(v):
                raise ExpressionError(f"variable name {v!r} is not an identifier")
            if v in FUNCTIONS:
                raise ExpressionError(f"variable name {v!r} is a function name")
        if len(set(variables)) != len(variables):
            raise ExpressionError(f"variable names {variables!r} contain duplicates")
        object.__setattr__(self, "variables", variables)
        object.__setattr__(self, "_program", _build_program(self.source, variables))

    def __call__(self, **values: torch.Tensor) -> torch.Tensor:
        """Evaluate on tensors.

        Every allowed variable must be passed by name (missing or extra names
        raise :class:`ExpressionError`).  Inputs broadcast against each other;
        the result has their broadcast shape and (promoted) floating dtype,
        even if the expression does not use every variable.  Integer inputs,
        Python floats and numpy arrays are converted to tensors first.  The
        result is differentiable by autograd; numbers in the expression become
        tensors of the input dtype and device.  An expression that depends on
        none of the inputs (e.g. ``"3"``) returns a tensor without an autograd
        graph; use ``allow_unused=True`` with ``torch.autograd.grad`` for
        expressions that ignore some variables (see :meth:`used_variables`).
        """
        import torch

        missing = [v for v in self.variables if v not in values]
        extra = sorted(k for k in values if k not in self.variables)
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing value for " + ", ".join(repr(v) for v in missing))
            if extra:
                parts.append("unexpected " + ", ".join(repr(v) for v in extra))
            raise ExpressionError(
                f"{'; '.join(parts)} (expected exactly: {', '.join(self.variables)})"
            )
        tensors: dict[str, torch.Tensor] = {}
        for name in self.variables:
            t = torch.as_tensor(values[name])
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
            tensors[name] = t
        if tensors:
            dtype = tensors[self.variables[0]].dtype
            for t in tensors.values():
                dtype = torch.promote_types(dtype, t.dtype)
            like = tensors[self.variables[0]].new_empty((), dtype=dtype)
            shape = torch.broadcast_shapes(*(t.shape for t in tensors.values()))
        else:
            like = torch.empty((), dtype=torch.get_default_dtype())
            shape = torch.Size()

        program = self._program
        env = dict(tensors)
        for d in program.evaluation_order:
            env[d.name] = _evaluate(d.body, env, like)
        result = _evaluate(program.main, env, like)
        if result.dtype != like.dtype:
            # e.g. float32 x with float64 y in an expression that only uses x
            result = result.to(like.dtype)
        if result.shape != shape:
            # e.g. "0.5*x^2" with a y of larger shape, or a constant expression
            result = torch.broadcast_to(result, shape).clone()
        return result

    def used_variables(self) -> frozenset[str]:
        """The allowed variables the main expression depends on, directly or through definitions.

        Variables that appear only in unused definitions are not included.
        """
        return self._program.used_variables


def parse_expression(text: str, variables: tuple[str, ...] = ("x", "y")) -> Expression:
    """Parse and validate an OpenMM custom-expression string over ``variables``.

    Raises :class:`ExpressionError` with a one-line message naming the
    offending token and its 1-based character position.
    """
    return Expression(text, tuple(variables))
