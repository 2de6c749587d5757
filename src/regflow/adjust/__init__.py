"""Adjustment rules: YAML files submitted through pull requests, validated against the plan,
spliced in after (or before) any node, applied per cob, and audited row by row."""
