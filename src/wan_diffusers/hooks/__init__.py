"""Hooks that diffusers lacks, one per file (a NAME constant, the hook class and an apply_* function)."""
