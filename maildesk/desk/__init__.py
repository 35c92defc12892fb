"""The incident rules: life cycle, SLA, escalation, routing, triage, resolution, survey, jobs,
the knowledge base.
"""
