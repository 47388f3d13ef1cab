"""The MBAR stage pairs each MD file with its ladder temperature only if the file records that temperature."""

import numpy as np
import pytest
import xarray as xr
from scipy.special import erf

from boltzflow.stages.mbar import MDFileError, check_ladder, mbar_stage
from boltzflow.systems import State, Toy2DSystem, kt_kj_mol

LADDER = (300.0, 348.0, 404.0)
NAMES = [f"results/t/md/{t:g}K.nc" for t in LADDER]


def _system():
    everywhere = State("all", ({"x": (-np.inf, np.inf), "y": (-np.inf, np.inf)},))
    return Toy2DSystem("t", "x^2 + y^2", LADDER, (everywhere,))


def _files(temperatures):
    return [xr.Dataset(attrs={} if t is None else {"temperature_k": t}) for t in temperatures]


def test_files_in_ladder_order_pass():
    check_ladder(_system(), _files(LADDER), NAMES)


@pytest.mark.parametrize("temperatures, message", [
    ((300.0, 404.0, 348.0), "results/t/md/348K.nc: MD at 404 K given for the ladder temperature 348 K"),
    ((300.0, 348.0, 405.0), "results/t/md/404K.nc: MD at 405 K given for the ladder temperature 404 K"),
    ((300.0, None, 404.0), "results/t/md/348K.nc: no temperature_k attribute; expected an MD file at 348 K"),
    ((300.0, 348.0), "MBAR of t: 2 MD files for a ladder of 3 temperatures (300, 348, 404 K)"),
])
def test_a_file_of_another_temperature_is_one_line_naming_it(temperatures, message):
    with pytest.raises(MDFileError) as error:
        check_ladder(_system(), _files(temperatures), NAMES)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_mbar_share_in_no_state_is_at_the_target_temperature():
    spring, gap = 200.0, 0.05
    temperatures = (300.0, 900.0)
    states = (State("left", ({"x": (-np.inf, 0.0), "y": (-np.inf, np.inf)},)),
              State("right", ({"x": (gap, np.inf), "y": (-np.inf, np.inf)},)))
    system = Toy2DSystem("h", f"0.5*{spring}*(x^2 + y^2)", temperatures, states, bounds={"x": (-1, 1), "y": (-1, 1)})
    rng = np.random.default_rng(3)
    md = []
    for t in temperatures:
        xy = rng.normal(scale=np.sqrt(kt_kj_mol(t) / spring), size=(4000, 2))
        md.append(xr.Dataset({"positions": (("sample", "cv"), xy), "energy": ("sample", 0.5 * spring * (xy ** 2).sum(1))},
                             attrs={"temperature_k": t}))
    _, observables = mbar_stage(system, md, bins=20, log=lambda _: None)
    expected = 0.5 * erf(gap / (np.sqrt(kt_kj_mol(300.0) / spring) * np.sqrt(2)))  # 0.173; 900 K: 0.10
    assert abs(float(observables["fraction_in_no_state"]) - expected) < 0.02
