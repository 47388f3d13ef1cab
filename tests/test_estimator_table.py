"""The estimator table agrees with the schema's switches and with the workflow's jobs."""

import re

from boltzflow.config import load_schema
from boltzflow.estimator_table import ESTIMATORS, REFERENCE, label
from workflow_helpers import ROOT


def test_every_estimator_has_a_schema_switch_and_nothing_else_does():
    switches = load_schema(ROOT / "config/schema.yaml")["$defs"]["estimators"]["properties"]
    assert list(switches) == [estimator.name for estimator in ESTIMATORS]


def test_every_job_of_an_estimator_is_a_benchmark_the_workflow_writes():
    benchmarks = set()
    for path in (ROOT / "rules").glob("*.smk"):
        benchmarks |= set(re.findall(r'"results/\{system\}/benchmarks/([^"]+)\.tsv"', path.read_text()))
    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(b)) + "$") for b in benchmarks]
    for estimator in ESTIMATORS:
        for job in estimator.jobs:
            assert any(p.match(job) for p in patterns), (estimator.name, job)


def test_labels_are_distinct_and_raw_companions_say_unweighted():
    labels = [label(name) for name in [REFERENCE.name, *(estimator.name for estimator in ESTIMATORS)]]
    assert len(set(labels)) == len(labels)
    assert label("flow_raw") == "flow, unweighted" and label("score_exact_raw") == "score, unweighted"
    assert label(REFERENCE.name) == "MD (MBAR)"
