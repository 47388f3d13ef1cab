"""One module per kind of workflow stage, one public function per rule: arrays and settings in, labelled
xarray Datasets out.

The Snakemake scripts are thin adapters around these functions (read inputs, call, write outputs), so each
stage can also be run and tested without Snakemake. Stages talk to a system only through the
:class:`boltzflow.systems.Target` protocol and receive typed settings (:mod:`boltzflow.settings`).
Variable names and units are the output contract documented in the README.

- :mod:`~boltzflow.stages.md`: Langevin MD of a toy at one temperature; replica exchange of a molecule, or
  the MD trajectories a user already has
- :mod:`~boltzflow.stages.mbar`: the MBAR reference over the temperature ladder
- :mod:`~boltzflow.stages.flow`: flow training, saving, loading and sampling
- :mod:`~boltzflow.stages.score`: score-model training and probability-flow sampling
- :mod:`~boltzflow.stages.samplers`: SMC and flow-proposal MCMC for any model
- :mod:`~boltzflow.stages.reweight`: importance-reweighted estimates with bootstrap errors
- :mod:`~boltzflow.stages.trajectories`: a molecule's model samples as frames of AMBER trajectories
- :mod:`~boltzflow.stages.summary`: every estimator against the reference
- :mod:`~boltzflow.stages.datasets`: the shared dataset contract (variables, grids, sample files)
"""
