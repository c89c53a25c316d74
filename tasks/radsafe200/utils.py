"""Thin re-export for the task YAMLs: all logic lives in the lm_eval_radsafe package."""

from lm_eval_radsafe.aggregation import (  # noqa: F401
    expected_calibration_error,
    maximum_calibration_error,
    mean_where,
    position_bias,
)
from lm_eval_radsafe.filters import StrictLetterFilter  # noqa: F401  (registers radsafe_strict_letter)
from lm_eval_radsafe.harness import (  # noqa: F401
    doc_to_choice,
    doc_to_target_index,
    doc_to_text,
    load_demo,
    load_radsafe200,
    process_results,
    process_results_ll,
    process_results_perm,
    process_results_sc,
)
from lm_eval_radsafe.task import RadSafeChoiceTask, RadSafePermTask, RadSafeTask  # noqa: F401
