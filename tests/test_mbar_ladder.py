"""The MBAR stage pairs each MD file with its ladder temperature only if the file records that temperature."""

import numpy as np
import pytest
import xarray as xr

from boltzflow.stages.mbar import MDFileError, check_ladder
from boltzflow.systems import State, Toy2DSystem

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
