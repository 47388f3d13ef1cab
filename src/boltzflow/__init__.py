"""boltzflow: unbiased Boltzmann sampling with generative models, checked against MD.

Conventions used throughout the package:
- lengths in nm, energies in kJ/mol, temperatures in K;
- reduced quantities (u = E / kT, free energies f = -ln Z) are dimensionless, in units of kT
  at the temperature they refer to.
"""

__version__ = "0.1.0"
