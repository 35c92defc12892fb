"""The operator's face: the CLI, its tables and JSON, the KPI report.
"""
