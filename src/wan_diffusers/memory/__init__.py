"""Memory: an estimate of what a call needs (`model.py`), a planner that fits a pipeline into a budget
(`planner.py`, `pipe.enable_vram_budget("8GB")`), and the guard that refuses calls that cannot fit (`guard.py`).

`python -m wan_diffusers.memory` prints the estimated peaks of the released models at common budgets.
"""
