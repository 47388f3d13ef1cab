"""Tests for boltzflow.expression against independent truths.

The main truth is OpenMM itself: each expression is put into a
CustomExternalForce on one particle at (x, y, 0) and evaluated on the
Reference platform (double precision), giving the energy (kJ/mol) and the
force (kJ/mol/nm), which must equal the torch value and minus its autograd
gradient.  Precedence cases are also checked against hand-parenthesised
Python formulas.
"""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from boltzflow.expression import FUNCTIONS, Expression, ExpressionError, parse_expression

RTOL = 1e-6
ATOL = 1e-9


# --------------------------------------------------------------------------- helpers


def _context(expr: str) -> openmm.Context:
    force = openmm.CustomExternalForce(expr)
    force.addParticle(0, [])
    system = openmm.System()
    system.addParticle(1.0)
    system.addForce(force)
    platform = openmm.Platform.getPlatformByName("Reference")
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform)


def openmm_energy_forces(expr: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies (N,) and in-plane forces (N, 2) from OpenMM at points (N, 2)."""
    context = _context(expr)
    energies, forces = [], []
    for x, y in points:
        context.setPositions([openmm.Vec3(float(x), float(y), 0.0)])
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        forces.append(f[0, :2])
    return np.array(energies), np.array(forces)


def torch_energy_forces(expr: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies and forces (-gradient by autograd) from the parsed expression, in float64."""
    x = torch.tensor(points[:, 0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor(points[:, 1], dtype=torch.float64, requires_grad=True)
    energy = parse_expression(expr)(x=x, y=y)
    assert energy.shape == x.shape and energy.dtype == torch.float64
    if not energy.requires_grad:  # a constant expression: no graph, zero force
        return energy.numpy(), np.zeros_like(points)
    grads = torch.autograd.grad(energy.sum(), (x, y), allow_unused=True)
    forces = [-g if g is not None else torch.zeros_like(x) for g in grads]
    return energy.detach().numpy(), torch.stack(forces, dim=1).numpy()


def assert_matches_openmm(expr: str, points: np.ndarray) -> None:
    e_ref, f_ref = openmm_energy_forces(expr, points)
    assert np.all(np.isfinite(e_ref)) and np.all(np.isfinite(f_ref)), "bad test domain"
    e, f = torch_energy_forces(expr, points)
    np.testing.assert_allclose(e, e_ref, rtol=RTOL, atol=ATOL, err_msg=f"energy of {expr!r}")
    np.testing.assert_allclose(f, f_ref, rtol=RTOL, atol=ATOL, err_msg=f"forces of {expr!r}")


def random_points(n: int, low: tuple[float, float], high: tuple[float, float], seed: int = 0):
    return np.random.default_rng(seed).uniform(low, high, size=(n, 2))


# --------------------------------------------------------------------------- potentials

_MB = dict(
    A=(-200, -100, -170, 15),
    a=(-1, -1, -6.5, 0.7),
    b=(0, 0, 11, 0.6),
    c=(-10, -10, -6.5, 0.7),
    x0=(1, 0, -0.5, -1),
    y0=(0, 0.5, 1.5, 1),
)
MUELLER_BROWN = "0.1*(a1+a2+a3+a4); " + "; ".join(
    f"a{i + 1} = {_MB['A'][i]}*exp({_MB['a'][i]}*(x-{_MB['x0'][i]})^2"
    f" + {_MB['b'][i]}*(x-{_MB['x0'][i]})*(y-{_MB['y0'][i]})"
    f" + {_MB['c'][i]}*(y-{_MB['y0'][i]})^2)"
    for i in range(4)
)


def mueller_brown_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    total = 0.0
    for A, a, b, c, x0, y0 in zip(*_MB.values()):
        dx, dy = x - x0, y - y0
        total = total + A * np.exp(a * dx**2 + b * dx * dy + c * dy**2)
    return 0.1 * total


def test_mueller_brown_matches_openmm_and_numpy():
    points = random_points(50, (-1.5, -0.5), (1.2, 2.0))
    assert_matches_openmm(MUELLER_BROWN, points)
    e, _ = torch_energy_forces(MUELLER_BROWN, points)
    np.testing.assert_allclose(e, mueller_brown_numpy(points[:, 0], points[:, 1]), rtol=1e-12)
    # the known global minimum of the (unscaled) potential is about -146.7 near (-0.558, 1.442)
    assert parse_expression(MUELLER_BROWN)(
        x=torch.tensor(-0.558), y=torch.tensor(1.442)
    ).item() == pytest.approx(-14.67, abs=0.01)


def test_double_well_matches_openmm():
    assert_matches_openmm("(x^2-1)^2 + 0.5*y^2", random_points(50, (-2, -2), (2, 2), seed=1))


# --------------------------------------------------------------------------- precedence

# (expression, the same thing fully parenthesised in Python); positive x so
# that real powers are defined, |y| >= 0.3 so that divisions are harmless.
PRECEDENCE_CASES = [
    ("-x^2", lambda x, y: -(x**2)),
    ("-2^2", lambda x, y: -4.0 + 0 * x),
    ("2^3^2", lambda x, y: 512.0 + 0 * x),
    ("2^-1^2", lambda x, y: 0.5 + 0 * x),
    ("2^3^-1", lambda x, y: 2.0 ** (1 / 3) + 0 * x),
    ("x^y^2", lambda x, y: x ** (y**2)),
    ("x^-y*2", lambda x, y: (x ** (-y)) * 2),
    ("x^-y+1", lambda x, y: (x ** (-y)) + 1),
    ("x^-y^2", lambda x, y: x ** (-(y**2))),
    ("x^2^-1", lambda x, y: x ** (2 ** (-1))),
    ("x-y-1", lambda x, y: (x - y) - 1),
    ("x-y+1", lambda x, y: (x - y) + 1),
    ("x/y/2", lambda x, y: (x / y) / 2),
    ("x/y*2", lambda x, y: (x / y) * 2),
    ("x+y*2", lambda x, y: x + (y * 2)),
    ("x*-y^2", lambda x, y: x * (-(y**2))),
    ("2*-x+1", lambda x, y: (2 * (-x)) + 1),
    ("-x+y", lambda x, y: (-x) + y),
    ("-x-y", lambda x, y: (-x) - y),
    ("-x/2-y", lambda x, y: ((-x) / 2) - y),
    ("x--y", lambda x, y: x - (-y)),
    ("x---y", lambda x, y: x - (-(-y))),
    ("---x", lambda x, y: -x),
    ("-exp(x)^2", lambda x, y: -(np.exp(x) ** 2)),
    ("(x+y)^2", lambda x, y: (x + y) ** 2),
    ("1e-3*x + .5*y + 2.*x + 1.5E+2 + 3", lambda x, y: 1e-3 * x + 0.5 * y + 2.0 * x + 150 + 3),
]


def _precedence_points(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 1.5, n)
    y = rng.uniform(0.3, 1.5, n) * rng.choice([-1, 1], n)
    return np.stack([x, y], axis=1)


@pytest.mark.parametrize("expr,python", PRECEDENCE_CASES, ids=[c[0] for c in PRECEDENCE_CASES])
def test_precedence_matches_openmm_and_python(expr, python):
    points = _precedence_points()
    assert_matches_openmm(expr, points)
    e, _ = torch_energy_forces(expr, points)
    np.testing.assert_allclose(e, python(points[:, 0], points[:, 1]), rtol=1e-12)


# --------------------------------------------------------------------------- functions

# Every whitelisted function, on a domain (x, y in [-0.9, 0.9]) where it is
# finite and smooth almost everywhere.  OpenMM hangs on some NaN results, so
# the domains matter.
FUNCTION_CASES = {
    "sqrt": "sqrt(2+x+y)",
    "exp": "exp(x-y)",
    "log": "log(2+x*y)",
    "sin": "sin(3*x+y)",
    "cos": "cos(x-2*y)",
    "sec": "sec(0.5*(x+y))",
    "csc": "csc(0.5*x+1.5)",
    "tan": "tan(x*y)",
    "cot": "cot(0.5*y+1.5)",
    "asin": "asin(0.9*x*y)",
    "acos": "acos(x*y)",
    "atan": "atan(3*x-y)",
    "atan2": "atan2(x, y)",
    "sinh": "sinh(x+y)",
    "cosh": "cosh(x-y)",
    "tanh": "tanh(2*x*y)",
    "erf": "erf(x+y)",
    "erfc": "erfc(x-y)",
    "abs": "abs(x-y)*y",
    "floor": "floor(3*x)*y",
    "ceil": "ceil(3*y)*x",
    "square": "square(x+y)",
    "cube": "cube(x-y)",
    "recip": "recip(2+x)",
    "step": "step(x-y)*x",
    "delta": "delta(x-y) + delta(floor(2*x))*y",  # floor(2x) == 0 for x in [0, 0.5)
    "min": "min(x, y)^2",
    "max": "max(x, y*y)",
    "select": "select(floor(2*x), x*y, y^3)",  # both branches are taken
}


def test_every_function_has_a_case():
    assert set(FUNCTION_CASES) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTION_CASES))
def test_function_matches_openmm(name):
    assert_matches_openmm(FUNCTION_CASES[name], random_points(12, (-0.9, -0.9), (0.9, 0.9), seed=3))


def test_everything_at_once_matches_openmm():
    """All functions and precedence cases in one expression, through definitions."""
    names = sorted(FUNCTION_CASES)
    terms = [f"f_{n}" for n in names] + [f"p{i}" for i in range(len(PRECEDENCE_CASES))]
    definitions = [f"f_{n} = {FUNCTION_CASES[n]}" for n in names]
    definitions += [f"p{i} = 0.01*({e})" for i, (e, _) in enumerate(PRECEDENCE_CASES)]
    expr = " + ".join(terms) + "; " + "; ".join(definitions)
    points = np.abs(random_points(50, (-0.9, -0.9), (0.9, 0.9), seed=4)) + np.array([0.05, 0.3])
    points[::2, 1] *= -1  # keep |y| >= 0.3 for the precedence cases but use both signs
    assert_matches_openmm(expr, points)


def test_step_select_delta_at_zero_match_openmm():
    origin = np.zeros((1, 2))
    for expr, value in [("step(x)", 1.0), ("step(x-1e-12)", 0.0), ("select(x, 1, 2)", 2.0),
                        ("delta(y)", 1.0), ("x^0", 1.0)]:
        e_ref, _ = openmm_energy_forces(expr, origin)
        e, _ = torch_energy_forces(expr, origin)
        assert e_ref[0] == value and e[0] == value, expr


def test_powers_of_negative_bases_and_gradients_at_zero():
    points = np.array([[-2.0, -0.5], [-1.3, 0.7], [0.0, 0.0], [1.1, -1.5]])
    assert_matches_openmm("x^3 + x^2 + y^4 + 3*x^1 + y^0 + x^(4/2)", points)
    # gradient of x^2 is finite (zero) at x = 0
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(parse_expression("x^2 + x^0")(x=x, y=x.detach()).sum(), x)
    assert torch.equal(g, torch.zeros(3, dtype=torch.float64))


def test_definition_order_and_lepton_conveniences_match_openmm():
    points = random_points(5, (-1, -1), (1, 1), seed=5)
    # a definition may use definitions that come later in the string
    assert_matches_openmm("a*b; a = b+1; b = y", points)
    assert_matches_openmm("a; a = c*x; b = 1; c = 2", points)
    # unused definitions, trailing/empty segments, whitespace incl. newlines
    assert_matches_openmm("x ; a = 1;; ", points)
    assert_matches_openmm("x\n+\t2*y; \nz0 = 3", points)


# --------------------------------------------------------------------------- errors

# (text, a fragment of the message, the offending token that must be named)
ERROR_CASES = [
    ("__import__('os')", "unknown function '__import__' at character 1", "__import__"),
    ("x.__class__", "unexpected character '.' at character 2", "'.'"),
    ("x**2", "unexpected '*' at character 3", "**"),
    ("exp(x,y)", "function 'exp' takes 1 argument, got 2", "exp"),
    ("min(x)", "function 'min' takes 2 arguments, got 1", "min"),
    ("exp()", "function 'exp' takes 1 argument, got 0", "exp"),
    ("foo(x)", "unknown function 'foo' at character 1 (allowed: abs, ", "foo"),
    ("1 + foo(x)", "unknown function 'foo' at character 5", "foo"),
    ("z+1", "unknown variable 'z' at character 1 (allowed: x, y)", "'z'"),
    ("X", "unknown variable 'X' at character 1", "'X'"),
    ("a+q; a = 1", "unknown variable 'q' at character 3 (allowed: x, y; defined: a)", "'q'"),
    ("(x+1", "unbalanced parentheses: '(' at character 1 is never closed", "'('"),
    ("exp(x; y)", "unbalanced parentheses: '(' at character 4", "'('"),
    ("x)", "unbalanced parentheses: ')' at character 2", "')'"),
    ("x+)", "unexpected ')' at character 3", "')'"),
    ("min(x,)", "unexpected ')' at character 7", "')'"),
    ("", "empty expression", ""),
    ("  \n ", "empty expression", ""),
    ("; a = 1", "empty expression before ';' at character 1", "';'"),
    ("x+", "expression ends unexpectedly after '+' at character 2", "'+'"),
    ("x^; a = 1", "missing operand after '^' at character 2", "'^'"),
    ("1e", "number '1e' at character 1 is malformed", "'1e'"),
    ("x + .e2", "unexpected character '.' at character 5", "'.'"),
    ("1e2.5", "number '1e2.5' at character 1 is malformed", "'1e2.5'"),
    ("1..2", "number '1..2' at character 1 is malformed", "'1..2'"),
    ("1e999", "number '1e999' at character 1 is too large", "'1e999'"),
    ("2x", "unexpected 'x' at character 2", "'x'"),
    ("x y", "unexpected 'y' at character 3", "'y'"),
    ("+x", "unexpected '+' at character 1 (unary plus", "'+'"),
    ("x^+2", "unexpected '+' at character 3", "'+'"),
    ("exp (x)", "function 'exp' at character 1 must be followed directly by '('", "exp"),
    ("x=1", "unexpected '=' at character 2", "'='"),
    ("x $ y", "unexpected character '$' at character 3", "'$'"),
    ("x + é", "unexpected character 'é' at character 5", "'é'"),
    ("x + ²", "unexpected character '²' at character 5", "'²'"),
    ("a; a = a+1", "definition 'a' refers to itself at character 8 (cycle)", "'a'"),
    ("a; a = b; b = a", "cyclic definitions a -> b -> a", "a -> b"),
    ("a; b = x; a = b", "definition 'a' uses 'b' at character 15, which is defined before it", "'b'"),
    ("a; a = 1; a = 2", "definition 'a' at character 11 repeats the one at character 4", "'a'"),
    ("y; y = 1", "definition name 'y' at character 4 is one of the variables", "'y'"),
    ("e; exp = 1", "definition name 'exp' at character 4 is a function name", "'exp'"),
    ("x; 1 = x", "expected a definition name at character 4, got '1'", "'1'"),
    ("a; a b = 1", "expected '=' after definition name 'a' at character 6, got 'b'", "'b'"),
    ("a; a =", "empty definition of 'a' after '=' at character 6", "'a'"),
    ("(" * 150 + "x" + ")" * 150, "nested too deeply at character 101", "101"),
    ("+".join(["x"] * 300), "too deeply nested", "200"),
]


@pytest.mark.parametrize("text,fragment,token", ERROR_CASES, ids=[repr(c[0])[:30] for c in ERROR_CASES])
def test_errors_are_one_line_and_name_the_problem(text, fragment, token):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    assert fragment in message
    assert token in message
    assert isinstance(info.value, ValueError)


# Inputs Lepton itself rejects, checked so that the error tests do not rest
# only on our reading of Lepton ("q+1", not "z+1": z is a variable of
# CustomExternalForce).  What Lepton wrongly accepts, like "1e", is listed in
# the module docstring instead.
@pytest.mark.parametrize(
    "text",
    ["+x", "x**2", "exp (x)", "exp(x,y)", "foo(x)", "q+1", "(x+1", "x+)", "", "2x",
     "a; a = a+1", "a; b = x; a = b"],
)
def test_openmm_rejects_what_we_say_lepton_rejects(text):
    with pytest.raises(ExpressionError):
        parse_expression(text)
    with pytest.raises(openmm.OpenMMException):
        _context(text)


def test_bad_variable_names_are_rejected():
    for variables in [("x", "x"), ("exp",), ("1x",), ("x.y",)]:
        with pytest.raises(ExpressionError):
            parse_expression("1", variables)


# --------------------------------------------------------------------------- API


def test_call_requires_exactly_the_allowed_variables():
    expr = parse_expression("x^2")
    t = torch.ones(3)
    with pytest.raises(ExpressionError, match="missing value for 'y'"):
        expr(x=t)
    with pytest.raises(ExpressionError, match="unexpected 'z'"):
        expr(x=t, y=t, z=t)


def test_dtype_broadcasting_and_inputs():
    expr = parse_expression("0.5*x^2 + 1")
    x = torch.linspace(-1, 1, 3, dtype=torch.float32)
    out = expr(x=x, y=torch.zeros(4, 1, dtype=torch.float32))
    assert out.dtype == torch.float32 and out.shape == (4, 3)  # y broadcasts although unused
    torch.testing.assert_close(out[2], 0.5 * x**2 + 1)
    assert parse_expression("3")(x=torch.zeros(2), y=torch.zeros(2)).shape == (2,)
    # Python floats and numpy arrays are accepted too
    assert float(expr(x=2.0, y=0.0)) == 3.0
    np.testing.assert_allclose(expr(x=np.array([0.0, 2.0]), y=np.zeros(2)).numpy(), [1.0, 3.0])


def test_custom_variables_used_variables_and_value_semantics():
    expr = parse_expression("2*r*s1; s1 = r + 1; unused = t", ("r", "t"))
    assert expr.source == "2*r*s1; s1 = r + 1; unused = t"
    assert expr.variables == ("r", "t")
    assert expr.used_variables() == frozenset({"r"})
    assert float(expr(r=torch.tensor(2.0), t=torch.tensor(5.0))) == 12.0
    assert parse_expression("x + 0*y").used_variables() == frozenset({"x", "y"})
    assert parse_expression("1").used_variables() == frozenset()

    same = Expression("2*r*s1; s1 = r + 1; unused = t", ["r", "t"])
    assert same == expr and hash(same) == hash(expr)
    assert parse_expression("x") != parse_expression("x ")
    clone = pickle.loads(pickle.dumps(expr))
    assert clone == expr and float(clone(r=2.0, t=0.0)) == 12.0
    with pytest.raises(ExpressionError):
        Expression("z")  # the constructor validates too
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.source = "x"  # frozen


def test_deep_but_reasonable_expressions_work():
    expr = parse_expression("sin(" * 90 + "x+1" + ")" * 90)
    value = expr(x=torch.tensor(0.0, dtype=torch.float64), y=torch.tensor(0.0))
    expected = 1.0
    for _ in range(90):
        expected = math.sin(expected)
    assert float(value) == pytest.approx(expected, rel=1e-12)
