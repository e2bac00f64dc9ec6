"""Catalogues of buggy solutions (mutants), one module per assignment.

A mutant is the solution notebook with a few exact text replacements: the
mistakes students make. Each names the hidden tests that must catch it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # the mistake, as a student would make it
    replace: tuple  # ((old, new), ...): each `old` occurs exactly once in the solution cells
    caught_by: tuple  # hidden tests that must fail for this mutant
