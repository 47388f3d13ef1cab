#!/usr/bin/env bash
# CI: run the CI-sized workflow (config/test.yaml, with .ci/slurm/estimators.yaml) for one system, the
# double well, through one rule of each kind (MD, MBAR, flow, score model, a probability-flow sampler, SMC,
# MCMC, reweighting, summary, figures), on a real one-node SLURM cluster on this host, with the
# user-facing profile profiles/slurm, in a scratch copy of the workflow (every system and estimator runs
# end to end in tests/test_workflow.py; through sbatch they would add minutes of queueing):
#   .ci/slurm/run_pipeline.sh
# Starts the cluster (start.sh), always stops it again (stop.sh), and exits with Snakemake's status.
# Environment: BOLTZFLOW_SLURM_TIMEOUT (seconds for the Snakemake run, default 1500),
# BOLTZFLOW_SLURM_JOBS (parallel SLURM jobs, default 2), PYTHON (default: the repository's .venv),
# BOLTZFLOW_SLURM_KEEP=1 keeps the scratch directory (it is kept anyway when the run fails).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
timeout_s=${BOLTZFLOW_SLURM_TIMEOUT:-1500}
jobs=${BOLTZFLOW_SLURM_JOBS:-2}
work=""
status=1

# shellcheck disable=SC2317  # (called by the EXIT trap)
cleanup() {
  echo "==== SLURM queue and node at the end"
  timeout 10 squeue 2>&1 || true
  timeout 10 sinfo 2>&1 || true
  bash "$here/stop.sh"
  if [ -n "$work" ] && [ -d "$work" ]; then
    if [ "$status" -eq 0 ] && [ "${BOLTZFLOW_SLURM_KEEP:-0}" != 1 ]; then
      rm -rf "$work"
    else
      echo "slurm: scratch workflow kept in $work"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_start=$(date +%s)
echo "==== starting the SLURM cluster"
bash "$here/start.sh" </dev/null || { echo "slurm: the cluster did not start" >&2; exit 1; }

work=$(mktemp -d /tmp/boltzflow-slurm-run.XXXXXX)
for part in Snakefile rules workflow config envs report profiles src data; do
  cp -r "$repo/$part" "$work/"
done
find "$work" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
cd "$work" || exit 1

cp "$here/estimators.yaml" "$work/config/ci_slurm.yaml"
targets=(results/double_well/summary.nc results/double_well/figures/cost.png
         results/double_well/figures/score_training.png)
echo "==== snakemake --workflow-profile profiles/slurm ${targets[*]} --configfile config/test.yaml config/ci_slurm.yaml --jobs $jobs (in $work)"
run_start=$(date +%s)
# The targets go before --configfile, which takes every word after it as a config file.
timeout -s INT -k 60 "$timeout_s" "$python" -m snakemake --workflow-profile profiles/slurm "${targets[@]}" \
  --configfile config/test.yaml config/ci_slurm.yaml --jobs "$jobs" </dev/null 2>&1
status=$?
run_end=$(date +%s)
if [ "$status" -eq 124 ]; then
  echo "slurm: snakemake did not finish within ${timeout_s} s" >&2
fi

if [ "$status" -ne 0 ]; then
  # The SLURM logs of failed jobs (the plugin deletes those of successful ones).
  find .snakemake/slurm_logs -name '*.log' -type f 2>/dev/null | sort | while read -r f; do
    echo "---- $f"
    tail -n 40 "$f"
  done
else
  for table in results/*/summary.csv; do
    [ -f "$table" ] && { echo "---- $table"; cat "$table"; }
  done
fi
echo "slurm: snakemake exit status $status; snakemake through SLURM took $((run_end - run_start)) s," \
  "cluster part (start + run) $((run_end - cluster_start)) s"
exit "$status"
