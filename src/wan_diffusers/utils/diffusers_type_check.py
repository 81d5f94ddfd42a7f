"""Our models stand in for diffusers' Wan classes in diffusers' own pipelines, without a type warning.

`diffusers.DiffusionPipeline.from_pretrained(repo)` builds diffusers' pipeline class, whose `__init__` annotations
name diffusers' model classes, and logs "Expected types for transformer: (<class 'diffusers...WanTransformer3DModel'>,),
got <class 'wan_diffusers...WanTransformer3DModel'>." for every component that is ours (`DiffusionPipeline.from_pretrained`,
step "Type checking init arguments", in `diffusers/pipelines/pipeline_utils.py`). Ours do not subclass diffusers'
(that is the point of this package) but take the same config, weights and call, so the warning says nothing true.
diffusers has no way to declare a compatible class, so a logging filter drops exactly those records: the same class
name on both sides, ours from `wan_diffusers`. Every other type warning passes through.
"""

import logging
import re

# diffusers.utils.logging.get_logger(__name__) in diffusers/pipelines/pipeline_utils.py.
PIPELINE_LOADING_LOGGER = "diffusers.pipelines.pipeline_utils"

_OUR_CLASS_IN_PLACE_OF_DIFFUSERS = re.compile(
    r"^Expected types for \w+: \(.*<class 'diffusers\.[\w.]+\.(?P<expected>\w+)'>.*\), "
    r"got <class 'wan_diffusers\.[\w.]+\.(?P<got>\w+)'>\.$"
)


class _OurClassesAreExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        match = _OUR_CLASS_IN_PLACE_OF_DIFFUSERS.match(record.getMessage())
        return match is None or match["expected"] != match["got"]


def accept_our_classes_in_diffusers_pipelines() -> None:
    """Silence diffusers' type warning for our models in its pipelines (idempotent: one filter at most)."""
    logger = logging.getLogger(PIPELINE_LOADING_LOGGER)
    if not any(isinstance(existing, _OurClassesAreExpected) for existing in logger.filters):
        logger.addFilter(_OurClassesAreExpected())
