"""Physical constants and unit conversions (no dependencies, so every stage's environment can use them)."""

#: Molar gas constant in kJ/(mol K) (CODATA 2018, the value OpenMM uses).
MOLAR_GAS_CONSTANT_KJ_MOL_K = 8.314462618e-3


def kt_kj_mol(temperature_k):
    """Thermal energy kT in kJ/mol at a temperature in K (a float or a numpy array)."""
    return MOLAR_GAS_CONSTANT_KJ_MOL_K * temperature_k
