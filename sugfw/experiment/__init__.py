"""The paper's benchmark (Table 1 / Fig. 2): data sets of labelled volumes, named configurations,
the resumable strategy × budget × seed runner, and the report."""

from sugfw.experiment.configs import CONFIGS, FULL_SUPERVISION, RANDOM_STRATEGY, BenchConfig
from sugfw.experiment.dataset import (
    Case,
    CaseFiles,
    CaseSplit,
    PreparedCase,
    find_case_files,
    foreground_slices,
    load_case,
    load_msd_dataset,
    prepare_case,
    split_cases,
)
from sugfw.experiment.report import load_results, markdown_table, plot_dsc, write_report
from sugfw.experiment.runner import (
    Cell,
    RecordScorer,
    default_scorer_factory,
    plan_cells,
    run_bench,
)

__all__ = [
    "CONFIGS",
    "FULL_SUPERVISION",
    "RANDOM_STRATEGY",
    "BenchConfig",
    "Case",
    "CaseFiles",
    "CaseSplit",
    "Cell",
    "PreparedCase",
    "RecordScorer",
    "default_scorer_factory",
    "find_case_files",
    "foreground_slices",
    "load_case",
    "load_msd_dataset",
    "load_results",
    "markdown_table",
    "plan_cells",
    "plot_dsc",
    "prepare_case",
    "run_bench",
    "split_cases",
    "write_report",
]
