"""What a run leaves behind and what reads it: the verdict record (verdicts), the run
directories (runs) and the comparison of two runs (compare)."""
