"""The pytest side: targets and machine pools as fixtures, kernel splats and known
defects as evidence, in-guest suites as tests, and the report (summary, KTAP)."""
